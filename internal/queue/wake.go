package queue

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/stack"
)

// Wake-ups: an idle worker waits for work instead of polling for it.
//
// asynq's processor looks at its queues, and when all are empty it sleeps
// TaskCheckInterval before looking again: pickup latency and idle Redis
// calls trade against each other (at 5 ms, p99 8 ms but ~10 % of a core per
// idle worker). Instead, every Conveyor producer (queue.Client: the api, the
// outbox relay and dispatcher, the scheduler) publishes the queue's name on
// a Redis channel after enqueueing a task that is ready to run, and the
// worker's Wakeups, installed as a hook on the Redis client of the asynq
// server, turns the processor's last empty look of a round into a wait for
// that message: up to MaxWait, after which the round ends as asynq expects
// and the processor looks again (the fallback poll). When a wake-up names a
// queue the worker serves, the hook runs asynq's own dequeue script for that
// queue, with asynq's own arguments, and hands asynq the task it returns.
//
// What the hook relies on, from the asynq version go.mod pins (tested in
// wake_test.go): the dequeue script's keys are a queue's pending, paused,
// active and lease keys, in that order, each with the queue name as its
// hash tag; the forward script's keys are a scheduled or retry set and the
// pending list, and it returns how many tasks it moved. A task that reaches
// a queue without a wake-up (enqueued by another asynq client, a retry or a
// scheduled task moved by a forwarder elsewhere, a lost message) is picked up
// by the fallback poll, within MaxWait.

// wakeChannel is the channel producers publish queue names on. Pub/sub is
// server-wide, not per database: the database number keeps deployments (and
// tests) sharing one Redis apart.
func wakeChannel(rdb redis.UniversalClient) string {
	db := 0
	if c, ok := rdb.(*redis.Client); ok {
		db = c.Options().DB
	}
	return "conveyor:wake:" + strconv.Itoa(db)
}

// wakeGap is the shortest time between two publications of one producer:
// a producer enqueueing thousands of tasks a second (when workers are busy
// and need no waking) publishes at most 1/wakeGap times a second, and a task
// arriving in a quiet moment is announced at once.
const wakeGap = 2 * time.Millisecond

