package workflow_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
)

// fakeQueue answers GetTask from a map of task ID → info; missing IDs are
// queue.ErrNotFound.
type fakeQueue map[string]queue.TaskInfo

func (f fakeQueue) GetTask(_ context.Context, id, _ string) (queue.TaskInfo, error) {
	info, ok := f[id]
	if !ok {
		return queue.TaskInfo{}, queue.ErrNotFound
	}
	return info, nil
}

// TestReconcilerAdvancesStepsWhoseOutcomeWasLost: the tasks of four steps
// ended (or not) in the queue but no outcome was recorded, as when a worker
// dies right after a task's success. The reconciler records what asynq knows
// and advances the workflow; it leaves running tasks and unrelayed rows alone.
func TestReconcilerAdvancesStepsWhoseOutcomeWasLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	v := b.start(workflow.Spec{Steps: []workflow.Step{
		ping("done"), ping("archived"), ping("gone"), ping("running"), ping("unsent"), ping("next", "done"),
	}})
	task := map[string]string{}
	for _, s := range v.Steps {
		task[s.ID] = s.TaskID
	}
	// Everything but "unsent" was relayed, a while ago.
	if _, err := b.db.Exec(`UPDATE outbox SET sent_at = now() WHERE id <> $1`, task["unsent"]); err != nil {
		t.Fatal(err)
	}
	// The workflow and its first steps an hour old, as they would be an hour
	// after the workflow started (its steps are never enqueued before it is
	// created); another workflow started just now, whose step is not due.
	b.age(v.ID, "created_at")
	young := b.start(workflow.Spec{Steps: []workflow.Step{ping("young")}})
	if _, err := b.db.Exec(`UPDATE outbox SET sent_at = now() WHERE id = $1`, young.Steps[0].TaskID); err != nil {
		t.Fatal(err)
	}
	q := fakeQueue{
		task["done"]:     {ID: task["done"], State: "completed", Result: json.RawMessage(`{"value":7}`)},
		task["archived"]: {ID: task["archived"], State: "archived", LastError: "exhausted"},
		task["running"]:  {ID: task["running"], State: "active"},
		task["unsent"]:   {ID: task["unsent"], State: "completed"}, // must not be asked: its row is unsent
	}
	d := &dispatched{t: t, db: b.db}
	r := workflow.NewReconciler(b.db, q, nil, testenv.Logger(t), workflow.ReconcilerOptions{Age: time.Minute, Dispatch: d})
	n, err := r.ReconcileOnce(ctx)
	if err != nil || n != 3 {
		t.Fatalf("ReconcileOnce = %d, %v; want 3 advanced", n, err)
	}
	// The step the repair released goes out after the commit, not at the
	// relay's next poll.
	if got := d.ids(); len(got) != 1 || got[0] != task["next"] {
		t.Errorf("dispatched %v, want only next's task %s", got, task["next"])
	}
	got, err := workflow.Get(ctx, b.db, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"done": "succeeded", "archived": "failed", "gone": "failed", "running": "enqueued",
		"unsent": "enqueued", "next": "enqueued"}
	for _, s := range got.Steps {
		if s.State != want[s.ID] {
			t.Errorf("step %s = %s, want %s", s.ID, s.State, want[s.ID])
		}
		if s.ID == "done" && string(s.Result) != `{"value": 7}` {
			t.Errorf("done's result = %s", s.Result)
		}
		if s.ID == "archived" && s.Error != "exhausted" {
			t.Errorf("archived's error = %q", s.Error)
		}
	}
	// Just checked: nothing is due again until Age has passed.
	if n, err := r.ReconcileOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second ReconcileOnce = %d, %v; want 0", n, err)
	}
	// Stuck: none (the workflow advanced just now).
	if n, err := store.NewWorkflows(b.db).CountStuck(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("CountStuck = %d, %v", n, err)
	}
	b.age(v.ID, "updated_at")
	// No step started or was enqueued within the last hour: stuck. The young
	// workflow is not.
	if n, err := store.NewWorkflows(b.db).CountStuck(ctx, time.Minute); err != nil || n != 1 {
		t.Fatalf("CountStuck = %d, %v; want 1", n, err)
	}
	// A step that started (its task runs, for a long time) can still
	// advance it: not stuck.
	if _, err := b.db.Exec(`UPDATE workflow_steps SET started_at = now() - interval '1 hour'
		WHERE workflow_id = $1 AND step_id = 'running'`, v.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := store.NewWorkflows(b.db).CountStuck(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("CountStuck with a started step = %d, %v; want 0", n, err)
	}
	if got := b.states(young.ID); got != "running: young=enqueued" {
		t.Errorf("young workflow: %s", got)
	}
}

func TestDeleteFinishedWorkflows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	chain := func() workflow.Spec {
		return workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b", "a")}}
	}
	done := b.start(chain())
	running := b.start(chain())
	b.finish(done.ID, "a", true, "")
	b.finish(done.ID, "b", true, "")
	n, err := store.NewWorkflows(b.db).DeleteFinishedBefore(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DeleteFinishedBefore = %d, %v; want 1", n, err)
	}
	if _, err := workflow.Get(ctx, b.db, running.ID); err != nil {
		t.Fatalf("running workflow deleted: %v", err)
	}
	for _, table := range []string{"workflow_steps", "workflow_edges"} {
		var left int
		if err := b.db.Get(&left, `SELECT count(*) FROM `+table+` WHERE workflow_id = $1`, done.ID); err != nil || left != 0 {
			t.Fatalf("%d rows of the deleted workflow left in %s (%v)", left, table, err)
		}
	}
	var kept int
	if err := b.db.Get(&kept, `SELECT count(*) FROM workflow_edges WHERE workflow_id = $1`, running.ID); err != nil || kept != 1 {
		t.Fatalf("running workflow's edges: %d (%v); want 1", kept, err)
	}
}

// age moves workflow wf's column (created_at or updated_at) and its steps'
// enqueued_at an hour back.
func (b *bundle) age(wf, column string) {
	b.t.Helper()
	if _, err := b.db.Exec(`UPDATE workflows SET `+column+` = now() - interval '1 hour' WHERE id = $1`, wf); err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.db.Exec(`UPDATE workflow_steps SET enqueued_at = now() - interval '1 hour' WHERE workflow_id = $1`, wf); err != nil {
		b.t.Fatal(err)
	}
}
