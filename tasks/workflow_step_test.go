package tasks_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// TestWorkflowStepHook runs workflow steps through the Mux as the worker
// does: outcomes are recorded, results reach the children, a duplicate
// delivery does not run the handler again, a final failure advances the
// workflow, and a cancelled step's task is dropped.
func TestWorkflowStepHook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	log := testenv.Logger(t)
	mux := tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: log, Workflows: workflow.NewAdvancer(d, nil, nil, log)}, nil)

	start := func(spec workflow.Spec) workflow.View {
		t.Helper()
		var v workflow.View
		err := db.InTx(ctx, d, func(tx *sqlx.Tx) error {
			var err error
			v, err = workflow.Start(ctx, tx, tasks.All(), spec, workflow.StartOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	run := func(wf string, step string, p tasks.Payload) error {
		t.Helper()
		task, err := tasks.NewWithHeaders(p, map[string]string{tasks.HeaderWorkflowStep: wf + ":" + step})
		if err != nil {
			t.Fatal(err)
		}
		return mux.ProcessTask(ctx, task)
	}
	get := func(wf string) map[string]workflow.StepView {
		t.Helper()
		v, err := workflow.Get(ctx, d, wf)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]workflow.StepView{"": {State: v.State}}
		for _, s := range v.Steps {
			out[s.ID] = s
		}
		return out
	}
	value := func(s workflow.StepView) (v struct{ Value, Parents int64 }) {
		t.Helper()
		if err := json.Unmarshal(s.Result, &v); err != nil {
			t.Fatalf("step %s result %s: %v", s.ID, s.Result, err)
		}
		return v
	}

	a := workflow.Task("a", tasks.SystemPingPayload{Add: 2})
	b := workflow.Task("b", tasks.SystemPingPayload{Add: 3})
	zero := 0
	c := workflow.Task("c", tasks.SystemPingPayload{Fail: "no luck"})
	c.MaxRetry = &zero
	after := workflow.Task("after", tasks.SystemPingPayload{}).RunIfParentFailed()
	v := start(workflow.Chain(a, b, c, after).Spec())

	if err := run(v.ID, "a", tasks.SystemPingPayload{Add: 2}); err != nil {
		t.Fatal(err)
	}
	s := get(v.ID)
	if s["a"].State != "succeeded" || value(s["a"]).Value != 2 || s["b"].State != "enqueued" || s["a"].StartedAt == nil {
		t.Fatalf("after a: %+v", s)
	}
	// A duplicate delivery of a: dropped, nothing changes.
	if err := run(v.ID, "a", tasks.SystemPingPayload{Add: 100}); err != nil {
		t.Fatal(err)
	}
	if got := get(v.ID); value(got["a"]).Value != 2 || got["c"].State != "waiting" {
		t.Fatalf("duplicate a changed the workflow: %+v", got)
	}
	if err := run(v.ID, "b", tasks.SystemPingPayload{Add: 3}); err != nil {
		t.Fatal(err)
	}
	if got := value(get(v.ID)["b"]); got.Value != 5 || got.Parents != 1 {
		t.Fatalf("b = %+v, want value 5 from 1 parent", got)
	}
	// c fails on its last attempt (max_retry 0 outside asynq): archived, so
	// the step fails and "after" (run if parent failed) is enqueued.
	if err := run(v.ID, "c", tasks.SystemPingPayload{Fail: "no luck"}); err == nil {
		t.Fatal("c succeeded")
	}
	s = get(v.ID)
	if s["c"].State != "failed" || !strings.Contains(s["c"].Error, "no luck") || s["after"].State != "enqueued" {
		t.Fatalf("after c: %+v", s)
	}
	if err := run(v.ID, "after", tasks.SystemPingPayload{}); err != nil {
		t.Fatal(err)
	}
	if s = get(v.ID); s[""].State != "failed" || s["after"].State != "succeeded" {
		t.Fatalf("end: %+v", s)
	}

	// A cancelled workflow's task is dropped without running.
	v2 := start(workflow.Task("x", tasks.SystemPingPayload{Fail: "must not run"}).Spec())
	if _, err := workflow.Cancel(ctx, d, nopCanceller{}, v2.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := run(v2.ID, "x", tasks.SystemPingPayload{Fail: "must not run"}); err != nil {
		t.Fatalf("cancelled step ran: %v", err)
	}
	if got := get(v2.ID); got["x"].State != "cancelled" || got[""].State != "cancelled" {
		t.Fatalf("cancelled workflow: %+v", got)
	}
}

type nopCanceller struct{}

func (nopCanceller) Cancel(context.Context, string, string, time.Duration) (string, error) {
	return "deleted", nil
}