// waker is a producer's side: it announces queues that received tasks.
type waker struct {
	rdb     redis.UniversalClient
	channel string
	mu      sync.Mutex
	queues  map[string]struct{}
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newWaker(rdb redis.UniversalClient) *waker {
	w := &waker{rdb: rdb, channel: wakeChannel(rdb), queues: map[string]struct{}{},
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go w.run()
	return w
}

// signal notes that queue has a task ready to run; it never blocks.
func (w *waker) signal(queue string) {
	w.mu.Lock()
	w.queues[queue] = struct{}{}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *waker) stop() {
	close(w.done)
	<-w.stopped
}

func (w *waker) run() {
	defer close(w.stopped)
	gap := time.NewTimer(0)
	for {
		select {
		case <-w.done:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		queues := make([]string, 0, len(w.queues))
		for q := range w.queues {
			queues = append(queues, q)
		}
		clear(w.queues)
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		pipe := w.rdb.Pipeline()
		for _, q := range queues {
			pipe.Publish(ctx, w.channel, q)
		}
		_, _ = pipe.Exec(ctx) // best effort: the workers' fallback poll covers a lost wake-up
		cancel()
		gap.Reset(wakeGap)
		select {
		case <-w.done:
			return
		case <-gap.C:
		}
	}
}

// WakeOptions tune Wakeups.
type WakeOptions struct {
	// MaxWait is the longest an idle worker waits for a wake-up before it
	// looks at its queues anyway (WORKER_POLL_INTERVAL); at most
	// MaxWakeWait, default 1 s.
	MaxWait time.Duration
}

// MaxWakeWait bounds WakeOptions.MaxWait: asynq gives a dequeued task a
// 30 s lease counted from the start of the look that found it, so a look
// must not last long.
const MaxWakeWait = 5 * time.Second

// WakeSleep is the TaskCheckInterval to give asynq when Wakeups are
// installed: the processor's pause between an ended wait and its next look,
// the only moment a wake-up can be missed (then the task waits for the next
// look, at most 1.5 × WakeSleep later).
const WakeSleep = 2 * time.Millisecond

// Wakeups is a worker's side of wake-ups: a Redis hook for the asynq
// server's client and a subscriber to the wake channel.
type Wakeups struct {
	rdb     redis.UniversalClient
	channel string
	served  map[string]bool
	maxWait time.Duration
	log     *slog.Logger

	wakes     chan string // queues announced; buffered
	listening atomic.Bool // subscribed: waiting makes sense
	woken     atomic.Int64
	waiting   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	empty map[string]bool // served queues found empty since a look last found a task
}

// NewWakeups prepares wake-ups for a worker serving queues over rdb, the
// Redis client its asynq server will use (asynq.NewServerFromRedisClient).
// Start subscribes and installs the hook.
func NewWakeups(rdb redis.UniversalClient, queues map[string]int, o WakeOptions, log *slog.Logger) *Wakeups {
	if o.MaxWait <= 0 {
		o.MaxWait = time.Second
	}
	o.MaxWait = min(o.MaxWait, MaxWakeWait)
	served := make(map[string]bool, len(queues))
	for q := range queues {
		served[q] = true
	}
	return &Wakeups{rdb: rdb, channel: wakeChannel(rdb), served: served, maxWait: o.MaxWait,
		log: log.With("component", "wakeups"), wakes: make(chan string, 256), closed: make(chan struct{}),
		empty: map[string]bool{}}
}

// Start subscribes to the wake channel and installs the hook on rdb. When
// ctx ends (the worker's shutdown signal) it Closes. Until the subscription
// is confirmed, and whenever it is broken, the worker polls as plain asynq
// does.
func (w *Wakeups) Start(ctx context.Context) {
	w.rdb.AddHook(wakeHook{w})
	lctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-ctx.Done():
			w.Close()
		case <-w.closed:
		}
		cancel()
	}()
	go w.listen(lctx)
}

// Close ends every wait at once (call it before shutting the asynq server
// down, so its processor stops without waiting out a wait) and stops the
// subscriber.
func (w *Wakeups) Close() {
	w.closeOnce.Do(func() { close(w.closed) })
}

func (w *Wakeups) listen(ctx context.Context) {
	ps := w.rdb.Subscribe(ctx, w.channel)
	defer ps.Close()
	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			w.listening.Store(false)
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("wake-up subscription broken; polling meanwhile", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			w.listening.Store(m.Kind == "subscribe" && m.Count > 0)
			backoff = 50 * time.Millisecond
		case *redis.Message:
			if w.served[m.Payload] {
				select {
				case w.wakes <- m.Payload:
				default: // a backlog of wake-ups already guarantees a look
				}
			}
		}
	}
}

// Woken counts the tasks handed to asynq on a wake-up, rather than found
// by a look (conveyor_worker_wakeups_total).
func (w *Wakeups) Woken() int64 { return w.woken.Load() }

// Collector exports Woken as conveyor_worker_wakeups_total.
func (w *Wakeups) Collector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "conveyor_worker_wakeups_total",
		Help: "Tasks an idle worker started on a wake-up rather than found by polling.",
	}, func() float64 { return float64(w.Woken()) })
}

// Waiting reports whether the worker is idle, waiting for a wake-up.
func (w *Wakeups) Waiting() bool { return w.waiting.Load() }

// Listening reports whether the wake channel subscription is up.
func (w *Wakeups) Listening() bool { return w.listening.Load() }

// notify is a local wake-up (a forwarder of this process moved tasks).
func (w *Wakeups) notify(queue string) {
	if w.served[queue] {
		select {
		case w.wakes <- queue:
		default:
		}
	}
}

// wakeHook is the go-redis hook on the asynq server's client.
type wakeHook struct{ w *Wakeups }

func (h wakeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h wakeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h wakeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// The goroutine asynq starts per task acknowledges it through here:
		// its stack grows now rather than under go-redis's read.
		stack.Grow()
		err := next(ctx, cmd)
		keys, ok := scriptKeys(cmd)
		if !ok {
			return err
		}
		if q, ok := dequeueQueue(keys); ok {
			c, isCmd := cmd.(*redis.Cmd)
			if !isCmd {
				return err
			}
			return h.w.afterDequeue(ctx, next, c, q, err)
		}
		if q, ok := forwardQueue(keys); ok && err == nil {
			if c, isCmd := cmd.(*redis.Cmd); isCmd {
				if n, _ := c.Int64(); n > 0 {
					h.w.notify(q)
				}
			}
		}
		return err
	}
}

