package limits

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

type bundle struct {
	rdb   *redis.Client
	store *Store
}

func setup(t *testing.T, defaults map[string]Limits) *bundle {
	t.Helper()
	_, rdb := testenv.Redis(t)
	return &bundle{rdb: rdb, store: NewStore(rdb, defaults)}
}

// enforcer is one worker's view; none sleeps for a rate wait unless asked.
func (b *bundle) enforcer(t *testing.T) *Enforcer {
	t.Helper()
	e := NewEnforcer(b.rdb, b.store, testenv.Logger(t), nil)
	e.MaxInlineWait = 0
	if err := e.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

func rate(limit int, per time.Duration, burst int, key string) *Rate {
	return &Rate{Limit: limit, Per: Duration(per), Burst: burst, Key: key}
}

// N workers together get exactly the burst, even when they ask at once;
// the rest are told to wait, each a little longer than the one before (a
// crowd comes back spread out, not all at once).
func TestRateIsGlobalAcrossWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, map[string]Limits{"a:b": {Rate: rate(50, 10*time.Second, 5, "")}})
	workers := []*Enforcer{b.enforcer(t), b.enforcer(t), b.enforcer(t)}

	var granted atomic.Int32
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			release, err := workers[i%3].Admit(ctx, "a:b", fmt.Sprint(i), []byte(`{}`))
			if th, ok := AsThrottled(err); ok {
				mu.Lock()
				waits = append(waits, th.RetryAfter)
				mu.Unlock()
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			release()
			granted.Add(1)
		})
	}
	wg.Wait()
	if got := granted.Load(); got != 5 {
		t.Fatalf("%d of 30 starts granted, want the burst of 5", got)
	}
	seen := map[time.Duration]bool{}
	for _, w := range waits {
		if w <= 0 || w > MaxThrottleWait {
			t.Fatalf("throttled with RetryAfter %v", w)
		}
		seen[w.Round(100*time.Millisecond)] = true
	}
	if len(seen) < 20 {
		t.Fatalf("25 throttled tasks share only %d distinct wake-ups (%v): they would come back as a crowd", len(seen), waits)
	}
}

// A per-key limit throttles one key and leaves the others alone.
func TestRatePerKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, map[string]Limits{"a:b": {Rate: rate(2, time.Hour, 2, "user_id")}})
	e := b.enforcer(t)
	admit := func(payload string) error {
		release, err := e.Admit(ctx, "a:b", "t", []byte(payload))
		if err == nil {
			release()
		}
		return err
	}
	for i := range 2 {
		if err := admit(`{"user_id": 1}`); err != nil {
			t.Fatalf("start %d of user 1: %v", i, err)
		}
	}
	if err := admit(`{"user_id":1,"other":"x"}`); !isThrottled(err) {
		t.Fatalf("third start of user 1: %v, want throttled", err)
	}
	for i := range 2 {
		if err := admit(`{"user_id": 2}`); err != nil {
			t.Fatalf("user 2, start %d: %v", i, err)
		}
	}
	// The key value is hashed: no payload data in Redis keys.
	keys, _ := b.rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if len(k) > 80 {
			t.Fatalf("key %q is long", k)
		}
	}
}

// A wait shorter than MaxInlineWait is reserved and slept, not throttled.
func TestShortRateWaitIsSleptNotThrottled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, map[string]Limits{"a:b": {Rate: rate(20, time.Second, 1, "")}})
	e := b.enforcer(t)
	e.MaxInlineWait = time.Second
	for i := range 3 {
		release, err := e.Admit(ctx, "a:b", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatalf("start %d: %v (a 50 ms wait should be slept)", i, err)
		}
		release()
	}
}

func isThrottled(err error) bool { _, ok := AsThrottled(err); return ok }

