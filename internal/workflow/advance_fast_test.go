package workflow_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// TestSucceededBatchesMatchTheStepwisePath drives random DAGs through
// random batches, twice: one pair of workflows by the general path
// (FinishBatchStepwise), an identical pair by FinishBatch, which records a
// batch of successes in one statement. Batches mix the two workflows of a
// pair, repeat steps, report steps already finished and a workflow that
// does not exist; now and then a step fails (recorded by the general path
// on both sides), so that children with a failed parent and "run" are
// released by later successes, and a workflow that has failed keeps
// finishing what runs. After every batch both sides must agree: each
// step's state, parents left, failed parent, result and error; each
// workflow's state and counts; the outbox rows; and what the batch says it
// did.
func TestSucceededBatchesMatchTheStepwisePath(t *testing.T) {
	t.Parallel()
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	b := setup(t)
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		spec := randomDAG(rng, 4+rng.IntN(30))
		slow := [2]workflow.View{b.start(spec), b.start(spec)}
		fast := [2]workflow.View{b.start(spec), b.start(spec)}
		for batchNo := 0; ; batchNo++ {
			if batchNo > 200 {
				t.Fatalf("round %d: workflows still running after %d batches", round, batchNo)
			}
			open := b.enqueuedSteps(slow[0].ID, slow[1].ID)
			if len(open) == 0 {
				break
			}
			// The same picks on both sides: step i of workflow w.
			type pick struct {
				w    int
				step string
			}
			var picks []pick
			for _, k := range open {
				if rng.IntN(3) > 0 {
					w := slices.Index([]string{slow[0].ID, slow[1].ID}, k[0])
					picks = append(picks, pick{w, k[1]})
				}
			}
			if len(picks) == 0 {
				w := slices.Index([]string{slow[0].ID, slow[1].ID}, open[0][0])
				picks = append(picks, pick{w, open[0][1]})
			}
			if rng.IntN(4) == 0 { // a duplicate in the batch
				picks = append(picks, picks[rng.IntN(len(picks))])
			}
			if rng.IntN(4) == 0 { // a step finished long ago, or never enqueued
				picks = append(picks, pick{rng.IntN(2), spec.Steps[rng.IntN(len(spec.Steps))].ID})
			}
			rng.Shuffle(len(picks), func(i, j int) { picks[i], picks[j] = picks[j], picks[i] })
			fail := rng.IntN(6) == 0
			reports := func(side [2]workflow.View) []workflow.Report {
				var out []workflow.Report
				for i, p := range picks {
					ok := !(fail && i == 0)
					r := report(side[p.w].ID, p.step, ok)
					r.Outcome.Retried = i % 3
					out = append(out, r)
				}
				out = append(out, report("00000000-0000-7000-8000-000000000000", "ghost", true))
				return out
			}
			bs := b.finishWith(workflow.FinishBatchStepwise, reports(slow))
			finish := workflow.FinishBatch
			if fail {
				finish = workflow.FinishBatchStepwise // failures take the general path on both sides
			}
			bf := b.finishWith(finish, reports(fast))
			where := fmt.Sprintf("round %d, batch %d (%d reports, failure %v)", round, batchNo, len(picks)+1, fail)
			if got, want := describeBatch(bf), describeBatch(bs); got != want {
				t.Fatalf("%s: one-statement batch did\n%s\nthe general path did\n%s", where, got, want)
			}
			for w := range 2 {
				if got, want := b.snapshot(fast[w].ID), b.snapshot(slow[w].ID); got != want {
					t.Fatalf("%s, workflow %d: one-statement path left\n%s\nthe general path\n%s", where, w, got, want)
				}
			}
		}
	}
}

// randomDAG returns a spec of n pings, each after up to three earlier
// steps, half of those with if_parent_failed run.
func randomDAG(rng *rand.Rand, n int) workflow.Spec {
	steps := make([]workflow.Step, n)
	for i := range steps {
		steps[i] = ping(fmt.Sprintf("s%d", i))
		for range rng.IntN(min(i, 3) + 1) {
			p := steps[rng.IntN(i)].ID
			if !slices.Contains(steps[i].After, p) {
				steps[i].After = append(steps[i].After, p)
			}
		}
		if rng.IntN(2) == 0 {
			steps[i].IfParentFailed = workflow.IfParentFailedRun
		}
	}
	return workflow.Spec{Steps: steps}
}

