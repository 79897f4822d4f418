package auth

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Two api replicas share one count: the limit holds across them, even for
// guesses sent at once, and a success on either resets it.
func TestRedisLimiterIsSharedByReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, rdb := testenv.Redis(t)
	a, b := NewRedisLimiter(rdb, 5, time.Minute), NewRedisLimiter(rdb, 5, time.Minute)

	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Go(func() {
			if ok, _ := l.Attempt(ctx, "ada@example.com|10.0.0.1"); ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 5 {
		t.Fatalf("%d of 20 concurrent attempts allowed across two replicas, want 5", got)
	}
	ok, wait := b.Attempt(ctx, "ada@example.com|10.0.0.1")
	if ok || wait <= 0 || wait > time.Minute {
		t.Fatalf("sixth attempt: ok=%v retry after %v", ok, wait)
	}
	if ok, _ := a.Attempt(ctx, "ada@example.com|10.0.0.2"); !ok {
		t.Fatal("another address is limited too")
	}
	a.Reset(ctx, "ada@example.com|10.0.0.1") // a successful login on replica a
	if ok, _ := b.Attempt(ctx, "ada@example.com|10.0.0.1"); !ok {
		t.Fatal("still limited on replica b after a reset on replica a")
	}
	// Neither the email nor the address is stored in Redis.
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "ada") || strings.Contains(k, "10.0.0") {
			t.Fatalf("key %q names the email or address", k)
		}
	}
}

// The window ends: attempts are allowed again once the key expires.
func TestRedisLimiterWindowExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, rdb := testenv.Redis(t)
	l := NewRedisLimiter(rdb, 1, 300*time.Millisecond)
	if ok, _ := l.Attempt(ctx, "k"); !ok {
		t.Fatal("first attempt refused")
	}
	if ok, _ := l.Attempt(ctx, "k"); ok {
		t.Fatal("second attempt allowed")
	}
	testenv.Eventually(t, 10*time.Second, func() bool { ok, _ := l.Attempt(ctx, "k"); return ok }, "window never ended")
}

// With Redis unreachable the limiter still limits, per process, and says why.
func TestRedisLimiterFallsBackWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	l := NewRedisLimiter(rdb, 2, time.Minute)
	var errs atomic.Int32
	l.OnError = func(error) { errs.Add(1) }
	for i := range 2 {
		if ok, _ := l.Attempt(ctx, "k"); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if ok, wait := l.Attempt(ctx, "k"); ok || wait <= 0 {
		t.Fatalf("third attempt: ok=%v wait=%v, want refused by the fallback", ok, wait)
	}
	if errs.Load() == 0 {
		t.Fatal("Redis errors were not reported")
	}
}
