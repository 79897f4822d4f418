package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Calls that arrive while a batch runs go together in the next one, and
// each caller gets its own output.
func TestCallsDuringABatchGoTogether(t *testing.T) {
	t.Parallel()
	g := newGate()
	c := New(100, 10*time.Second, func(_ context.Context, in []int) ([]string, error) {
		g.enter(len(in))
		out := make([]string, len(in))
		for i, v := range in {
			out[i] = fmt.Sprint(v * 10)
		}
		return out, nil
	})
	const n = 20
	var wg sync.WaitGroup
	got := make([]string, n+1)
	errs := make([]error, n+1)
	wg.Go(func() { got[0], errs[0] = c.Do(0) })
	waitFor(t, func() bool { return len(g.batchSizes()) == 1 })
	for i := 1; i <= n; i++ {
		wg.Go(func() { got[i], errs[i] = c.Do(i) })
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == n })
	close(g.release)
	wg.Wait()
	for i := range n + 1 {
		if errs[i] != nil || got[i] != fmt.Sprint(i*10) {
			t.Fatalf("call %d = %q, %v; want %d", i, got[i], errs[i], i*10)
		}
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[0] != 1 || sizes[1] != n {
		t.Fatalf("batch sizes %v; want [1 %d]: the first alone, the rest together", sizes, n)
	}
}

// A batch that fails is run again call by call: only the bad call fails.
func TestFailedBatchFailsOnlyTheBadCall(t *testing.T) {
	t.Parallel()
	bad := errors.New("bad item")
	release := make(chan struct{})
	var once sync.Once
	c := New(100, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		once.Do(func() { <-release })
		for _, v := range in {
			if v < 0 {
				return nil, bad
			}
		}
		return in, nil
	})
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.Do(0) }) // holds the first batch
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.flushing && len(c.queue) == 0 })
	in := []int{1, -1, 2, 3}
	got := make([]int, len(in))
	errs := make([]error, len(in))
	for i, v := range in {
		wg.Go(func() { got[i], errs[i] = c.Do(v) })
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == len(in) })
	close(release)
	wg.Wait()
	for i, v := range in {
		if v < 0 {
			if !errors.Is(errs[i], bad) {
				t.Fatalf("bad call: err = %v, want %v", errs[i], bad)
			}
			continue
		}
		if errs[i] != nil || got[i] != v {
			t.Fatalf("call %d = %d, %v; want %d", i, got[i], errs[i], v)
		}
	}
}

// A batch never holds more than max calls.
func TestBatchesHoldAtMostMax(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	largest := 0
	c := New(3, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		mu.Lock()
		largest = max(largest, len(in))
		mu.Unlock()
		return in, nil
	})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if v, err := c.Do(i); err != nil || v != i {
				t.Errorf("call %d = %d, %v", i, v, err)
			}
		})
	}
	wg.Wait()
	if largest > 3 {
		t.Fatalf("a batch held %d calls; max 3", largest)
	}
}

// With FailTogether a failed batch fails all its calls with its error and
// runs none of them again alone.
func TestFailTogetherFailsEveryCallOfTheBatch(t *testing.T) {
	t.Parallel()
	bad := errors.New("database down")
	g := newGate()
	c := New(100, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		if g.enter(len(in)) {
			return in, nil
		}
		return nil, bad
	}, FailTogether())
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.Do(0) }) // holds the first batch
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.flushing && len(c.queue) == 0 })
	const n = 5
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = c.Do(i + 1) })
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == n })
	close(g.release)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, bad) {
			t.Fatalf("call %d: err = %v, want %v", i, err, bad)
		}
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != n {
		t.Fatalf("batch sizes %v; want [1 %d]: the failed batch is not run again call by call", sizes, n)
	}
}

// DoContext returns when its caller gives up, while its batch still runs;
// the Coalescer goes on serving later calls.
func TestDoContextReturnsWhenTheCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	c := New(100, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		once.Do(func() { <-release })
		return in, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.DoContext(ctx, 1)
		done <- err
	}()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.flushing && len(c.queue) == 0 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("DoContext after its caller gave up: err = %v, want context.Canceled", err)
	}
	close(release)
	if v, err := c.DoContext(context.Background(), 2); err != nil || v != 2 {
		t.Fatalf("a later call = %d, %v; want 2", v, err)
	}
}

// gate records the size of every batch its Func runs and holds the first
// batch until release is closed.
type gate struct {
	mu      sync.Mutex
	sizes   []int
	release chan struct{}
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

// enter records a batch of n calls; the first batch waits for release. It
// reports whether this was the first batch.
func (g *gate) enter(n int) (first bool) {
	g.mu.Lock()
	first = len(g.sizes) == 0
	g.sizes = append(g.sizes, n)
	g.mu.Unlock()
	if first {
		<-g.release
	}
	return first
}

// batchSizes returns the sizes of the batches so far.
func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitFor waits, with a deadline, until cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// With Busy, a call that comes soon after a batch waits for company (here
// until a second call arrives: lingerBelow), while the first call ever, and
// a call after a pause longer than the window, go at once. The linger is an
// hour: a call that wrongly waited would hang the test.
func TestBusyLingersOnlySoonAfterABatch(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sizes []int
	run := func(_ context.Context, in []int) ([]int, error) {
		mu.Lock()
		sizes = append(sizes, len(in))
		mu.Unlock()
		return in, nil
	}
	got := func() []int { mu.Lock(); defer mu.Unlock(); return append([]int(nil), sizes...) }

	soon := New(100, 10*time.Second, run, Linger(time.Hour, 2), Busy(time.Hour))
	if _, err := soon.Do(0); err != nil { // idle: at once
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = soon.Do(1) }) // right after a batch: waits
	waitFor(t, func() bool { soon.mu.Lock(); defer soon.mu.Unlock(); return len(soon.queue) == 1 })
	if _, err := soon.Do(2); err != nil { // the second call ends the wait
		t.Fatal(err)
	}
	wg.Wait()
	if s := got(); len(s) != 2 || s[0] != 1 || s[1] != 2 {
		t.Fatalf("batch sizes %v; want [1 2]: the call soon after a batch waited for the next", s)
	}

	mu.Lock()
	sizes = nil
	mu.Unlock()
	later := New(100, 10*time.Second, run, Linger(time.Hour, 100), Busy(time.Millisecond))
	for i := range 2 {
		if _, err := later.Do(i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // longer than the window: idle again
	}
	if s := got(); len(s) != 2 || s[0] != 1 || s[1] != 1 {
		t.Fatalf("batch sizes %v; want [1 1]", s)
	}
}

// A lingering batch goes as soon as lingerBelow calls are queued, without
// waiting out the linger.
func TestLingerEndsWhenEnoughCallsWait(t *testing.T) {
	t.Parallel()
	g := newGate()
	c := New(100, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		g.enter(len(in))
		return in, nil
	}, Linger(time.Hour, 3))
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.Do(0) })
	waitFor(t, func() bool { return len(g.batchSizes()) == 1 })
	wg.Go(func() { _, _ = c.Do(1) })
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == 1 })
	close(g.release) // the next batch lingers: one call queued, below 3
	wg.Go(func() { _, _ = c.Do(2) })
	wg.Go(func() { _, _ = c.Do(3) })
	wg.Wait()
	if s := g.batchSizes(); len(s) != 2 || s[1] != 3 {
		t.Fatalf("batch sizes %v; want [1 3]", s)
	}
}
