package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/store"
)

// Deps are what handlers need; the worker builds them once in run().
type Deps struct {
	DB        *sqlx.DB
	Mailer    mail.Mailer
	Templates *mail.Templates
	Log       *slog.Logger
	// CleanupMaxAge is how old finished data must be before
	// maintenance:cleanup deletes it.
	CleanupMaxAge time.Duration
	// OrderProcessDelay is simulated fulfilment time in order:process
	// (ORDER_PROCESS_DELAY; 0 in production).
	OrderProcessDelay time.Duration
	// VerifyLinkFunc returns the link that proves a user's address, for the
	// welcome email (nil: the email carries none). UnverifiedMail limits the
	// mail to addresses not yet proven (zero: 3 a day); see email.go.
	VerifyLinkFunc func(userID int64, email string) string
	UnverifiedMail Limit
	// Workflows records workflow steps' outcomes (nil: steps are only
	// advanced by the reconciler).
	Workflows StepReporter

	prepared *store.Prepared // made by NewMux on DB: see Deps.hot
	gathered *hotPath        // made by NewMux on prepared: see hot.go
}

// hot is the Querier for the statements every order runs (its processing
// and confirmation): prepared once per connection when the Deps came
// through NewMux, DB otherwise. Transactions still start on DB.
func (d Deps) hot() store.Querier {
	if d.prepared != nil {
		return d.prepared
	}
	return d.DB
}

// orders is what the order tasks read and write through: their statements
// gathered across concurrent tasks when the Deps came through NewMux.
func (d Deps) orders() orderRows {
	if d.gathered != nil {
		return d.gathered
	}
	return store.NewOrders(d.hot())
}

// emails is orders for sendOnce's email_log statements.
func (d Deps) emails() emailRows {
	if d.gathered != nil {
		return d.gathered
	}
	return store.NewEmailLog(d.hot())
}

// Outcomes of one task attempt, as reported to an Observer.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeRetried   = "retried"   // failed; asynq will retry it
	OutcomeArchived  = "archived"  // failed for good
	OutcomeThrottled = "throttled" // over a limit: not started, waits without spending a retry
)

// Observer receives task events (the worker's Prometheus metrics).
type Observer interface {
	TaskStarted(taskType, queue string)
	TaskFinished(taskType, queue, outcome string, d time.Duration)
}

// Mux dispatches tasks to the registry's handlers by exact type, logging one
// line per attempt and reporting to an Observer. Unlike asynq.ServeMux it
// never falls back to prefix matching.
type Mux struct {
	handlers map[string]asynq.Handler
	log      *slog.Logger
	obs      Observer
	steps    *stepHook   // workflow_step.go
	flow     flowControl // expiry and limits before the handler (flow.go)
}

// NewMux builds handlers for every type in r. obs may be nil.
func NewMux(r *Registry, d Deps, obs Observer) *Mux {
	if d.DB != nil && d.prepared == nil {
		d.prepared = store.NewPrepared(d.DB)
	}
	if d.prepared != nil && d.gathered == nil {
		d.gathered = newHotPath(d.prepared)
	}
	m := &Mux{handlers: make(map[string]asynq.Handler, len(r.types)), log: d.Log, obs: obs,
		steps: &stepHook{db: d.DB, reporter: d.Workflows, log: d.Log, declared: make(map[string]time.Duration, len(r.types))}}
	for name, t := range r.types {
		m.handlers[name] = t.handler(d)
		m.steps.declared[name] = t.Opts.Retention
	}
	return m
}

// ProcessTask implements asynq.Handler.
func (m *Mux) ProcessTask(ctx context.Context, t *asynq.Task) error {
	ctx, step, run := m.steps.begin(ctx, t)
	if !run {
		return nil // a workflow step that is cancelled or already finished
	}
	attempt := CurrentAttempt(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	if m.obs != nil {
		m.obs.TaskStarted(t.Type(), queue)
	}
	start := time.Now()
	err := m.admitAndDispatch(ctx, t)
	end := time.Now()
	elapsed := end.Sub(start)

	outcome, level, msg := OutcomeSucceeded, slog.LevelInfo, "task succeeded"
	switch {
	case err == nil:
	case IsThrottled(err):
		outcome, level, msg = OutcomeThrottled, slog.LevelDebug, "task throttled, not started"
	case errors.Is(err, asynq.SkipRetry) || attempt.Last():
		outcome, level, msg = OutcomeArchived, slog.LevelError, "task failed, archived"
	default:
		outcome, level, msg = OutcomeRetried, slog.LevelWarn, "task failed, will retry"
	}
	// One line per attempt, its attributes built only when it is written
	// (a logger made With them per task costs more than the line).
	if m.log.Enabled(ctx, level) {
		attrs := make([]slog.Attr, 0, 8)
		attrs = append(attrs, slog.String("task_type", t.Type()), slog.String("task_id", attempt.TaskID),
			slog.String("queue", queue), slog.Int("attempt", attempt.Retried+1), slog.Int("max_retry", attempt.MaxRetry))
		if rid := t.Headers()[HeaderRequestID]; rid != "" {
			attrs = append(attrs, slog.String("request_id", rid))
		}
		switch outcome {
		case OutcomeThrottled:
			attrs = append(attrs, slog.Any("reason", err))
		case OutcomeSucceeded:
			attrs = append(attrs, slog.Duration("duration", elapsed))
		default:
			attrs = append(attrs, slog.Duration("duration", elapsed), slog.Any("err", err))
		}
		// The record is built here rather than by Logger.LogAttrs, which
		// also walks the call stack for a source position that no handler
		// of ours prints (a measurable share of a ping's CPU).
		r := slog.NewRecord(end, level, msg, 0)
		r.AddAttrs(attrs...)
		_ = m.log.Handler().Handle(ctx, r)
	}
	if m.obs != nil {
		m.obs.TaskFinished(t.Type(), queue, outcome, elapsed)
	}
	if rerr := m.steps.end(ctx, step, outcome, err); rerr != nil {
		return rerr // a succeeded step's outcome not recorded: run it again
	}
	return err
}

func (m *Mux) dispatch(ctx context.Context, t *asynq.Task) (err error) {
	h, ok := m.handlers[t.Type()]
	if !ok {
		// Retried, not archived: during a rolling deploy a newer producer may
		// enqueue a type that only the next worker version knows.
		return fmt.Errorf("%w %q: no handler in this worker", ErrUnknownType, t.Type())
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v", p)
		}
	}()
	return h.ProcessTask(ctx, t)
}
