package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

func ping(id string, after ...string) workflow.Step {
	return workflow.Step{ID: id, Type: tasks.TypeSystemPing, Payload: json.RawMessage(`{}`), After: after}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	reg := tasks.All()
	bad := func(steps ...workflow.Step) workflow.Spec { return workflow.Spec{Steps: steps} }
	five := 5
	tooMany := make([]workflow.Step, workflow.MaxSteps+1)
	for i := range tooMany {
		tooMany[i] = ping(fmt.Sprint(i))
	}
	tests := []struct {
		name  string
		spec  workflow.Spec
		field string // "" = valid
		want  string
	}{
		{"chain", bad(ping("a"), ping("b", "a"), ping("c", "b")), "", ""},
		{"empty", bad(), "steps", "at least one"},
		{"too many", workflow.Spec{Steps: tooMany}, "steps", "at most 10001"},
		{"duplicate id", bad(ping("a"), ping("b"), ping("a")), "steps[2].id", "duplicates the id of steps[0]"},
		{"bad id", bad(ping("a b")), "steps[0].id", "letters"},
		{"unknown parent", bad(ping("a"), ping("b", "a"), ping("c", "zz")), "steps[2].after", `"zz" is not a step`},
		{"self", bad(ping("a", "a")), "steps[0].after", "itself"},
		{"parent twice", bad(ping("a"), ping("b", "a", "a")), "steps[1].after", "listed twice"},
		{"cycle", bad(ping("r"), ping("a", "r", "c"), ping("b", "a"), ping("c", "b"), ping("d", "c")), "", "cycle"},
		{"unknown type", bad(workflow.Step{ID: "a", Type: "nope:nope"}), "steps[0].type", "unknown task type"},
		{"missing type", bad(workflow.Step{ID: "a"}), "steps[0].type", "required"},
		{"bad payload field", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, Payload: json.RawMessage(`{"sleep_ms":-1}`)}),
			"steps[0].payload.sleep_ms", "between"},
		{"unknown payload field", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, Payload: json.RawMessage(`{"x":1}`)}),
			"steps[0].payload.x", "not a field"},
		{"bad mode", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, IfParentFailed: "maybe"}), "steps[0].if_parent_failed", "cancel"},
		{"bad queue", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, Queue: "nowhere"}), "steps[0].queue", "not served"},
		{"max_retry", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, MaxRetry: ptr(-1)}), "steps[0].max_retry", "between"},
		{"good options", bad(workflow.Step{ID: "a", Type: tasks.TypeSystemPing, MaxRetry: &five, Queue: "low"}), "", ""},
	}
	queues := map[string]int{"critical": 6, "default": 3, "low": 1}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := workflow.Validate(reg, queues, tt.spec)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want valid", err)
				}
				return
			}
			var fe tasks.FieldErrors
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want FieldErrors", err)
			}
			if tt.field == "" { // cycle: any step on it
				for k, v := range fe {
					if strings.HasSuffix(k, ".after") && strings.Contains(v, tt.want) {
						if k == "steps[0].after" || k == "steps[4].after" {
							t.Fatalf("%s is not on the cycle", k)
						}
						return
					}
				}
				t.Fatalf("fields = %v, want a cycle", fe)
			}
			if !strings.Contains(fe[tt.field], tt.want) {
				t.Fatalf("fields = %v, want %s to contain %q", fe, tt.field, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestCanvasBuildsTheSameDAG(t *testing.T) {
	t.Parallel()
	p := tasks.SystemPingPayload{}
	spec := workflow.Chain(
		workflow.Task("fetch", p),
		workflow.Chord(workflow.Group(workflow.Task("a", p), workflow.Task("b", p)), workflow.Task("join", p)),
		workflow.Task("publish", p),
	).Named("thumbnails")
	got := map[string][]string{}
	for _, s := range spec.Steps {
		got[s.ID] = s.After
	}
	want := map[string][]string{"fetch": nil, "a": {"fetch"}, "b": {"fetch"}, "join": {"a", "b"}, "publish": {"join"}}
	if fmt.Sprint(got) != fmt.Sprint(want) || spec.Name != "thumbnails" {
		t.Fatalf("spec = %+v\nafter = %v, want %v", spec, got, want)
	}
	if err := workflow.Validate(tasks.All(), nil, spec); err != nil {
		t.Fatal(err)
	}
}

// bundle is a fresh database with helpers to drive a workflow by hand, as
// the worker would.
type bundle struct {
	t     *testing.T
	db    *sqlx.DB
	dbURL string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	d, url := testenv.DB(t)
	return &bundle{t: t, db: d, dbURL: url}
}

func (b *bundle) start(spec workflow.Spec) workflow.View {
	b.t.Helper()
	var v workflow.View
	err := db.InTx(context.Background(), b.db, func(tx *sqlx.Tx) error {
		var err error
		v, err = workflow.Start(context.Background(), tx, tasks.All(), spec, workflow.StartOptions{RequestID: "rq"})
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

func (b *bundle) finish(wf, step string, ok bool, result string) workflow.Advance {
	b.t.Helper()
	var adv workflow.Advance
	o := tasks.StepOutcome{Succeeded: ok}
	if result != "" {
		o.Result = json.RawMessage(result)
	}
	if !ok {
		o.Error = "boom"
	}
	err := db.InTx(context.Background(), b.db, func(tx *sqlx.Tx) error {
		var err error
		adv, err = workflow.Finish(context.Background(), tx, tasks.StepRef{WorkflowID: wf, StepID: step}, o)
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return adv
}

// states returns "id=state" for every step, in order.
func (b *bundle) states(wf string) string {
	b.t.Helper()
	v, err := workflow.Get(context.Background(), b.db, wf)
	if err != nil {
		b.t.Fatal(err)
	}
	parts := []string{v.State + ":"}
	for _, s := range v.Steps {
		parts = append(parts, s.ID+"="+s.State)
	}
	return strings.Join(parts, " ")
}

// outboxRows counts outbox rows carrying step's header.
func (b *bundle) outboxRows(wf, step string) int {
	b.t.Helper()
	var n int
	err := b.db.Get(&n, `SELECT count(*) FROM outbox WHERE options->'headers'->>'workflow_step' = $1`, wf+":"+step)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

func TestChainAdvancesOnceAndPassesResults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b", "a"), ping("c", "b")}})
	if v.State != "running" || v.Steps[0].State != "enqueued" || v.Steps[0].TaskID == "" || v.Steps[1].State != "waiting" {
		t.Fatalf("started = %+v", v)
	}
	row, err := store.NewOutbox(b.db).Get(context.Background(), v.Steps[0].TaskID)
	if err != nil || row.RequestID != "rq" || !strings.Contains(string(row.Options), v.ID+":a") {
		t.Fatalf("outbox row of a = %+v, %v", row, err)
	}

	adv := b.finish(v.ID, "a", true, `{"n":1}`)
	if !adv.Changed || adv.Enqueued != 1 {
		t.Fatalf("finish a = %+v", adv)
	}
	if dup := b.finish(v.ID, "a", true, `{"n":2}`); dup.Changed || dup.Enqueued != 0 {
		t.Fatalf("duplicate finish a = %+v, want no-op", dup)
	}
	if got := b.states(v.ID); got != "running: a=succeeded b=enqueued c=waiting" {
		t.Fatal(got)
	}
	// b's handler reads a's result.
	parents, err := store.NewWorkflows(b.db).ParentResults(context.Background(), v.ID, "b")
	if err != nil || len(parents) != 1 || string(parents[0].Result) != `{"n": 1}` {
		t.Fatalf("parents of b = %+v, %v", parents, err)
	}
	b.finish(v.ID, "b", true, "")
	adv = b.finish(v.ID, "c", true, "")
	if !adv.Ended || adv.Workflow.State != "succeeded" {
		t.Fatalf("finish c = %+v", adv)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := b.outboxRows(v.ID, s); n != 1 {
			t.Fatalf("step %s has %d outbox rows, want 1", s, n)
		}
	}
}

func TestFailureCancelsAndRunsDependents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := ping("cleanup", "a")
	run.IfParentFailed = workflow.IfParentFailedRun
	v := b.start(workflow.Spec{Steps: []workflow.Step{
		ping("a"), ping("b", "a"), ping("c", "b"), run, ping("other"), ping("join", "c", "other"),
	}})
	b.finish(v.ID, "a", false, "")
	if got := b.states(v.ID); got != "running: a=failed b=cancelled c=cancelled cleanup=enqueued other=enqueued join=cancelled" {
		t.Fatal(got)
	}
	b.finish(v.ID, "other", true, "")
	adv := b.finish(v.ID, "cleanup", true, "")
	if !adv.Ended || adv.Workflow.State != "failed" {
		t.Fatalf("workflow = %+v, want failed", adv.Workflow)
	}
	if n := b.outboxRows(v.ID, "join"); n != 0 {
		t.Fatalf("join enqueued %d times, want never", n)
	}
	parents, _ := store.NewWorkflows(b.db).ParentResults(context.Background(), v.ID, "cleanup")
	if len(parents) != 1 || parents[0].State != "failed" || parents[0].Error != "boom" {
		t.Fatalf("cleanup's parents = %+v", parents)
	}
}

type fakeCanceller struct {
	mu  sync.Mutex
	ids []string
}

func (f *fakeCanceller) Cancel(_ context.Context, id, _ string, _ time.Duration) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, id)
	return "deleted", queue.ErrNotFound
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b"), ping("c", "a", "b")}})
	// a's row went out to the queue; b's is still in the outbox.
	if _, err := b.db.Exec(`UPDATE outbox SET sent_at = now() WHERE id = $1`, v.Steps[0].TaskID); err != nil {
		t.Fatal(err)
	}
	fc := &fakeCanceller{}
	ended, err := workflow.Cancel(ctx, b.db, fc, v.ID, 0)
	if err != nil || !ended {
		t.Fatalf("Cancel = %v, %v", ended, err)
	}
	if got := b.states(v.ID); got != "cancelled: a=cancelled b=cancelled c=cancelled" {
		t.Fatal(got)
	}
	if len(fc.ids) != 1 || fc.ids[0] != v.Steps[0].TaskID {
		t.Fatalf("removed from the queue: %v, want only a's task", fc.ids)
	}
	if _, err := store.NewOutbox(b.db).Get(ctx, v.Steps[1].TaskID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b's unsent outbox row: err = %v, want deleted", err)
	}
	// a's task finishing late changes nothing; a second cancel neither.
	if adv := b.finish(v.ID, "a", true, ""); adv.Changed {
		t.Fatalf("late finish = %+v", adv)
	}
	if ended, err := workflow.Cancel(ctx, b.db, fc, v.ID, 0); ended || err != nil {
		t.Fatalf("second Cancel = %v, %v", ended, err)
	}
	if _, err := workflow.Cancel(ctx, b.db, fc, "00000000-0000-0000-0000-000000000000", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown workflow: err = %v", err)
	}
}

// TestChordOfManyRunsCallbackOnce finishes a large group's steps from
// several goroutines at once, each twice (at-least-once delivery): the
// callback must be enqueued exactly once, by the last parent.
func TestChordOfManyRunsCallbackOnce(t *testing.T) {
	t.Parallel()
	n := workflow.MaxSteps - 1 // a chord at the size limit: 10,000 tasks + the callback
	if testing.Short() {
		n = 1000
	}
	b := setup(t)
	steps := make([]workflow.Step, 0, n+1)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("g%d", i)
		steps = append(steps, ping(ids[i]))
	}
	steps = append(steps, ping("callback", ids...))
	v := b.start(workflow.Spec{Steps: steps})

	var wg sync.WaitGroup
	var mu sync.Mutex
	enqueued := 0
	work := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				adv := b.finish(v.ID, id, true, fmt.Sprintf(`{"id":%q}`, id))
				mu.Lock()
				enqueued += adv.Enqueued
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
		work <- id // duplicate delivery
	}
	close(work)
	wg.Wait()
	if enqueued != 1 || b.outboxRows(v.ID, "callback") != 1 {
		t.Fatalf("callback enqueued %d times (%d rows), want once", enqueued, b.outboxRows(v.ID, "callback"))
	}
	parents, err := store.NewWorkflows(b.db).ParentResults(context.Background(), v.ID, "callback")
	if err != nil || len(parents) != n || string(parents[n-1].Result) != fmt.Sprintf(`{"id": "g%d"}`, n-1) {
		t.Fatalf("callback's parents: %d, %v", len(parents), err)
	}
	adv := b.finish(v.ID, "callback", true, "")
	if !adv.Ended || adv.Workflow.State != "succeeded" {
		t.Fatalf("workflow = %+v", adv.Workflow)
	}
}

// TestStartRolledBackLeavesNothing: a workflow started in a transaction
// that rolls back leaves no workflow and no outbox row.
func TestStartRolledBackLeavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tx, err := b.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := workflow.Start(ctx, tx, tasks.All(), workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b")}}, workflow.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.db.Get(&n, `SELECT (SELECT count(*) FROM workflows) + (SELECT count(*) FROM outbox)`); err != nil || n != 0 {
		t.Fatalf("%d rows left after rollback (%v)", n, err)
	}
}
