package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// report builds a Report of step of wf: ok succeeded, else failed "boom".
func report(wf, step string, ok bool) workflow.Report {
	o := tasks.StepOutcome{Succeeded: ok, Result: json.RawMessage(fmt.Sprintf(`{"step":%q}`, step))}
	if !ok {
		o = tasks.StepOutcome{Error: "boom"}
	}
	return workflow.Report{Ref: tasks.StepRef{WorkflowID: wf, StepID: step}, Outcome: o}
}

func (b *bundle) finishBatch(reports ...workflow.Report) workflow.Batch {
	b.t.Helper()
	var out workflow.Batch
	err := db.InTx(context.Background(), b.db, func(tx *sqlx.Tx) error {
		var err error
		out, err = workflow.FinishBatch(context.Background(), tx, reports)
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// stepRow reads one step's row.
func (b *bundle) stepRow(wf, step string) store.WorkflowStep {
	b.t.Helper()
	s, err := store.NewWorkflows(b.db).Step(context.Background(), wf, step)
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// TestFinishBatchDuplicatesInOneBatch: the same step reported three times
// in one batch (once as a failure) is recorded once, by its first report;
// a chord's callback released by two parents of the batch counts both, once.
func TestFinishBatchDuplicatesInOneBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b"), ping("c"), ping("join", "a", "b", "c")}})
	got := b.finishBatch(report(v.ID, "a", true), report(v.ID, "a", true), report(v.ID, "b", true), report(v.ID, "a", false))
	changed := []bool{got.Advances[0].Changed, got.Advances[1].Changed, got.Advances[2].Changed, got.Advances[3].Changed}
	if fmt.Sprint(changed) != "[true false true false]" {
		t.Fatalf("changed = %v, want only the first report of each step", changed)
	}
	if a := b.stepRow(v.ID, "a"); a.State != "succeeded" || a.Error != "" || string(a.Result) != `{"step": "a"}` {
		t.Fatalf("a = %s %q %s, want its first report", a.State, a.Error, a.Result)
	}
	if j := b.stepRow(v.ID, "join"); j.ParentsLeft != 1 || j.State != "waiting" {
		t.Fatalf("join: %d parents left (%s), want 1 waiting", j.ParentsLeft, j.State)
	}
	if w := got.Advances[0].Workflow; w.StepsOpen != 2 || w.State != "running" || len(got.TaskIDs) != 0 {
		t.Fatalf("workflow = %+v, task IDs %v; want 2 steps open, nothing enqueued", w, got.TaskIDs)
	}
	// A later batch repeating a and b changes nothing; c releases join.
	got = b.finishBatch(report(v.ID, "b", true), report(v.ID, "c", true), report(v.ID, "a", true))
	if got.Advances[0].Changed || !got.Advances[1].Changed || got.Advances[2].Changed {
		t.Fatalf("second batch = %+v", got.Advances)
	}
	if got.Advances[1].Enqueued != 1 || len(got.TaskIDs) != 1 || got.TaskIDs[0] != v.Steps[3].TaskID {
		t.Fatalf("second batch enqueued %d, task IDs %v; want join's task %s", got.Advances[1].Enqueued, got.TaskIDs, v.Steps[3].TaskID)
	}
	if n := b.outboxRows(v.ID, "join"); n != 1 {
		t.Fatalf("join has %d outbox rows, want 1", n)
	}
}

// TestFinishBatchFailureBesideSuccess: in one batch, a fails (its cancel
// dependents are cancelled transitively, its run dependent is enqueued) and
// its sibling b succeeds; steps that wait on both follow their mode. The
// result is what the reports would give one at a time.
func TestFinishBatchFailureBesideSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run := func(s workflow.Step) workflow.Step { s.IfParentFailed = workflow.IfParentFailedRun; return s }
	spec := workflow.Spec{Steps: []workflow.Step{
		ping("a"), ping("b"),
		ping("x", "a"), ping("xx", "x"), // cancelled, transitively
		run(ping("y", "a")),       // runs after a's failure
		ping("j", "a", "b"),       // cancelled
		run(ping("k", "a", "b")),  // runs: both parents finished
		ping("nb", "b"),           // b's child: enqueued
		run(ping("after_x", "x")), // x cancelled: runs
	}}
	v := b.start(spec)
	serial := b.start(spec)

	got := b.finishBatch(report(v.ID, "b", true), report(v.ID, "a", false))
	b.finish(serial.ID, "a", false, "")
	b.finish(serial.ID, "b", true, "")

	want := "running: a=failed b=succeeded x=cancelled xx=cancelled y=enqueued j=cancelled k=enqueued nb=enqueued after_x=enqueued"
	if s := b.states(v.ID); s != want {
		t.Fatalf("batch:  %s\nwant    %s", s, want)
	}
	if s := b.states(serial.ID); s != want {
		t.Fatalf("serial: %s\nwant    %s", s, want)
	}
	if !got.Advances[0].Changed || !got.Advances[1].Changed || got.Advances[0].Enqueued != 4 || len(got.TaskIDs) != 4 {
		t.Fatalf("advances = %+v, task IDs %v", got.Advances, got.TaskIDs)
	}
	w := got.Advances[1].Workflow
	if w.StepsOpen != 4 || w.StepsFailed != 4 { // a, x, xx, j
		t.Fatalf("workflow: %d open, %d failed; want 4, 4", w.StepsOpen, w.StepsFailed)
	}
	// The rest finishes in one more batch: the workflow fails.
	got = b.finishBatch(report(v.ID, "y", true), report(v.ID, "k", true), report(v.ID, "nb", true), report(v.ID, "after_x", true))
	if !got.Advances[0].Ended || got.Advances[1].Ended || got.Advances[0].Workflow.State != "failed" {
		t.Fatalf("last batch = %+v", got.Advances)
	}
}

// TestFinishBatchManyWorkflows: one batch advances several workflows, and
// a report of an unknown workflow changes nothing (Finish says not found).
func TestFinishBatchManyWorkflows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	one := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b", "a")}})
	two := b.start(workflow.Spec{Steps: []workflow.Step{ping("a")}})
	unknown := "00000000-0000-0000-0000-000000000000"
	got := b.finishBatch(report(one.ID, "a", true), report(unknown, "a", true), report(two.ID, "a", true))
	if !got.Advances[0].Changed || got.Advances[1].Changed || !got.Advances[2].Changed {
		t.Fatalf("advances = %+v", got.Advances)
	}
	if got.Advances[0].Enqueued != 1 || got.Advances[2].Enqueued != 0 || !got.Advances[2].Ended || got.Advances[2].Workflow.State != "succeeded" {
		t.Fatalf("advances = %+v", got.Advances)
	}
	if s := b.states(one.ID); s != "running: a=succeeded b=enqueued" {
		t.Fatal(s)
	}
	err := db.InTx(context.Background(), b.db, func(tx *sqlx.Tx) error {
		_, err := workflow.Finish(context.Background(), tx, tasks.StepRef{WorkflowID: unknown, StepID: "a"}, tasks.StepOutcome{Succeeded: true})
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Finish of an unknown workflow: err = %v, want not found", err)
	}
}

// dispatched records what an Advancer dispatched, checking that each
// outbox row is already committed when it is named.
type dispatched struct {
	t  *testing.T
	db *sqlx.DB
	mu sync.Mutex
	id []string
}

func (d *dispatched) Dispatch(ids ...string) {
	for _, id := range ids {
		if _, err := store.NewOutbox(d.db).Get(context.Background(), id); err != nil {
			d.t.Errorf("dispatched outbox row %s is not visible: %v", id, err)
		}
	}
	d.mu.Lock()
	d.id = append(d.id, ids...)
	d.mu.Unlock()
}

func (d *dispatched) ids() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.id...)
}

