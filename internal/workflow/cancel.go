package workflow

import (
	"context"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
)

// TaskCanceller removes a task from the queue, cancelling it first if it is
// running (queue.Client).
type TaskCanceller interface {
	Cancel(ctx context.Context, id, queue string, wait time.Duration) (string, error)
}

// Cancel ends running workflow id as cancelled: waiting steps are
// cancelled, enqueued ones too, and their tasks are removed from the queue
// (a running one is cancelled through asynq). The state change commits
// first, so a task that slips through anyway (removal failed, or it was
// being relayed) finds its step cancelled and does not run, or finishes
// without effect on the workflow. ended reports whether this call ended the
// workflow (false: it had already ended). store.ErrNotFound if no such
// workflow.
func Cancel(ctx context.Context, d *sqlx.DB, tc TaskCanceller, id string, wait time.Duration) (ended bool, err error) {
	var inQueue []store.CancelledTask
	err = db.InTx(ctx, d, func(tx *sqlx.Tx) error {
		wfs := store.NewWorkflows(tx)
		if _, err := wfs.Lock(ctx, id); err != nil {
			return err
		}
		inQueue, ended, err = wfs.Cancel(ctx, id)
		return err
	})
	if err != nil {
		return false, err
	}
	var errs []error
	for _, t := range inQueue {
		if _, err := tc.Cancel(ctx, t.TaskID, t.Queue, wait); err != nil && !errors.Is(err, queue.ErrNotFound) {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	// The workflow is cancelled whatever happened to the tasks: leftovers
	// are dropped by the worker when they come up.
	return ended, errors.Join(errs...)
}
