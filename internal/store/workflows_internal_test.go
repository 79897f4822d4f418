package store

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// A chord callback's parents are read one primary-key probe per edge (for
// the handler, and for GET /workflows/{id}) even when the statistics know
// nothing of its workflow: after an ANALYZE that
// saw only two-step workflows, a plain join rescanned every step of the
// group for each edge (n² rows: 14 s for 10,000 parents).
func TestParentResultsProbesEachParentWithStaleStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	// 3,000 workflows of two steps, a → b: what ANALYZE sees.
	for _, q := range []string{
		`INSERT INTO workflow_steps (workflow_id, step_id, position, task_type, payload, queue, parents_left)
		 SELECT md5(w::text)::uuid, s.id, s.pos, 'system:ping', '{}', 'default', s.pos
		   FROM generate_series(1, 3000) w, (VALUES ('a', 0), ('b', 1)) s(id, pos)`,
		`INSERT INTO workflow_edges (workflow_id, parent, child)
		 SELECT md5(w::text)::uuid, 'a', 'b' FROM generate_series(1, 3000) w`,
		`ANALYZE workflow_steps, workflow_edges`,
		// Then a group of 2,000 and its callback, unseen by the statistics.
		`INSERT INTO workflow_steps (workflow_id, step_id, position, task_type, payload, queue, parents_left, state, result)
		 SELECT '00000000-0000-0000-0000-00000000c0d0', 'p' || i, 2000 - i, 'system:ping', '{}', 'default', 0, 'succeeded', to_jsonb(i)
		   FROM generate_series(1, 2000) i`,
		`INSERT INTO workflow_steps (workflow_id, step_id, position, task_type, payload, queue, parents_left)
		 VALUES ('00000000-0000-0000-0000-00000000c0d0', 'callback', 2000, 'system:ping', '{}', 'default', 0)`,
		`INSERT INTO workflow_edges (workflow_id, parent, child)
		 SELECT '00000000-0000-0000-0000-00000000c0d0', 'p' || i, 'callback' FROM generate_series(1, 2000) i`,
	} {
		if _, err := d.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const wf = "00000000-0000-0000-0000-00000000c0d0"

	// The tables here are small enough for a merge join to look cheapest;
	// on a production-sized table the planner picks a nested loop, as it
	// must here.
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL enable_mergejoin = off; SET LOCAL enable_hashjoin = off`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name string
		sql  string
		args []any
	}{
		{"ParentResults", parentResultsSQL, []any{wf, "callback"}},
		{"Steps", stepsSQL, []any{wf}},
	} {
		var raw []byte
		if err := tx.GetContext(ctx, &raw, `EXPLAIN (ANALYZE, FORMAT JSON) `+q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
		var plans []struct{ Plan planNode }
		if err := json.Unmarshal(raw, &plans); err != nil {
			t.Fatal(err)
		}
		if removed := plans[0].Plan.rowsRemoved(); removed > 2000 {
			t.Errorf("%s: the plan filtered out %.0f rows to find 2,000 parents (want a probe per parent): %s", q.name, removed, raw)
		}
	}

	got, err := NewWorkflows(d).ParentResults(ctx, wf, "callback")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2000 {
		t.Fatalf("%d parent results, want 2000", len(got))
	}
	// In the workflow's order (position), not the edges'.
	if got[0].StepID != "p2000" || string(got[0].Result) != "2000" || got[1999].StepID != "p1" {
		t.Errorf("first %+v, last %+v: want p2000 (result 2000) first and p1 last", got[0], got[1999])
	}
}

// planNode is the part of an EXPLAIN (ANALYZE, FORMAT JSON) node the
// test reads.
type planNode struct {
	Loops               float64    `json:"Actual Loops"`
	RemovedByFilter     float64    `json:"Rows Removed by Filter"`
	RemovedByJoinFilter float64    `json:"Rows Removed by Join Filter"`
	Plans               []planNode `json:"Plans"`
}

// rowsRemoved is the rows every node of the tree read and threw away.
func (n planNode) rowsRemoved() float64 {
	total := (n.RemovedByFilter + n.RemovedByJoinFilter) * max(n.Loops, 1)
	for _, c := range n.Plans {
		total += c.rowsRemoved()
	}
	return total
}
