package auth

import (
	"context"
	"sync"
	"time"
)

// LoginLimiter limits login attempts per key (email + client address).
// Attempt counts an attempt and reports whether it may go ahead (and, when
// not, when the key may try again); Reset forgets the key after a
// successful login.
type LoginLimiter interface {
	Attempt(ctx context.Context, key string) (ok bool, retryAfter time.Duration)
	Reset(ctx context.Context, key string)
}

// Limiter counts login attempts per key (email + client IP) in a fixed
// window, in this process only: with several api replicas each allows Max
// attempts. RedisLimiter shares the count between replicas and falls back
// to a Limiter while Redis is unreachable.
type Limiter struct {
	Max    int
	Window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*limitEntry
	sweepAt time.Time
}

type limitEntry struct {
	attempts int
	reset    time.Time
}

// NewLimiter allows max attempts per key within window.
func NewLimiter(max int, window time.Duration) *Limiter {
	return &Limiter{Max: max, Window: window, now: time.Now, entries: map[string]*limitEntry{}}
}

// Attempt counts an attempt by key and reports whether it may go ahead;
// when it may not, it says when key may try again. The attempt is counted
// before the password is checked, so guesses sent at once cannot all pass
// before the first failures are recorded; Reset clears the count after a
// successful login. A refused attempt is not counted.
func (l *Limiter) Attempt(_ context.Context, key string) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	e, found := l.entries[key]
	if !found || !now.Before(e.reset) {
		e = &limitEntry{reset: now.Add(l.Window)}
		l.entries[key] = e
	}
	if e.attempts >= l.Max {
		return false, e.reset.Sub(now)
	}
	e.attempts++
	return true, 0
}

// Reset forgets key (after a successful login).
func (l *Limiter) Reset(_ context.Context, key string) {
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
