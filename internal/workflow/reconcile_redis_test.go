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

// keptPayload is a step type whose completed tasks are kept with their
// result (as email:* and order:process are; a system:ping step's task is
// not kept at all).
type keptPayload struct {
	Add int64 `json:"add"`
}

func (keptPayload) TypeName() string { return "test:kept" }
func (keptPayload) Opts() tasks.Opts { return tasks.Opts{Queue: "default", Retention: time.Hour} }
func (keptPayload) Validate() error  { return nil }

// TestReconcilerReadsOutcomeFromAsynq: a step's task runs to completion on a
// real asynq server whose worker never records the outcome (a worker without
// a reporter). The reconciler reads the completed task and its result back
// from Redis and advances the workflow.
func TestReconcilerReadsOutcomeFromAsynq(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	log := testenv.Logger(t)
	redisURL, _ := testenv.Redis(t)
	queues := map[string]int{"default": 1}
	reg := tasks.NewRegistry(append(tasks.All().Types(), tasks.Define(func(tasks.Deps) tasks.Handler[keptPayload] {
		return func(ctx context.Context, p keptPayload) error {
			return tasks.SetResult(ctx, map[string]any{"pong": true, "value": p.Add})
		}
	}))...)
	q, err := queue.NewClient(redisURL, reg, queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })

	v, err := workflow.Start(ctx, b.db, reg, workflow.Chain(workflow.Task("a", keptPayload{Add: 4}),
		workflow.Task("b", tasks.SystemPingPayload{})).Spec(), workflow.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := queue.NewRelay(b.db, q, log, queue.RelayOptions{}).RelayOnce(ctx); err != nil {
		t.Fatal(err)
	}
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: 1, Queues: queues, LogLevel: asynq.WarnLevel})
	// No DB and no reporter: the step's outcome is lost.
	if err := srv.Start(tasks.NewMux(reg, tasks.Deps{Log: log}, nil)); err != nil {
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
