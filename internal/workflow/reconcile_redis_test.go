package workflow_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// TestReconcilerReadsOutcomeFromAsynq: a step's task runs to completion on a
// real asynq server whose worker never records the outcome (as when a worker
// dies between the task's success and the advancement). The reconciler reads
// the completed task and its result back from Redis and advances the
// workflow.
func TestReconcilerReadsOutcomeFromAsynq(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	log := testenv.Logger(t)
	redisURL, _ := testenv.Redis(t)
	queues := map[string]int{"default": 1}
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })

	v := b.start(workflow.Chain(workflow.Task("a", tasks.SystemPingPayload{Add: 4}),
		workflow.Task("b", tasks.SystemPingPayload{})).Spec())
	if _, _, err := queue.NewRelay(b.db, q, log, queue.RelayOptions{}).RelayOnce(ctx); err != nil {
		t.Fatal(err)
	}
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: 1, Queues: queues, LogLevel: asynq.WarnLevel})
	// No DB and no reporter: the step's outcome is lost.
	if err := srv.Start(tasks.NewMux(tasks.All(), tasks.Deps{Log: log}, nil)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	a := v.Steps[0].TaskID
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := q.GetTask(ctx, a, "default")
		return err == nil && info.State == "completed"
	}, "step a's task never completed")
	if got := b.states(v.ID); got != "running: a=enqueued b=waiting" {
		t.Fatalf("before reconciling: %s", got)
	}

	r := workflow.NewReconciler(b.db, q, nil, log, workflow.ReconcilerOptions{Age: time.Millisecond})
	if n, err := r.ReconcileOnce(ctx); err != nil || n != 1 {
		t.Fatalf("ReconcileOnce = %d, %v; want 1", n, err)
	}
	if got := b.states(v.ID); got != "running: a=succeeded b=enqueued" {
		t.Fatalf("after reconciling: %s", got)
	}
	got, err := workflow.Get(ctx, b.db, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Pong  bool  `json:"pong"`
		Value int64 `json:"value"`
	}
	if err := json.Unmarshal(got.Steps[0].Result, &res); err != nil || !res.Pong || res.Value != 4 {
		t.Fatalf("a's result = %s (%v), want the handler's result from Redis", got.Steps[0].Result, err)
	}
}
