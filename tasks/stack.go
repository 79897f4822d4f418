package tasks

import (
	"context"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/stack"
)

// PresizedStack wraps the worker's outermost handler: the goroutine asynq
// starts for each task grows its stack once, at the top, rather than deep
// under the handler (see package stack).
func PresizedStack(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		stack.Grow()
		return h.ProcessTask(ctx, t)
	})
}
