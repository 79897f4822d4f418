package workflow

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// TaskLookup finds a task in the queue (queue.Client).
type TaskLookup interface {
	GetTask(ctx context.Context, id, queue string) (queue.TaskInfo, error)
}

// ReconcilerOptions tune a Reconciler; zero values take the defaults.
type ReconcilerOptions struct {
	Every      time.Duration // how often Run looks; default 30 s
	Age        time.Duration // a step is looked at once enqueued (and unchecked) this long; default 1 min
	Batch      int           // steps per look; default 500
	StuckAfter time.Duration // see CountStuck; default 10 min
	// Dispatch sends the steps a repaired outcome releases right after the
	// commit, as the worker's Advancer does; nil leaves them to the relay's
	// poll.
	Dispatch Dispatcher
}

func (o ReconcilerOptions) withDefaults() ReconcilerOptions {
	if o.Every <= 0 {
		o.Every = 30 * time.Second
	}
	if o.Age <= 0 {
		o.Age = time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.StuckAfter <= 0 {
		o.StuckAfter = 10 * time.Minute
	}
	return o
}

// Reconciler advances workflows whose step outcome was never recorded: the
// worker died (or lost Postgres) between a task's end and the advancement,
// or the task was deleted from the queue. It looks at steps that have been
// enqueued for a while, asks asynq about their tasks, and records what it
// finds: completed → succeeded (with the stored result), archived → failed,
// missing → failed. Tasks still pending, scheduled, retrying or running are
// left alone. Every worker runs one; they share the work (rows are claimed
// with SKIP LOCKED) and Finish makes a duplicate harmless.
type Reconciler struct {
	db      *sqlx.DB
	tasks   TaskLookup
	adv     *Advancer
	metrics *observe.WorkflowMetrics
	log     *slog.Logger
	opts    ReconcilerOptions
}

// NewReconciler returns a Reconciler; metrics may be nil.
func NewReconciler(d *sqlx.DB, tl TaskLookup, metrics *observe.WorkflowMetrics, log *slog.Logger, opts ReconcilerOptions) *Reconciler {
	return &Reconciler{db: d, tasks: tl, adv: NewAdvancer(d, opts.Dispatch, metrics, log), metrics: metrics,
		log: log.With("component", "workflow_reconciler"), opts: opts.withDefaults()}
}

// Run reconciles every Every until ctx ends, and keeps the stuck-workflow
// gauge up to date.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Every)
	defer t.Stop()
	for {
		if n, err := r.ReconcileOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("workflow reconciliation", "err", err)
		} else if n > 0 {
			r.log.Warn("workflow steps advanced by the reconciler", "steps", n)
		}
		if n, err := store.NewWorkflows(r.db).CountStuck(ctx, r.opts.StuckAfter); err == nil {
			r.metrics.Stuck(n)
		} else if ctx.Err() == nil {
			r.log.Error("count stuck workflows", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconcileOnce looks at one batch of stale steps and returns how many it
// advanced.
func (r *Reconciler) ReconcileOnce(ctx context.Context) (int, error) {
	stale, err := store.NewWorkflows(r.db).ClaimStale(ctx, r.opts.Age, r.opts.Batch)
	if err != nil {
		return 0, err
	}
	advanced := 0
	for _, s := range stale {
		o, final, err := r.outcome(ctx, s)
		if err != nil {
			return advanced, err
		}
		if !final {
			continue
		}
		ref := tasks.StepRef{WorkflowID: s.WorkflowID, StepID: s.StepID}
		if err := r.adv.StepFinished(ctx, ref, o); err != nil {
			return advanced, err
		}
		r.log.Info("workflow step reconciled", "workflow_id", s.WorkflowID, "step_id", s.StepID,
			"task_id", s.TaskID, "succeeded", o.Succeeded)
		advanced++
	}
	return advanced, nil
}

// outcome reads s's task: final is false while the task may still run.
func (r *Reconciler) outcome(ctx context.Context, s store.StaleStep) (o tasks.StepOutcome, final bool, err error) {
	info, err := r.tasks.GetTask(ctx, s.TaskID, s.Queue)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		return tasks.StepOutcome{Error: "the step's task is no longer in the queue (deleted, or its retention ended) and its outcome was never recorded"}, true, nil
	case err != nil:
		return o, false, err
	}
	switch info.State {
	case "completed":
		o = tasks.StepOutcome{Succeeded: true, Result: info.Result}
		if info.CompletedAt != nil {
			o.FinishedAt = *info.CompletedAt
		}
		return o, true, nil
	case "archived":
		return tasks.StepOutcome{Error: info.LastError}, true, nil
	default:
		return o, false, nil
	}
}
