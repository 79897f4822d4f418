package tasks_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/tasks"
)

func TestPresizedStackPassesTheTaskThrough(t *testing.T) {
	t.Parallel()
	type key struct{}
	boom := errors.New("boom")
	task := asynq.NewTask("x:y", []byte(`{}`))
	h := tasks.PresizedStack(asynq.HandlerFunc(func(ctx context.Context, got *asynq.Task) error {
		if got != task || ctx.Value(key{}) != "v" {
			t.Errorf("handler got task %p and ctx value %v", got, ctx.Value(key{}))
		}
		return boom
	}))
	ctx := context.WithValue(context.Background(), key{}, "v")
	if err := h.ProcessTask(ctx, task); !errors.Is(err, boom) {
		t.Fatalf("ProcessTask = %v, want the handler's error", err)
	}
}