// TestAdvancersRaceOverOneChord: two Advancers (two workers) record a
// chord's group from many goroutines at once, every outcome twice, once
// through each: the callback is enqueued exactly once and dispatched once,
// after its commit.
func TestAdvancersRaceOverOneChord(t *testing.T) {
	t.Parallel()
	n := 2000
	if testing.Short() {
		n = 300
	}
	b := setup(t)
	ids := make([]string, n)
	steps := make([]workflow.Step, 0, n+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("g%d", i)
		steps = append(steps, ping(ids[i]))
	}
	steps = append(steps, ping("callback", ids...))
	v := b.start(workflow.Spec{Steps: steps})
	log := testenv.Logger(t)
	d1, d2 := &dispatched{t: t, db: b.db}, &dispatched{t: t, db: b.db}
	advs := []*workflow.Advancer{workflow.NewAdvancer(b.db, d1, nil, log), workflow.NewAdvancer(b.db, d2, nil, log)}

	ctx := context.Background()
	work := make(chan workflow.Report)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := advs[g%2].StepFinished(ctx, r.Ref, r.Outcome); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for _, id := range ids {
		work <- report(v.ID, id, true)
		work <- report(v.ID, id, true)
	}
	close(work)
	wg.Wait()

	if rows := b.outboxRows(v.ID, "callback"); rows != 1 {
		t.Fatalf("callback has %d outbox rows, want 1", rows)
	}
	all := append(d1.ids(), d2.ids()...)
	if len(all) != 1 || all[0] != v.Steps[n].TaskID {
		t.Fatalf("dispatched %v, want only the callback's task %s", all, v.Steps[n].TaskID)
	}
	if c := b.stepRow(v.ID, "callback"); c.State != "enqueued" || c.ParentsLeft != 0 {
		t.Fatalf("callback: %s, %d parents left", c.State, c.ParentsLeft)
	}
	parents, err := store.NewWorkflows(b.db).ParentResults(ctx, v.ID, "callback")
	if err != nil || len(parents) != n {
		t.Fatalf("callback's parents: %d, %v", len(parents), err)
	}
	for _, p := range parents {
		if p.State != "succeeded" || string(p.Result) != fmt.Sprintf(`{"step": %q}`, p.StepID) {
			t.Fatalf("parent %+v", p)
		}
	}
	if err := advs[1].StepFinished(ctx, tasks.StepRef{WorkflowID: v.ID, StepID: "callback"}, tasks.StepOutcome{Succeeded: true}); err != nil {
		t.Fatal(err)
	}
	if s, err := workflow.Get(ctx, b.db, v.ID); err != nil || s.State != "succeeded" {
		t.Fatalf("workflow = %s, %v; want succeeded", s.State, err)
	}
}

