package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LeaderKey is the Redis key of the leader lease. Its value is the holder's
// identity; its TTL is the lease's remaining time.
const LeaderKey = "conveyor:scheduler:leader"

// acquireScript takes the lease if it is free or renews it if it is ours
// (compare-and-extend) in one round trip. It returns {1, ttl} when we hold
// the lease afterwards, {0, pttl} with the current holder's remaining
// milliseconds otherwise.
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(ARGV[2])}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
`)

// releaseScript deletes the lease only if it is ours (compare-and-delete).
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Lease is the scheduler's leader lease: a Redis key set with SET NX PX to a
// token that names this replica, renewed at a third of its TTL and released
// on shutdown. Only the holder fires.
//
// IsLeader trusts the lease only until a local deadline: the time just
// before the last successful acquire or renew call was sent, plus the TTL,
// minus a safety margin. A replica cut off from Redis therefore stops
// firing before its key can have expired and another replica taken over.
// (The per-tick task ID makes even an overlap harmless; the deadline keeps
// it from happening in the first place.)
type Lease struct {
	rdb    redis.UniversalClient
	id     string
	ttl    time.Duration
	margin time.Duration
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	held     bool
	deadline time.Time
	term     uint64 // counts acquisitions: a new term means others may have fired
	changed  chan struct{}
}

// NewLease returns a lease for the replica named name (SCHEDULER_ID; the
// lease token appends random hex so two replicas given the same name still
// differ). ttl is SCHEDULER_LEASE_TTL.
func NewLease(rdb redis.UniversalClient, name string, ttl time.Duration, log *slog.Logger) *Lease {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Lease{
		rdb: rdb, id: name + "/" + hex.EncodeToString(b[:]), ttl: ttl, margin: ttl / 5, log: log,
		now: time.Now, changed: make(chan struct{}, 1),
	}
}

// ID is the token this replica stores in the lease key.
func (l *Lease) ID() string { return l.id }

// TTL is the lease's time to live.
func (l *Lease) TTL() time.Duration { return l.ttl }

// IsLeader reports whether this replica holds the lease and may fire.
func (l *Lease) IsLeader() bool {
	_, ok := l.Leading()
	return ok
}

// Leading implements Leader: whether this replica may fire now, and the
// term of its leadership, which changes whenever leadership is regained
// (between two terms another replica may have fired).
func (l *Lease) Leading() (term uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.held && l.now().Before(l.deadline)
}

// Changed receives a value when leadership may have changed.
func (l *Lease) Changed() <-chan struct{} { return l.changed }

func (l *Lease) notify() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Attempt acquires or renews the lease once and reports whether this
// replica holds it afterwards, and how long to wait before the next
// attempt. A Redis error leaves a held lease valid until its local deadline.
func (l *Lease) Attempt(ctx context.Context) (leader bool, wait time.Duration, err error) {
	start := l.now()
	res, err := acquireScript.Run(ctx, l.rdb, []string{LeaderKey}, l.id, l.ttl.Milliseconds()).Int64Slice()
	l.mu.Lock()
	was := l.held && start.Before(l.deadline)
	switch {
	case err != nil:
		err = fmt.Errorf("scheduler lease: %w", err)
		// Keep what we had until the deadline; retry soon.
		wait = max(l.ttl/10, 10*time.Millisecond)
	case len(res) == 2 && res[0] == 1:
		l.held, l.deadline = true, start.Add(l.ttl-l.margin)
		wait = l.ttl / 3
	default:
		l.held = false
		// Try again right after the holder's lease would expire, so a crashed
		// leader is replaced within its TTL.
		wait = l.ttl / 3
		if len(res) == 2 && res[1] > 0 {
			wait = min(wait, time.Duration(res[1])*time.Millisecond+20*time.Millisecond)
		}
	}
	now := l.held && l.now().Before(l.deadline)
	if now && !was {
		l.term++
	}
	l.mu.Unlock()
	if now != was {
		if now {
			l.log.Info("scheduler lease acquired: this replica is the leader", "scheduler_id", l.id, "lease_ttl", l.ttl)
		} else {
			l.log.Warn("scheduler lease lost: this replica stops firing", "scheduler_id", l.id, "err", err)
		}
		l.notify()
	}
	return now, wait, err
}

// Run keeps acquiring and renewing the lease until ctx ends. It does not
// release the lease: call Release once nothing fires any more.
func (l *Lease) Run(ctx context.Context) {
	for {
		_, wait, err := l.Attempt(ctx)
		if err != nil && ctx.Err() == nil {
			l.log.Error("scheduler lease renewal failed", "scheduler_id", l.id, "err", err)
		}
		// Wake at the local deadline too, so that a lapse is reported.
		l.mu.Lock()
		if l.held {
			if d := l.deadline.Sub(l.now()); d > 0 && d < wait {
				wait = d
			}
		}
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Release gives the lease up if this replica holds it, so that another
// replica takes over at once rather than after the TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.held = false
	l.mu.Unlock()
	l.notify()
	n, err := releaseScript.Run(ctx, l.rdb, []string{LeaderKey}, l.id).Int64()
	if err != nil {
		return fmt.Errorf("release scheduler lease: %w", err)
	}
	if n == 1 {
		l.log.Info("scheduler lease released", "scheduler_id", l.id)
	}
	return nil
}

// LeaderInfo is who holds the lease, as the API shows it.
type LeaderInfo struct {
	ID        string     `json:"leader"`           // empty: no leader right now
	ExpiresAt *time.Time `json:"lease_expires_at"` // nil when there is no leader
}

// CurrentLeader reads the lease key.
func CurrentLeader(ctx context.Context, rdb redis.UniversalClient) (LeaderInfo, error) {
	pipe := rdb.Pipeline()
	get := pipe.Get(ctx, LeaderKey)
	pttl := pipe.PTTL(ctx, LeaderKey)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return LeaderInfo{}, fmt.Errorf("read scheduler lease: %w", err)
	}
	id, err := get.Result()
	if errors.Is(err, redis.Nil) {
		return LeaderInfo{}, nil
	}
	if err != nil {
		return LeaderInfo{}, fmt.Errorf("read scheduler lease: %w", err)
	}
	info := LeaderInfo{ID: id}
	if d := pttl.Val(); d > 0 {
		t := time.Now().Add(d).UTC().Truncate(time.Millisecond)
		info.ExpiresAt = &t
	}
	return info, nil
}

// Always is a Leader for a single scheduler without a lease (tests, tools).
type Always struct{}

// Leading implements Leader.
func (Always) Leading() (uint64, bool) { return 1, true }

// Changed implements Leader.
func (Always) Changed() <-chan struct{} { return nil }
