// Package batch group-commits: it turns the calls that many goroutines make
// at about the same time into one call per batch, so that N concurrent
// single-row statements become one statement (one round trip, one
// transaction, one WAL flush) over N rows.
//
// A call that arrives while no batch is running goes at once, alone: an idle
// process waits no longer than with a statement of its own. Calls that
// arrive while a batch is running wait for it to end and then go together.
// Each caller gets its own result once its batch has run; a batch that fails
// is retried item by item, so one bad item fails only its own call (or, with
// FailTogether, fails all its calls).
package batch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/conveyor-run/conveyor/internal/stack"
)

// Func runs one batch: it returns one output per input, in order, or an
// error for the whole batch.
type Func[In, Out any] func(ctx context.Context, in []In) ([]Out, error)

// Coalescer gathers concurrent calls into batches for its Func. Safe for
// concurrent use; the zero value is not usable (New).
type Coalescer[In, Out any] struct {
	run     Func[In, Out]
	max     int
	timeout time.Duration
	opts    options

	mu       sync.Mutex
	queue    []*call[In, Out]
	flushing bool
	lastEnd  time.Time     // when the last batch ended (kept only with Busy)
	full     chan struct{} // a lingering flush may stop waiting: lingerBelow calls are queued
}

type call[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{}
}

// Option configures a Coalescer (New).
type Option func(*options)

type options struct {
	linger       time.Duration
	lingerBelow  int
	busy         time.Duration
	failTogether bool
}

// Linger makes a batch that follows another wait up to d for more calls
// while fewer than below are queued. Under load, fewer and larger batches
// cost less per call; the first call after a pause never waits (unless
// Busy). The default is 500 µs below 16 calls.
func Linger(d time.Duration, below int) Option {
	return func(o *options) { o.linger, o.lingerBelow = d, below }
}

// Busy makes the first call after a short pause linger too: a call that
// arrives less than within after the previous batch ended waits as a batch
// that follows another does (Linger). At a steady moderate rate, calls
// arrive one by one between batches and without it each would go alone,
// as a statement and a commit of its own; after a longer pause the first
// call still goes at once. Choose within near the linger: a call that
// finds the Coalescer idle for longer than the linger would gather little
// by waiting.
func Busy(within time.Duration) Option {
	return func(o *options) { o.busy = within }
}

// FailTogether makes a batch that fails fail all its calls with its error,
// instead of running each call again alone: for a Func in which one call
// cannot fail the others (a read by keys, a transaction that already
// isolates its items), where running them one by one would only repeat the
// failure.
func FailTogether() Option {
	return func(o *options) { o.failTogether = true }
}

// New returns a Coalescer running batches of at most max calls through
// run, each with a context that ends after timeout.
func New[In, Out any](max int, timeout time.Duration, run Func[In, Out], opts ...Option) *Coalescer[In, Out] {
	c := &Coalescer[In, Out]{run: run, max: max, timeout: timeout, full: make(chan struct{}, 1),
		opts: options{linger: 500 * time.Microsecond, lingerBelow: 16}}
	for _, o := range opts {
		o(&c.opts)
	}
	return c
}

// Do adds in to the next batch and returns its output once that batch has
// run. It does not return before: a write whose caller gave up might still
// commit, and the caller would not know. The wait is bounded by the
// Coalescer's timeout (and the batches queued before it).
func (c *Coalescer[In, Out]) Do(in In) (Out, error) {
	k := c.add(in)
	<-k.done
	return k.out, k.err
}

// DoContext is Do, except that it returns ctx's error if ctx ends first:
// the call still runs in its batch, and its output is dropped. Use it where
// a caller that gave up can live with not knowing (a read; a write that is
// safe to make again).
func (c *Coalescer[In, Out]) DoContext(ctx context.Context, in In) (Out, error) {
	k := c.add(in)
	select {
	case <-k.done:
		return k.out, k.err
	case <-ctx.Done():
		var zero Out
		return zero, ctx.Err()
	}
}

// add queues a call for the next batch, starting a flush if none runs.
func (c *Coalescer[In, Out]) add(in In) *call[In, Out] {
	k := &call[In, Out]{in: in, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, k)
	if len(c.queue) >= c.opts.lingerBelow {
		select {
		case c.full <- struct{}{}:
		default:
		}
	}
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.mu.Unlock()
	return k
}

// flush runs batches until no call is waiting, on a goroutine of its own:
// its stack is grown at the top (package stack), not under a driver's
// read.
func (c *Coalescer[In, Out]) flush() {
	stack.GrowDeep()
	for first := true; ; first = false {
		c.mu.Lock()
		n := len(c.queue)
		busy := c.opts.busy > 0 && time.Since(c.lastEnd) < c.opts.busy
		linger := (!first || busy) && n > 0 && n < c.opts.lingerBelow
		if linger {
			select { // a signal from an earlier queue: stale
			case <-c.full:
			default:
			}
		}
		c.mu.Unlock()
		if linger {
			t := time.NewTimer(c.opts.linger)
			select {
			case <-t.C:
			case <-c.full:
				t.Stop()
			}
		}
		c.mu.Lock()
		batch := c.queue
		if len(batch) > c.max {
			batch = batch[:c.max:c.max]
			c.queue = append([]*call[In, Out](nil), c.queue[c.max:]...)
		} else {
			c.queue = nil
		}
		if len(batch) == 0 {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.runBatch(batch)
		if c.opts.busy > 0 {
			c.mu.Lock()
			c.lastEnd = time.Now()
			c.mu.Unlock()
		}
	}
}

// runBatch runs batch and answers its calls; if the batch fails as a whole
// and has more than one call, each call runs again alone (unless
// FailTogether).
func (c *Coalescer[In, Out]) runBatch(batch []*call[In, Out]) {
	outs, err := c.runOnce(batch)
	if err != nil && len(batch) > 1 && !c.opts.failTogether {
		for _, k := range batch {
			c.runBatch([]*call[In, Out]{k})
		}
		return
	}
	for i, k := range batch {
		if err != nil {
			k.err = err
		} else {
			k.out = outs[i]
		}
		close(k.done)
	}
}

func (c *Coalescer[In, Out]) runOnce(batch []*call[In, Out]) ([]Out, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	in := make([]In, len(batch))
	for i, k := range batch {
		in[i] = k.in
	}
	outs, err := c.run(ctx, in)
	if err == nil && len(outs) != len(in) {
		err = fmt.Errorf("batch of %d gave %d results", len(in), len(outs))
	}
	return outs, err
}
