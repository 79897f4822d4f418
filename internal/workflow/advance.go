package workflow

import (
	"context"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Advance is what Finish did.
type Advance struct {
	// Changed is false for a duplicate (or late) report: the step was not
	// enqueued any more, and nothing changed.
	Changed  bool
	Enqueued int            // children sent to the outbox
	Workflow store.Workflow // as it is afterwards
	// Ended: this report ended the workflow (Workflow.State says how).
	Ended bool
}

// Finish records how step ref's task ended and advances its workflow, all in
// tx: children whose parents are now all finished are enqueued through the
// outbox, cancel dependents of a failed step are cancelled transitively, and
// the workflow ends when no step is left open. Only an enqueued step can
// finish, so a duplicate report is a no-op (Changed false).
func Finish(ctx context.Context, tx *sqlx.Tx, ref tasks.StepRef, o tasks.StepOutcome) (Advance, error) {
	wfs := store.NewWorkflows(tx)
	before, err := wfs.Lock(ctx, ref.WorkflowID)
	if err != nil {
		return Advance{}, err
	}
	state := store.StepSucceeded
	if !o.Succeeded {
		state = store.StepFailed
	}
	changed, err := wfs.FinishStep(ctx, ref.WorkflowID, ref.StepID, state, o.Result, o.Error, store.StepEnqueued)
	if err != nil || !changed {
		return Advance{Workflow: before}, err
	}
	type done struct {
		id     string
		failed bool
	}
	finished, failed := 1, 0
	if !o.Succeeded {
		failed = 1
	}
	var ready []string
	work := []done{{ref.StepID, !o.Succeeded}}
	for len(work) > 0 {
		d := work[len(work)-1]
		work = work[:len(work)-1]
		children, err := wfs.ReleaseChildren(ctx, ref.WorkflowID, d.id, d.failed)
		if err != nil {
			return Advance{}, err
		}
		for _, c := range children {
			switch {
			case c.ParentFailed && c.IfParentFailed == IfParentFailedCancel:
				ok, err := wfs.FinishStep(ctx, ref.WorkflowID, c.StepID, store.StepCancelled, nil,
					"cancelled: a parent step failed or was cancelled", store.StepWaiting)
				if err != nil {
					return Advance{}, err
				}
				if ok {
					finished++
					failed++
					work = append(work, done{c.StepID, true})
				}
			case c.ParentsLeft == 0:
				ready = append(ready, c.StepID)
			}
		}
	}
	adv := Advance{Changed: true}
	if len(ready) > 0 && before.State == store.WorkflowRunning {
		enq, err := wfs.EnqueueReady(ctx, ref.WorkflowID, ready)
		if err != nil {
			return Advance{}, err
		}
		adv.Enqueued = len(enq)
	}
	if adv.Workflow, err = wfs.Settle(ctx, ref.WorkflowID, finished, failed); err != nil {
		return Advance{}, err
	}
	adv.Ended = before.State == store.WorkflowRunning && adv.Workflow.State != store.WorkflowRunning
	return adv, nil
}

// Advancer records step outcomes reported by the worker's Mux; it
// implements tasks.StepReporter.
type Advancer struct {
	db      *sqlx.DB
	metrics *observe.WorkflowMetrics
	log     *slog.Logger
}

// NewAdvancer returns an Advancer over d; metrics may be nil.
func NewAdvancer(d *sqlx.DB, metrics *observe.WorkflowMetrics, log *slog.Logger) *Advancer {
	return &Advancer{db: d, metrics: metrics, log: log.With("component", "workflow")}
}

// StepFinished implements tasks.StepReporter: Finish in its own transaction.
func (a *Advancer) StepFinished(ctx context.Context, ref tasks.StepRef, o tasks.StepOutcome) error {
	var adv Advance
	err := db.InTx(ctx, a.db, func(tx *sqlx.Tx) error {
		var err error
		adv, err = Finish(ctx, tx, ref, o)
		return err
	})
	if err != nil {
		return err
	}
	if !adv.Changed {
		a.log.Info("duplicate workflow step outcome ignored", "workflow_id", ref.WorkflowID, "step_id", ref.StepID)
		return nil
	}
	if adv.Enqueued > 0 && !o.FinishedAt.IsZero() {
		a.metrics.Advanced(time.Since(o.FinishedAt))
	}
	if adv.Ended {
		a.metrics.Finished(adv.Workflow.State)
		a.log.Info("workflow finished", "workflow_id", ref.WorkflowID, "state", adv.Workflow.State)
	}
	return nil
}
