package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// A workflow step's task is gone from Redis once it completes (a ping's
// retention): GET /api/v1/tasks/{id} then answers from the step, with its
// outcome, result and retries; a step not finished, or any other task, is
// still a MissingTask.
func TestGoneAnswersFromTheFinishedStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	five := 5
	a := workflow.Task("a", tasks.SystemPingPayload{Add: 1})
	a.MaxRetry = &five
	spec := workflow.Group(a, workflow.Task("f", tasks.SystemPingPayload{}))
	v, err := workflow.Start(ctx, b.db, tasks.All(), workflow.Chain(spec, workflow.Task("next", tasks.SystemPingPayload{})).Spec(), workflow.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	task := map[string]string{}
	for _, s := range v.Steps {
		task[s.ID] = s.TaskID
	}
	finish := func(step string, o tasks.StepOutcome) {
		t.Helper()
		err := db.InTx(ctx, b.db, func(tx *sqlx.Tx) error {
			_, err := workflow.Finish(ctx, tx, tasks.StepRef{WorkflowID: v.ID, StepID: step}, o)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	finish("a", tasks.StepOutcome{Succeeded: true, Result: json.RawMessage(`{"value":1}`), Retried: 2, FinishedAt: time.Now()})

	info, err := b.client.Gone(ctx, b.db, task["a"])
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != task["a"] || info.State != "completed" || info.Type != tasks.TypeSystemPing || info.Queue != "default" ||
		info.Retried != 2 || info.MaxRetry != 5 || info.CompletedAt == nil || string(info.Result) != `{"value": 1}` {
		t.Errorf("step a's task = %+v (result %s), want completed with its step's result and retries", info, info.Result)
	}
	// f is enqueued, its outbox row not sent yet; next was never enqueued.
	var missing *queue.MissingTask
	if _, err := b.client.Gone(ctx, b.db, task["f"]); !errors.As(err, &missing) || missing.Reason != queue.MissingNotEnqueued {
		t.Errorf("step f (enqueued): %v, want a MissingTask %q", err, queue.MissingNotEnqueued)
	}
	if _, err := b.client.Gone(ctx, b.db, task["next"]); !errors.As(err, &missing) || missing.Reason != queue.MissingUnknown {
		t.Errorf("step next (waiting): %v, want a MissingTask %q", err, queue.MissingUnknown)
	}

	finish("f", tasks.StepOutcome{Error: "boom", FinishedAt: time.Now()})
	info, err = b.client.Gone(ctx, b.db, task["f"])
	if err != nil || info.State != "archived" || info.LastError != "boom" || info.MaxRetry != 3 || info.CompletedAt != nil {
		t.Errorf("step f (failed) = %+v, %v; want archived with its error", info, err)
	}

	if _, err := b.client.Gone(ctx, nil, task["a"]); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("without a database: %v, want not found", err)
	}
	if _, err := b.client.Gone(ctx, b.db, "not-a-uuid"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("an ID that is no UUID: %v, want not found", err)
	}
}
