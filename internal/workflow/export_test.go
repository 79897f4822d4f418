package workflow

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
)

// FinishBatchStepwise is FinishBatch by the general path, a statement per
// step of the advancement, whatever the outcomes: the reference the
// one-statement path for successes is compared with.
func FinishBatchStepwise(ctx context.Context, tx *sqlx.Tx, reports []Report) (Batch, error) {
	return finishBatch(ctx, store.NewWorkflows(tx), reports)
}
