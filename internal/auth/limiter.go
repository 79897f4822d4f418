package auth

import (
	"sync"
	"time"
)

// Limiter counts login failures per key (email + client IP) in a fixed
// window. It lives in one process: with several api replicas each allows
// Max failures, so the effective limit is Max × replicas.
type Limiter struct {
	Max    int
	Window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*limitEntry
	sweepAt time.Time
}

type limitEntry struct {
	failures int
	reset    time.Time
}

// NewLimiter allows max failures per key within window.
func NewLimiter(max int, window time.Duration) *Limiter {
	return &Limiter{Max: max, Window: window, now: time.Now, entries: map[string]*limitEntry{}}
}

// Blocked reports whether key has used up its failures, and when it may try
// again.
func (l *Limiter) Blocked(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, ok := l.entries[key]
	if !ok || !now.Before(e.reset) {
		return false, 0
	}
	if e.failures >= l.Max {
		return true, e.reset.Sub(now)
	}
	return false, 0
}

// Fail records a failed attempt by key.
func (l *Limiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	e, ok := l.entries[key]
	if !ok || !now.Before(e.reset) {
		e = &limitEntry{reset: now.Add(l.Window)}
		l.entries[key] = e
	}
	e.failures++
}

// Reset forgets key (after a successful login).
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, key)
}

// sweep drops expired entries at most once per window, so memory stays
// bounded by the keys seen in about one window.
func (l *Limiter) sweep(now time.Time) {
	if now.Before(l.sweepAt) {
		return
	}
	for k, e := range l.entries {
		if !now.Before(e.reset) {
			delete(l.entries, k)
		}
	}
	l.sweepAt = now.Add(l.Window)
}