// enqueuedSteps lists the enqueued steps of workflows, as (workflow, step).
func (b *bundle) enqueuedSteps(ids ...string) [][2]string {
	b.t.Helper()
	var rows []struct {
		WF   string `db:"workflow_id"`
		Step string `db:"step_id"`
	}
	err := b.db.Select(&rows, `SELECT workflow_id, step_id FROM workflow_steps
		WHERE workflow_id = ANY($1::uuid[]) AND state = 'enqueued' ORDER BY workflow_id, position`, "{"+strings.Join(ids, ",")+"}")
	if err != nil {
		b.t.Fatal(err)
	}
	out := make([][2]string, len(rows))
	for i, r := range rows {
		out[i] = [2]string{r.WF, r.Step}
	}
	return out
}

func (b *bundle) finishWith(f func(context.Context, *sqlx.Tx, []workflow.Report) (workflow.Batch, error), reports []workflow.Report) workflow.Batch {
	b.t.Helper()
	var out workflow.Batch
	err := db.InTx(context.Background(), b.db, func(tx *sqlx.Tx) error {
		var err error
		out, err = f(context.Background(), tx, reports)
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// describeBatch is what a batch did, without the workflows' IDs and times.
func describeBatch(bt workflow.Batch) string {
	var s strings.Builder
	for i, a := range bt.Advances {
		fmt.Fprintf(&s, "%d: changed=%v enqueued=%d ended=%v state=%q open=%d failed=%d total=%d\n", i, a.Changed,
			a.Enqueued, a.Ended, a.Workflow.State, a.Workflow.StepsOpen, a.Workflow.StepsFailed, a.Workflow.StepsTotal)
	}
	fmt.Fprintf(&s, "tasks enqueued: %d", len(bt.TaskIDs))
	return s.String()
}

// snapshot is a workflow's rows and outbox rows, without IDs and times.
func (b *bundle) snapshot(id string) string {
	b.t.Helper()
	var s strings.Builder
	var w struct {
		State  string `db:"state"`
		Open   int    `db:"steps_open"`
		Failed int    `db:"steps_failed"`
		Ended  bool   `db:"ended"`
	}
	if err := b.db.Get(&w, `SELECT state, steps_open, steps_failed, finished_at IS NOT NULL AS ended FROM workflows WHERE id = $1`, id); err != nil {
		b.t.Fatal(err)
	}
	fmt.Fprintf(&s, "workflow %+v\n", w)
	var steps []struct {
		Step         string  `db:"step_id"`
		State        string  `db:"state"`
		ParentsLeft  int     `db:"parents_left"`
		ParentFailed bool    `db:"parent_failed"`
		Result       *string `db:"result"`
		Error        string  `db:"error"`
		Retried      *int    `db:"retried"`
		Enqueued     bool    `db:"enqueued"`
		Finished     bool    `db:"finished"`
		Outbox       int     `db:"outbox"`
	}
	err := b.db.Select(&steps, `SELECT s.step_id, s.state, s.parents_left, s.parent_failed, s.result, s.error, s.retried,
		       s.enqueued_at IS NOT NULL AS enqueued, s.finished_at IS NOT NULL AS finished,
		       (SELECT count(*) FROM outbox o WHERE o.id = s.task_id
		           AND o.options->'headers'->>'`+tasks.HeaderWorkflowStep+`' = s.workflow_id || ':' || s.step_id
		           AND o.request_id = w.request_id) AS outbox
		  FROM workflow_steps s JOIN workflows w ON w.id = s.workflow_id
		 WHERE s.workflow_id = $1 ORDER BY s.position`, id)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, st := range steps {
		result := "NULL"
		if st.Result != nil {
			result = *st.Result
		}
		retried := -1
		if st.Retried != nil {
			retried = *st.Retried
		}
		fmt.Fprintf(&s, "%s %s left=%d pf=%v result=%s err=%q retried=%d enq=%v fin=%v outbox=%d\n", st.Step, st.State,
			st.ParentsLeft, st.ParentFailed, result, st.Error, retried, st.Enqueued, st.Finished, st.Outbox)
	}
	return s.String()
}
