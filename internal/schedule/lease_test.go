package schedule

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// fakeClock is a settable clock for deadline arithmetic.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLeaseOneHolderAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, rdb := testenv.Redis(t)
	a := NewLease(rdb, "a", 10*time.Second, testenv.Logger(t))
	b := NewLease(rdb, "b", 10*time.Second, testenv.Logger(t))

	if ok, _, err := a.Attempt(ctx); !ok || err != nil {
		t.Fatalf("a: leader = %v, err = %v", ok, err)
	}
	ok, wait, err := b.Attempt(ctx)
	if ok || err != nil {
		t.Fatalf("b: leader = %v, err = %v; want a standby", ok, err)
	}
	if wait <= 0 || wait > 10*time.Second/3 {
		t.Errorf("standby wait = %s", wait)
	}
	// Renewal keeps a's term; b still waits.
	term, _ := a.Leading()
	if ok, _, _ := a.Attempt(ctx); !ok {
		t.Fatal("a lost the lease on renewal")
	}
	if t2, _ := a.Leading(); t2 != term {
		t.Errorf("renewal changed the term %d → %d", term, t2)
	}
	info, err := CurrentLeader(ctx, rdb)
	if err != nil || info.ID != a.ID() || info.ExpiresAt == nil {
		t.Fatalf("CurrentLeader = %+v, %v", info, err)
	}

	// Release hands over at once, and only the holder can release.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := CurrentLeader(ctx, rdb); info.ID != a.ID() {
		t.Fatalf("b's release removed a's lease: %+v", info)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if a.IsLeader() {
		t.Error("a still leader after release")
	}
	if ok, _, _ := b.Attempt(ctx); !ok {
		t.Fatal("b could not take the released lease")
	}
}

// A leader that cannot renew stops firing before its lease can have
// expired in Redis.
func TestLeaseStopsBeforeItCanExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, rdb := testenv.Redis(t)
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	own := redis.NewClient(opt) // the leader's own connection, cut below
	ttl := 30 * time.Second
	l := NewLease(own, "a", ttl, testenv.Logger(t))
	l.now = clock.Now
	if ok, _, err := l.Attempt(ctx); !ok || err != nil {
		t.Fatalf("leader = %v, err = %v", ok, err)
	}
	own.Close() // a partition: every renewal fails from now on

	clock.Add(ttl / 2)
	if _, _, err := l.Attempt(ctx); err == nil {
		t.Fatal("renewal on a closed connection succeeded")
	}
	if !l.IsLeader() {
		t.Fatal("one failed renewal should not end the lease before its deadline")
	}
	clock.Add(ttl/2 - ttl/5) // the local deadline: TTL minus the safety margin
	if l.IsLeader() {
		t.Fatal("still leader at the local deadline")
	}
	// The key itself is still there (its TTL runs in Redis, from the real
	// acquisition): we stopped first.
	if pttl := rdb.PTTL(ctx, LeaderKey).Val(); pttl <= 0 {
		t.Fatalf("lease key PTTL = %s, want it still alive", pttl)
	}
}

// A lease taken over by another replica ends the old holder's term; when
// it leads again, the term is new.
func TestLeaseTermChangesOnReacquire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, rdb := testenv.Redis(t)
	a := NewLease(rdb, "a", 5*time.Second, testenv.Logger(t))
	if ok, _, _ := a.Attempt(ctx); !ok {
		t.Fatal("no lease")
	}
	t1, _ := a.Leading()
	rdb.Set(ctx, LeaderKey, "someone-else", 5*time.Second)
	if ok, _, _ := a.Attempt(ctx); ok {
		t.Fatal("a renewed a lease that is someone else's")
	}
	select {
	case <-a.Changed():
	default:
		t.Error("no change notification on loss")
	}
	rdb.Del(ctx, LeaderKey)
	if ok, _, _ := a.Attempt(ctx); !ok {
		t.Fatal("a could not reacquire")
	}
	if t2, _ := a.Leading(); t2 == t1 {
		t.Errorf("term %d unchanged after losing and regaining the lease", t2)
	}
}
