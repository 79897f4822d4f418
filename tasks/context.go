package tasks

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"
)

type taskKey struct{}

func withTask(ctx context.Context, t *asynq.Task) context.Context {
	return context.WithValue(ctx, taskKey{}, t)
}

// Attempt describes the running attempt of the current task.
type Attempt struct {
	TaskID   string
	Retried  int // retries before this attempt
	MaxRetry int
}

// Last reports whether a failure now would archive the task.
func (a Attempt) Last() bool { return a.Retried >= a.MaxRetry }

// CurrentAttempt returns the attempt of the task being handled in ctx. Outside
// a worker (handler unit tests) it reports a first attempt with no retries.
func CurrentAttempt(ctx context.Context) Attempt {
	id, _ := asynq.GetTaskID(ctx)
	n, _ := asynq.GetRetryCount(ctx)
	m, _ := asynq.GetMaxRetry(ctx)
	return Attempt{TaskID: id, Retried: n, MaxRetry: m}
}

// SetResult stores v (as JSON) as the task's result, kept with the completed
// task for its retention period and shown by GET /api/v1/tasks/{id}. Outside
// a worker it does nothing.
func SetResult(ctx context.Context, v any) error {
	t, ok := ctx.Value(taskKey{}).(*asynq.Task)
	if !ok || t.ResultWriter() == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if _, err := t.ResultWriter().Write(b); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}
