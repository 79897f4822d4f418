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

// Outcomes of a fire, as logged and counted.
const (
	FireEnqueued  = "enqueued"
	FireDuplicate = "duplicate" // another replica (or an earlier attempt) enqueued this tick
	FireError     = "error"
)

// Observer is told about every fire (the scheduler's metrics).
type Observer interface {
	Fired(name, outcome string)
}

// Engine fires entries at their ticks.
type Engine struct {
	q            Enqueuer
	log          *slog.Logger
	obs          Observer
	now          func() time.Time
	minRetention time.Duration

	mu      sync.Mutex
	entries []*Entry
	changed chan struct{}
}

// NewEngine returns an engine; obs may be nil.
func NewEngine(q Enqueuer, log *slog.Logger, obs Observer) *Engine {
	return &Engine{q: q, log: log, obs: obs, now: time.Now, minRetention: 10 * time.Minute,
		changed: make(chan struct{}, 1)}
}

// SetEntries replaces the schedule (a reload); Run picks it up at once.
func (e *Engine) SetEntries(entries []*Entry) {
	e.mu.Lock()
	e.entries = append([]*Entry(nil), entries...)
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

// Run fires ticks until ctx ends. Ticks are computed from the time Run
// starts; each due tick is fired once by this engine.
func (e *Engine) Run(ctx context.Context) error {
	next := map[string]time.Time{} // name → next tick
	last := e.now()
	for {
		entries := e.Entries()
		live := map[string]bool{}
		wake := time.Time{}
		for _, en := range entries {
			live[en.Name] = true
			t, ok := next[en.Name]
			if !ok {
				t = en.Next(last)
				next[en.Name] = t
			}
			if wake.IsZero() || t.Before(wake) {
				wake = t
			}
		}
		for name := range next {
			if !live[name] {
				delete(next, name)
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
			stop()
			// Keep the next tick of unchanged entries; new ones start from now.
			last = e.now()
			for _, en := range e.Entries() {
				if old, ok := next[en.Name]; ok && old.After(last) {
					continue
				}
				delete(next, en.Name)
			}
			continue
		case <-timer:
		}
		now := e.now()
		for _, en := range entries {
			t := next[en.Name]
			if t.After(now) {
				continue
			}
			e.Fire(ctx, en, t)
			next[en.Name] = en.Next(t)
		}
		last = now
	}
}

// Fire enqueues en's task for tick, once: a second call for the same tick,
// here or on another replica, is a harmless duplicate. It returns the outcome.
func (e *Engine) Fire(ctx context.Context, en *Entry, tick time.Time) string {
	id := en.TaskID(tick)
	log := e.log.With("schedule", en.Name, "tick", tick.UTC().Format(time.RFC3339), "task_id", id)
	opts := []asynq.Option{asynq.TaskID(id), asynq.Retention(en.Retention(tick, e.minRetention))}
	if en.Queue != "" {
		opts = append(opts, asynq.Queue(en.Queue))
	}
	outcome := FireEnqueued
	t, err := tasks.NewWithHeaders(en.taskOpts, map[string]string{"schedule": en.Name}, opts...)
	if err == nil {
		_, err = e.q.EnqueueTask(ctx, t)
	}
	switch {
	case err == nil:
		log.Info("schedule fired", "outcome", outcome, "task_type", en.TaskType)
	case errors.Is(err, queue.ErrConflict):
		outcome = FireDuplicate
		log.Info("schedule tick already enqueued", "outcome", outcome, "task_type", en.TaskType)
	default:
		outcome = FireError
		log.Error("schedule fire failed", "outcome", outcome, "task_type", en.TaskType, "err", err)
	}
	if e.obs != nil {
		e.obs.Fired(en.Name, outcome)
	}
	return outcome
}