// TestStepStartRecorded: a start noted with StepStarted shows up in the
// step's row without a finish; a finish whose start was never written
// records it.
func TestStepStartRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b"), ping("c")}})
	adv := workflow.NewAdvancer(b.db, nil, nil, testenv.Logger(t))
	at := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	adv.StepStarted(tasks.StepRef{WorkflowID: v.ID, StepID: "a"}, at)
	testenv.Eventually(t, 10*time.Second, func() bool {
		s := b.stepRow(v.ID, "a")
		return s.StartedAt != nil && s.StartedAt.Equal(at)
	}, "step a's start never recorded")

	bAt, finishedAt := at.Add(time.Second), at.Add(2*time.Second)
	err := adv.StepFinished(ctx, tasks.StepRef{WorkflowID: v.ID, StepID: "b"},
		tasks.StepOutcome{Succeeded: true, StartedAt: bAt, FinishedAt: finishedAt})
	if err != nil {
		t.Fatal(err)
	}
	s := b.stepRow(v.ID, "b")
	if s.StartedAt == nil || !s.StartedAt.Equal(bAt) || s.FinishedAt == nil || !s.FinishedAt.Equal(finishedAt) {
		t.Fatalf("b: started %v, finished %v; want %v, %v", s.StartedAt, s.FinishedAt, bAt, finishedAt)
	}
	// Starts noted later do not overwrite recorded ones; an unknown step is
	// ignored. c is noted last, so once c's start is written, so are the rest.
	later := at.Add(time.Hour)
	for _, step := range []string{"b", "a", "zz", "c"} {
		adv.StepStarted(tasks.StepRef{WorkflowID: v.ID, StepID: step}, later)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		s := b.stepRow(v.ID, "c")
		return s.StartedAt != nil && s.StartedAt.Equal(later)
	}, "step c's start never recorded")
	if a, bb := b.stepRow(v.ID, "a"), b.stepRow(v.ID, "b"); !a.StartedAt.Equal(at) || !bb.StartedAt.Equal(bAt) {
		t.Fatalf("started: a %v, b %v; want %v, %v unchanged", a.StartedAt, bb.StartedAt, at, bAt)
	}
}

