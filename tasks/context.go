package tasks

import (
	"context"
	"io"

	"github.com/hibiken/asynq"
)

type taskKey struct{}

// withTask makes t and its result envelope (progress.go) available to the
// handler. keep is false when nothing of t is kept once it completes
// (retention.go): its result and progress then stay in memory.
func withTask(ctx context.Context, t *asynq.Task, keep bool) context.Context {
	ctx = context.WithValue(ctx, taskKey{}, t)
	if _, ok := ctx.Value(stateKey{}).(*taskState); ok {
		return ctx // made by the Mux's workflow step hook, which reads the result back
	}
	if !keep {
		return context.WithValue(ctx, stateKey{}, &taskState{discard: true})
	}
	return withState(ctx, resultWriter(t))
}

// ResultKept reports whether a result set now would be kept: false for a
// task of a type that keeps nothing once it completes (a fire-and-forget
// system:ping), and outside a worker, so a handler may skip building one.
func ResultKept(ctx context.Context) bool {
	s, ok := ctx.Value(stateKey{}).(*taskState)
	return ok && !s.discard
}

// resultWriter is t's ResultWriter, or nil outside a worker.
func resultWriter(t *asynq.Task) io.Writer {
	if rw := t.ResultWriter(); rw != nil {
		return rw
	}
	return nil
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
// task for its retention period and shown by GET /api/v1/tasks/{id}, next to
// the last progress (see progress.go for the stored form). Outside a worker
// it does nothing.
func SetResult(ctx context.Context, v any) error { return writeResult(ctx, v) }