// At most max hold a slot across workers; a release frees one; the same
// task asking again (a recovered attempt) keeps its own slot.
func TestConcurrencySlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, map[string]Limits{"a:b": {Concurrency: &Concurrency{Max: 2}}})
	w1, w2 := b.enforcer(t), b.enforcer(t)
	r1, err := w1.Admit(ctx, "a:b", "t1", nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := w2.Admit(ctx, "a:b", "t2", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w1.Admit(ctx, "a:b", "t3", nil)
	th, ok := AsThrottled(err)
	if !ok || th.Kind != KindConcurrency || th.RetryAfter < time.Second {
		t.Fatalf("third task: %v, want throttled by concurrency for a second or more", err)
	}
	again, err := w2.Admit(ctx, "a:b", "t2", nil)
	if err != nil {
		t.Fatalf("t2 asking again: %v", err)
	}
	_ = again
	r1()
	r3, err := w1.Admit(ctx, "a:b", "t3", nil)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()
	if n, _ := b.rdb.ZCard(ctx, slotKey("a:b", "", nil)).Result(); n != 0 {
		t.Fatalf("%d slots held after every release", n)
	}
}

// A worker that dies holding a slot (nothing refreshes its lease) blocks
// the key only until the lease ends; a live holder's lease is refreshed.
func TestDeadWorkersSlotExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, map[string]Limits{"a:b": {Concurrency: &Concurrency{Max: 1, Key: "order_id"}}})
	live := b.enforcer(t)
	live.LeaseTTL = 600 * time.Millisecond
	release, err := live.Admit(ctx, "a:b", "alive", []byte(`{"order_id":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// The dead worker: a lease taken the way Admit does, never refreshed.
	slot := slotKey("a:b", "order_id", []byte(`{"order_id":2}`))
	if err := acquireScript.Run(ctx, b.rdb, []string{slot}, "dead", 1, 600).Err(); err != nil {
		t.Fatal(err)
	}
	other := b.enforcer(t)
	testenv.Eventually(t, 10*time.Second, func() bool {
		r, err := other.Admit(ctx, "a:b", "next", []byte(`{"order_id":2}`))
		if err == nil {
			r()
		}
		return err == nil
	}, "the dead worker's slot was never freed")
	// Meanwhile the live holder kept order 1's slot through several lease
	// periods.
	for range 3 {
		time.Sleep(live.LeaseTTL)
		if _, err := other.Admit(ctx, "a:b", "intruder", []byte(`{"order_id":1}`)); !isThrottled(err) {
			t.Fatalf("order 1 admitted a second task while its holder runs: %v", err)
		}
	}
	release()
}

// Overrides reach an enforcer at its next sync; null removes a code
// default; a reset brings the defaults back.
func TestOverrides(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	def := Limits{Rate: rate(10, time.Second, 0, "")}
	b := setup(t, map[string]Limits{"a:b": def, "c:d": {}})
	e := b.enforcer(t)
	if got := e.Limits("a:b"); got.Rate == nil || got.Rate.Limit != 10 || got.Rate.burst() != 10 {
		t.Fatalf("defaults: %+v", got)
	}
	p, err := ParsePatch([]byte(`{"rate":null,"concurrency":{"max":3}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.store.Put(ctx, "a:b", p)
	if err != nil || l.Rate != nil || l.Concurrency == nil || l.Concurrency.Max != 3 {
		t.Fatalf("put: %+v %v", l, err)
	}
	if err := e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.Limits("a:b"); got.Rate != nil || got.Concurrency.Max != 3 {
		t.Fatalf("after sync: %+v", got)
	}
	// A part left out stays as it is.
	p, _ = ParsePatch([]byte(`{"rate":{"limit":5,"per":"1m"}}`), nil)
	if l, _ := b.store.Put(ctx, "a:b", p); l.Concurrency == nil || l.Rate.Limit != 5 {
		t.Fatalf("second put: %+v", l)
	}
	if l, _ := b.store.Reset(ctx, "a:b"); l.Rate.Limit != 10 || l.Concurrency != nil {
		t.Fatalf("reset: %+v", l)
	}
	if all, _ := b.store.All(ctx); all["a:b"].Rate.Limit != 10 || !all["c:d"].IsZero() {
		t.Fatalf("all: %+v", all)
	}
}

func TestParsePatchNamesTheBadField(t *testing.T) {
	t.Parallel()
	fields := []string{"order_id", "user_id"}
	for _, tc := range []struct{ body, field string }{
		{`{"rate":{"limit":10,"per":"1y"}}`, "rate.per"},
		{`{"rate":{"limit":10,"per":10}}`, "rate.per"},
		{`{"rate":{"limit":-1,"per":"1s"}}`, "rate.limit"},
		{`{"rate":{"limit":10,"per":"1s","burst":-2}}`, "rate.burst"},
		{`{"rate":{"limit":10,"per":"1ms"}}`, "rate.per"},
		{`{"rate":{"limit":1000000,"per":"1s"}}`, "rate.limit"},
		{`{"rate":{"limit":10,"per":"1s","key":"merchant"}}`, "rate.key"},
		{`{"rate":{"limit":10,"per":"1s","color":"red"}}`, "rate.color"},
		{`{"rate":{"limit":"ten","per":"1s"}}`, "rate.limit"},
		{`{"concurrency":{"max":0}}`, "concurrency.max"},
		{`{"concurrency":{"max":-3}}`, "concurrency.max"},
		{`{"concurrency":{"max":1,"key":"payload"}}`, "concurrency.key"},
		{`{"concurrency":5}`, "concurrency"},
		{`{"speed":1}`, "speed"},
	} {
		_, err := ParsePatch([]byte(tc.body), fields)
		fe, ok := err.(FieldErrors)
		if !ok || fe[tc.field] == "" {
			t.Errorf("%s: %v, want an error naming %s", tc.body, err, tc.field)
		}
	}
	for _, body := range []string{`[1]`, `"rate"`, `null`, `{"rate":{}} x`, ``} {
		if _, err := ParsePatch([]byte(body), fields); !errors.Is(err, ErrBody) {
			t.Errorf("%s: %v, want ErrBody", body, err)
		}
	}
	for _, body := range []string{`{}`, `{"rate":null}`, `{"rate":{"limit":10,"per":"1s","burst":20,"key":"user_id"},"concurrency":{"max":1,"key":"order_id"}}`} {
		if _, err := ParsePatch([]byte(body), fields); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