// TestStepStateSaysWhetherAStepHasParents: the worker reads a step's state
// when its task starts; the same read says whether the step has parents,
// so a step without any reads no parent results.
func TestStepStateSaysWhetherAStepHasParents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b"), ping("cb", "a", "b")}})
	// old: steps stored before they had a count of parents (NULL), whose
	// edges say.
	old := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b"), ping("cb", "a", "b")}})
	if _, err := b.db.Exec(`UPDATE workflow_steps SET parents = NULL WHERE workflow_id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}
	for _, wf := range []string{v.ID, old.ID} {
		var keys []store.StepKey
		for step, want := range map[string]bool{"a": false, "b": false, "cb": true} {
			keys = append(keys, store.StepKey{WorkflowID: wf, StepID: step})
			state, has, err := store.NewWorkflows(b.db).StepState(ctx, wf, step)
			if err != nil {
				t.Fatal(err)
			}
			if has != want {
				t.Errorf("step %s: has parents %v, want %v", step, has, want)
			}
			if wantState := map[bool]string{false: "enqueued", true: "waiting"}[want]; state != wantState {
				t.Errorf("step %s: state %s, want %s", step, state, wantState)
			}
		}
		all, err := store.NewWorkflows(b.db).StepStates(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		want := map[store.StepKey]store.StepStatus{
			{WorkflowID: wf, StepID: "a"}:  {State: "enqueued"},
			{WorkflowID: wf, StepID: "b"}:  {State: "enqueued"},
			{WorkflowID: wf, StepID: "cb"}: {State: "waiting", HasParents: true},
		}
		if fmt.Sprint(all) != fmt.Sprint(want) {
			t.Errorf("StepStates = %v, want %v", all, want)
		}
	}
	if _, _, err := store.NewWorkflows(b.db).StepState(ctx, v.ID, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown step: err %v, want ErrNotFound", err)
	}
}

// TestStepFinishedKeepsTheFirstStart: a step that finishes before its
// start was written gets the first start noted (not its last attempt's)
// from its finish, and its start is not written again afterwards.
func TestStepFinishedKeepsTheFirstStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	v := b.start(workflow.Spec{Steps: []workflow.Step{ping("a"), ping("b")}})
	adv := workflow.NewAdvancer(b.db, nil, nil, testenv.Logger(t))
	first := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	retried, finished := first.Add(time.Second), first.Add(2*time.Second)
	a := tasks.StepRef{WorkflowID: v.ID, StepID: "a"}
	adv.StepStarted(a, first)
	adv.StepStarted(a, retried) // a second attempt
	if err := adv.StepFinished(ctx, a, tasks.StepOutcome{Succeeded: true, StartedAt: retried, FinishedAt: finished}); err != nil {
		t.Fatal(err)
	}
	if s := b.stepRow(v.ID, "a"); s.StartedAt == nil || !s.StartedAt.Equal(first) {
		t.Fatalf("a started %v, want its first start %v", s.StartedAt, first)
	}
	// b is noted after a finished; once b's start is written, the flush
	// that would have written a's is over too.
	adv.StepStarted(tasks.StepRef{WorkflowID: v.ID, StepID: "b"}, first)
	testenv.Eventually(t, 10*time.Second, func() bool {
		s := b.stepRow(v.ID, "b")
		return s.StartedAt != nil && s.StartedAt.Equal(first)
	}, "step b's start never recorded")
	if s := b.stepRow(v.ID, "a"); !s.StartedAt.Equal(first) || s.State != "succeeded" {
		t.Fatalf("a = %s started %v, want succeeded, started %v", s.State, s.StartedAt, first)
	}
}

// TestAdvancerStepState: the Advancer reads the state of steps whose tasks
// start, many at once from many goroutines (coalesced into few queries),
// each answer the step's own; an unknown step or workflow is
// store.ErrNotFound, and a workflow ID that is no UUID fails only its own
// read.
func TestAdvancerStepState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 300
	group := make([]workflow.Part, n)
	for i := range group {
		group[i] = workflow.Task(fmt.Sprintf("g%d", i), tasks.SystemPingPayload{})
	}
	v := b.start(workflow.Chord(workflow.Group(group...), workflow.Task("cb", tasks.SystemPingPayload{})).Spec())
	other := b.start(workflow.Spec{Steps: []workflow.Step{ping("x")}})
	if _, err := workflow.Cancel(ctx, b.db, &fakeCanceller{}, other.ID, 0); err != nil {
		t.Fatal(err)
	}
	adv := workflow.NewAdvancer(b.db, nil, nil, testenv.Logger(t))

	type want struct {
		state      string
		hasParents bool
		notFound   bool
		fails      bool
	}
	cases := map[tasks.StepRef]want{
		{WorkflowID: v.ID, StepID: "cb"}:                                   {state: "waiting", hasParents: true},
		{WorkflowID: other.ID, StepID: "x"}:                                {state: "cancelled"},
		{WorkflowID: v.ID, StepID: "nope"}:                                 {notFound: true},
		{WorkflowID: "00000000-0000-4000-8000-000000000000", StepID: "g1"}: {notFound: true},
		{WorkflowID: "not-a-uuid", StepID: "g1"}:                           {fails: true},
	}
	for i := range n {
		cases[tasks.StepRef{WorkflowID: v.ID, StepID: fmt.Sprintf("g%d", i)}] = want{state: "enqueued"}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for round := range 3 {
		for ref, w := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				state, has, err := adv.StepState(ctx, ref)
				var bad error
				switch {
				case w.notFound:
					if !errors.Is(err, store.ErrNotFound) {
						bad = fmt.Errorf("err %v, want ErrNotFound", err)
					}
				case w.fails:
					if err == nil || errors.Is(err, store.ErrNotFound) {
						bad = fmt.Errorf("err %v, want a query error", err)
					}
				case err != nil || state != w.state || has != w.hasParents:
					bad = fmt.Errorf("%s, parents %v, err %v; want %s, parents %v", state, has, err, w.state, w.hasParents)
				}
				if bad != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("round %d, step %s of %s: %w", round, ref.StepID, ref.WorkflowID, bad))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
