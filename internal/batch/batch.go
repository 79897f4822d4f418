// Package batch group-commits: it turns the calls that many goroutines make
// at about the same time into one call per batch, so that N concurrent
// single-row statements become one statement (one round trip, one
// transaction, one WAL flush) over N rows.
//
// A call that arrives while no batch is running goes at once, alone: an idle
// process waits no longer than with a statement of its own. Calls that
// arrive while a batch is running wait for it to end and then go together.
// Each caller gets its own result once its batch has run; a batch that fails
// is retried item by item, so one bad item fails only its own call.
package batch

import (
	"context"
	"fmt"
	"sync"
	"time"
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

	mu       sync.Mutex
	queue    []*call[In, Out]
	flushing bool
}

type call[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{}
}

// New returns a Coalescer running batches of at most max calls through
// run, each with a context that ends after timeout.
func New[In, Out any](max int, timeout time.Duration, run Func[In, Out]) *Coalescer[In, Out] {
	return &Coalescer[In, Out]{run: run, max: max, timeout: timeout}
}

// Do adds in to the next batch and returns its output once that batch has
// run. It does not return before: a write whose caller gave up might still
// commit, and the caller would not know. The wait is bounded by the
// Coalescer's timeout (and the batches queued before it).
func (c *Coalescer[In, Out]) Do(in In) (Out, error) {
	k := &call[In, Out]{in: in, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, k)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.mu.Unlock()
	<-k.done
	return k.out, k.err
}

// lingerFor is how long a batch that follows another waits for more calls
// when it would be small: under load, fewer and larger batches cost less
// per call; the first call after a pause never waits.
const lingerFor = 500 * time.Microsecond

// lingerBelow: a batch of this many calls or more goes at once.
const lingerBelow = 16

// flush runs batches until no call is waiting.
func (c *Coalescer[In, Out]) flush() {
	for first := true; ; first = false {
		c.mu.Lock()
		n := len(c.queue)
		c.mu.Unlock()
		if !first && n > 0 && n < lingerBelow {
			time.Sleep(lingerFor)
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
	}
}

// runBatch runs batch and answers its calls; if the batch fails as a whole
// and has more than one call, each call runs again alone.
func (c *Coalescer[In, Out]) runBatch(batch []*call[In, Out]) {
	outs, err := c.runOnce(batch)
	if err != nil && len(batch) > 1 {
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
