package schedule

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/tasks"
)

// Enqueuer is the part of queue.Client the engine uses.
type Enqueuer interface {
	EnqueueTask(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (queue.TaskInfo, error)
}

// Leader says whether this replica may fire (*Lease, or Always).
type Leader interface {
	// Leading reports whether this replica may fire now and the term of its
	// leadership; a new term means other replicas may have fired meanwhile.
	Leading() (term uint64, ok bool)
	// Changed receives a value when leadership may have changed.
	Changed() <-chan struct{}
}

// Recorder keeps the last fired tick of database schedules
// (store.Schedules.MarkFired) for the API and as a fallback record.
type Recorder interface {
	MarkFired(ctx context.Context, name string, tick time.Time, taskID string) error
}

// Outcomes of a fire, as logged and counted.
const (
	FireEnqueued  = "enqueued"
	FireDuplicate = "duplicate" // another replica (or an earlier attempt) enqueued this tick
	FireError     = "error"
)

// Reasons of errors, as counted.
const (
	ErrorEnqueue = "enqueue" // the tick will be retried while inside the catch-up window
	ErrorRecord  = "record"  // the fire happened, the record of it failed
	ErrorInvalid = "invalid" // a database row that does not compile is skipped
)

// Observer is told about every fire, skip and error (the scheduler's metrics).
type Observer interface {
	Fired(name, outcome string)
	Skipped(name string, ticks int)
	Failed(name, reason string)
}

type nopObserver struct{}

func (nopObserver) Fired(string, string)  {}
func (nopObserver) Skipped(string, int)   {}
func (nopObserver) Failed(string, string) {}

// EngineOptions configure an Engine. The zero value fires every tick
// without a lease and without catching up.
type EngineOptions struct {
	Leader   Leader   // nil: Always
	State    *State   // nil: no record of fired ticks (no catch-up after a restart)
	Recorder Recorder // nil: database rows are not told about fires
	Observer Observer // nil: nothing is counted
	// CatchupWindow: ticks missed by at most this much are still fired
	// (SCHEDULER_CATCHUP_WINDOW); older ones are skipped and logged.
	CatchupWindow time.Duration
	// RetryDelay is how soon a failed fire is retried (default 1s).
	RetryDelay time.Duration
	Now        func() time.Time // default time.Now
}

// Engine fires entries at their ticks while its replica leads.
type Engine struct {
	q    Enqueuer
	log  *slog.Logger
	opts EngineOptions

	mu      sync.Mutex
	entries []*Entry
	fps     map[string]string // name → fingerprint of the current definition
	loaded  bool
	changed chan struct{}
}

// NewEngine returns an engine that enqueues through q.
func NewEngine(q Enqueuer, log *slog.Logger, opts EngineOptions) *Engine {
	if opts.Leader == nil {
		opts.Leader = Always{}
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Engine{q: q, log: log, opts: opts, fps: map[string]string{}, changed: make(chan struct{}, 1)}
}

// SetEntries replaces the schedule (a reload or a sync); Run picks it up at
// once. Unchanged entries keep their place: no tick is lost or fired twice.
// A changed or new entry fires no tick from before the change (its Since,
// or now for file entries).
func (e *Engine) SetEntries(entries []*Entry) {
	now := e.opts.Now()
	e.mu.Lock()
	fps := make(map[string]string, len(entries))
	list := make([]*Entry, 0, len(entries))
	for _, en := range entries {
		fp := en.fingerprint()
		fps[en.Name] = fp
		if old, had := e.fps[en.Name]; e.loaded && (!had || old != fp) && en.Since.Before(now) && en.Source == SourceFile {
			c := *en
			c.Since = now
			en = &c
		}
		list = append(list, en)
	}
	e.entries, e.fps, e.loaded = list, fps, true
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// Entries returns the current entries sorted by name.
func (e *Engine) Entries() []*Entry {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]*Entry(nil), e.entries...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Run fires ticks until ctx ends. While this replica leads, each entry's
// cursor is the last tick handled; on taking the lead the cursors are read
// from the record in Redis (State), so the ticks missed since the last
// leader's last fire are caught up, within the catch-up window.
func (e *Engine) Run(ctx context.Context) error {
	var (
		cursors map[string]time.Time
		term    uint64
	)
	for {
		entries := e.Entries()
		now := e.opts.Now()
		t, leading := e.opts.Leader.Leading()
		if !leading {
			if cursors != nil {
				e.log.Info("not the leader: not firing")
			}
			cursors = nil
		} else if cursors == nil || t != term {
			cursors, term = map[string]time.Time{}, t
			e.log.Info("leading: firing schedules", "schedules", len(entries))
		}

		var wake time.Time
		retry := false
		if leading {
			live := make(map[string]bool, len(entries))
			for _, en := range entries {
				live[en.Name] = true
				cur, ok := cursors[en.Name]
				if !ok {
					cur = e.startCursor(ctx, en, now)
				}
				if en.Since.After(cur) {
					cur = en.Since
				}
				cur, failed := e.catchUp(ctx, en, cur, now, term)
				cursors[en.Name] = cur
				retry = retry || failed
				if n := en.Next(cur); !n.IsZero() && (wake.IsZero() || n.Before(wake)) {
					wake = n
				}
			}
			for name := range cursors {
				if !live[name] {
					delete(cursors, name)
				}
			}
		}
		if retry {
			if r := now.Add(e.opts.RetryDelay); wake.IsZero() || r.Before(wake) {
				wake = r
			}
		}

		var timer <-chan time.Time
		stop := func() bool { return false }
		if !wake.IsZero() {
			tm := time.NewTimer(time.Until(wake))
			timer, stop = tm.C, tm.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-e.changed:
		case <-e.opts.Leader.Changed():
		case <-timer:
		}
		stop()
	}
}

// startCursor is where a leader starts an entry it has no cursor for: the
// last fired tick on record (Redis, else the database row); for an entry
// that has never fired, when its definition took effect (Since: a database
// row's updated_at), so that ticks since then are caught up like any
// others; otherwise now.
func (e *Engine) startCursor(ctx context.Context, en *Entry, now time.Time) time.Time {
	var last time.Time
	if e.opts.State != nil {
		t, err := e.opts.State.LastFired(ctx, en.Name)
		if err != nil {
			e.log.Error("read last fired tick; using the database's", "schedule", en.Name, "err", err)
		}
		last = t
	}
	if en.LastFired.After(last) {
		last = en.LastFired
	}
	if last.IsZero() {
		if !en.Since.IsZero() && en.Since.Before(now) {
			return en.Since
		}
		return now
	}
	return last
}

// maxSkipCount bounds the work of counting skipped ticks (a 1s schedule
// idle for a week): beyond it the count is a lower bound.
const maxSkipCount = 100_000

// catchUp fires en's ticks after cur up to now: those older than the
// catch-up window are skipped and logged, the others fired in order. It
// stops at the first failed fire (to retry it) or when the lead is lost, and
// returns the new cursor and whether a fire failed.
func (e *Engine) catchUp(ctx context.Context, en *Entry, cur, now time.Time, term uint64) (time.Time, bool) {
	oldest := now.Add(-en.window(e.opts.CatchupWindow))
	skipped := 0
	var first, last time.Time
	for t := en.Next(cur); !t.IsZero() && !t.After(now); t = en.Next(t) {
		if t.Before(oldest) {
			if skipped == 0 {
				first = t
			}
			skipped++
			last, cur = t, t
			if skipped >= maxSkipCount {
				cur = oldest.Add(-time.Second)
			}
			continue
		}
		if tt, ok := e.opts.Leader.Leading(); !ok || tt != term {
			break
		}
		if e.Fire(ctx, en, t) == FireError {
			e.reportSkipped(en, skipped, first, last)
			return cur, true
		}
		cur = t
	}
	e.reportSkipped(en, skipped, first, last)
	return cur, false
}

func (e *Engine) reportSkipped(en *Entry, n int, first, last time.Time) {
	if n == 0 {
		return
	}
	e.log.Warn("missed ticks older than the catch-up window skipped", "schedule", en.Name, "outcome", "skipped",
		"ticks", n, "first_tick", first.UTC().Format(time.RFC3339), "last_tick", last.UTC().Format(time.RFC3339),
		"catchup_window", en.window(e.opts.CatchupWindow))
	e.opts.Observer.Skipped(en.Name, n)
}

// Fire enqueues en's task for tick, once: a second call for the same tick,
// here or on another replica, is a harmless duplicate. A fired (or
// duplicate) tick is recorded as the entry's last fired tick. It returns
// the outcome.
func (e *Engine) Fire(ctx context.Context, en *Entry, tick time.Time) string {
	id := en.TaskID(tick)
	log := e.log.With("schedule", en.Name, "tick", tick.UTC().Format(time.RFC3339), "task_id", id, "task_type", en.TaskType)
	if late := e.opts.Now().Sub(tick); late > 2*time.Second {
		log = log.With("late", late.Round(time.Millisecond).String())
	}
	minRetention := max(10*time.Minute, 2*en.window(e.opts.CatchupWindow))
	outcome := FireEnqueued
	t, err := tasks.NewWithHeaders(en.taskOpts, en.headers(tick), en.options()...)
	if err == nil {
		// ID and retention as enqueue options: they win over any default the
		// client adds, and the dedupe window must be ours.
		_, err = e.q.EnqueueTask(ctx, t, asynq.TaskID(id), asynq.Retention(en.Retention(tick, minRetention)))
	}
	switch {
	case err == nil:
		log.Info("schedule fired", "outcome", outcome)
	case errors.Is(err, queue.ErrConflict):
		outcome = FireDuplicate
		log.Info("schedule tick already enqueued", "outcome", outcome)
	default:
		log.Error("schedule fire failed; will retry", "outcome", FireError, "err", err)
		e.opts.Observer.Failed(en.Name, ErrorEnqueue)
		return FireError
	}
	e.opts.Observer.Fired(en.Name, outcome)
	if e.opts.State != nil {
		if err := e.opts.State.RecordFired(ctx, en.Name, tick); err != nil {
			log.Error("record fire", "err", err)
			e.opts.Observer.Failed(en.Name, ErrorRecord)
		}
	}
	if e.opts.Recorder != nil && en.Source == SourceDatabase {
		if err := e.opts.Recorder.MarkFired(ctx, en.Name, tick, id); err != nil {
			log.Error("record fire in the database", "err", err)
			e.opts.Observer.Failed(en.Name, ErrorRecord)
		}
	}
	return outcome
}