// afterDequeue sees the result of asynq's dequeue script for queue q. When
// it is the last empty queue of a look, it waits for a wake-up and, on one,
// dequeues from the announced queue in place of q.
func (w *Wakeups) afterDequeue(ctx context.Context, next redis.ProcessHook, cmd *redis.Cmd, q string, err error) error {
	if !errors.Is(err, redis.Nil) {
		if err == nil {
			w.mu.Lock()
			clear(w.empty)
			w.mu.Unlock()
		}
		return err
	}
	w.mu.Lock()
	w.empty[q] = true
	all := len(w.empty) >= len(w.served)
	if all {
		clear(w.empty)
	}
	w.mu.Unlock()
	if !all || !w.listening.Load() {
		return err
	}
	timer := time.NewTimer(w.maxWait)
	defer timer.Stop()
	w.waiting.Store(true)
	defer w.waiting.Store(false)
	for {
		select {
		case <-w.closed:
			return err
		case <-ctx.Done():
			return err
		case <-timer.C:
			return err
		case x := <-w.wakes:
			again := redis.NewCmd(ctx, retarget(cmd.Args(), q, x)...)
			rerr := next(ctx, again)
			if errors.Is(rerr, redis.Nil) {
				continue // another worker was faster: keep waiting
			}
			cmd.SetVal(again.Val())
			cmd.SetErr(again.Err())
			if rerr == nil {
				w.woken.Add(1)
			}
			return rerr
		}
	}
}

// scriptKeys returns the keys of an EVALSHA or EVAL command: a view of its
// arguments (every command of the worker's server passes here, so nothing
// is copied), each a string.
func scriptKeys(cmd redis.Cmder) ([]any, bool) {
	args := cmd.Args()
	if len(args) < 3 {
		return nil, false
	}
	switch name, _ := args[0].(string); name {
	case "evalsha", "eval":
	default:
		return nil, false
	}
	n, ok := args[2].(int)
	if !ok || n < 0 || len(args) < 3+n {
		return nil, false
	}
	keys := args[3 : 3+n]
	for _, k := range keys {
		if _, ok := k.(string); !ok {
			return nil, false
		}
	}
	return keys, true
}

// queueOf returns the queue name a key (a string, as scriptKeys checked) is
// hash-tagged with ("asynq:{default}:pending" → "default"), if key ends
// with suffix.
func queueOf(k any, suffix string) (string, bool) {
	key, _ := k.(string)
	if !strings.HasSuffix(key, suffix) {
		return "", false
	}
	open, close := strings.IndexByte(key, '{'), strings.IndexByte(key, '}')
	if open < 0 || close <= open+1 {
		return "", false
	}
	return key[open+1 : close], true
}

// dequeueQueue recognises asynq's dequeue script by its keys.
func dequeueQueue(keys []any) (string, bool) {
	if len(keys) != 4 {
		return "", false
	}
	q, ok := queueOf(keys[0], ":pending")
	if !ok {
		return "", false
	}
	for i, suffix := range []string{":paused", ":active", ":lease"} {
		if p, ok := queueOf(keys[i+1], suffix); !ok || p != q {
			return "", false
		}
	}
	return q, true
}

// forwardQueue recognises asynq's forward script (scheduled or retry set →
// pending list) by its keys.
func forwardQueue(keys []any) (string, bool) {
	if len(keys) != 2 {
		return "", false
	}
	q, ok := queueOf(keys[1], ":pending")
	if !ok {
		return "", false
	}
	if p, ok := queueOf(keys[0], ":scheduled"); ok && p == q {
		return q, true
	}
	if p, ok := queueOf(keys[0], ":retry"); ok && p == q {
		return q, true
	}
	return "", false
}

// retarget copies a dequeue command's arguments with queue from's hash tag
// replaced by to's in every string argument (its keys and its task key
// prefix); the lease deadline argument is kept.
func retarget(args []any, from, to string) []any {
	out := make([]any, len(args))
	copy(out, args)
	if from == to {
		return out
	}
	old, repl := "{"+from+"}", "{"+to+"}"
	for i := 3; i < len(out); i++ {
		if s, ok := out[i].(string); ok {
			out[i] = strings.Replace(s, old, repl, 1)
		}
	}
	return out
}
