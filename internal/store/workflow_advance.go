package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/lib/pq"
)

// The finish side of workflows, set-based: the worker records the outcomes
// of many steps (of one or many workflows) in one transaction, so every
// statement here takes a batch and costs one round trip whatever its size.
//
// Each statement joins the batch's unnested keys to the table, which the
// planner does with one primary-key probe per key (it knows the length of
// the arrays). They used to filter with "workflow_id = ANY(<workflow IDs>)
// AND step_id = ANY(<step IDs>)" as well: the planner, which takes a
// workflow it has no statistics for to have a handful of steps, then read
// every step (or edge) of the workflow and filtered on the step IDs, so
// each batch of a group of 10,000 read 10,000 rows per statement.

// workflowCols are the columns of Workflow (of workflows w), named rather than *, so that the
// statements reading them can be prepared (Prepared.InTx): a prepared
// SELECT * fails once a migration adds a column.
const workflowCols = `w.id, w.name, w.state, w.steps_total, w.steps_open, w.steps_failed, w.request_id,
	w.created_at, w.updated_at, w.finished_at`

// StepKey names one step of one workflow.
type StepKey struct {
	WorkflowID string `db:"workflow_id"`
	StepID     string `db:"step_id"`
}

// StepEnd is one step outcome for FinishSteps.
type StepEnd struct {
	StepKey
	State      string          // StepSucceeded or StepFailed
	Result     json.RawMessage // nil: none
	Error      string
	StartedAt  time.Time // when the task started; zero: unknown
	FinishedAt time.Time // when the task ended; zero: now()
	Retried    int       // retries of its task before the attempt that ended it
}

// LockAll locks the rows of the workflows ids (those that exist) until the
// transaction ends and returns them. Rows are locked in id order, so
// transactions locking overlapping sets wait for each other instead of
// deadlocking.
func (r *Workflows) LockAll(ctx context.Context, ids []string) ([]Workflow, error) {
	out := []Workflow{}
	err := r.q.SelectContext(ctx, &out,
		`SELECT `+workflowCols+` FROM workflows w WHERE w.id = ANY($1::uuid[]) ORDER BY w.id FOR UPDATE`, pq.Array(ids))
	return out, mapErr(err, "lock workflows")
}

// FinishSteps moves every step of ends that is still enqueued to its
// state, with its result, error, retries and times (started_at only if the start was
// not recorded yet), and returns the steps it moved: a step that is not
// enqueued any more (a duplicate or late report) is left alone and not
// returned. ends must name each step at most once; the caller holds the
// workflows' locks.
func (r *Workflows) FinishSteps(ctx context.Context, ends []StepEnd) ([]StepKey, error) {
	n := len(ends)
	wfs, steps, states, results, errs, started, finished := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	retried := make([]int64, n)
	for i, e := range ends {
		wfs[i], steps[i], states[i], results[i], errs[i] = e.WorkflowID, e.StepID, e.State, string(e.Result), e.Error
		started[i], finished[i], retried[i] = pgTime(e.StartedAt), pgTime(e.FinishedAt), int64(e.Retried)
	}
	out := []StepKey{}
	err := r.q.SelectContext(ctx, &out,
		`UPDATE workflow_steps s
		    SET state = u.state, result = NULLIF(u.result, '')::jsonb, error = u.error,
		        started_at = COALESCE(s.started_at, NULLIF(u.started, '')::timestamptz),
		        finished_at = COALESCE(NULLIF(u.finished, '')::timestamptz, now()), retried = u.retried
		   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[])
		        AS u(wf, step, state, result, error, started, finished, retried)
		  WHERE s.workflow_id = u.wf AND s.step_id = u.step AND s.state = 'enqueued'
		 RETURNING s.workflow_id, s.step_id`,
		pq.Array(wfs), pq.Array(steps), pq.Array(states), pq.Array(results), pq.Array(errs),
		pq.Array(started), pq.Array(finished), pq.Array(retried))
	return out, mapErr(err, "finish workflow steps")
}

// pgTime is t as PostgreSQL reads a timestamptz; "" for the zero time.
func pgTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// FinishedStep is a step that has just finished, for ReleaseChildren.
type FinishedStep struct {
	StepKey
	Failed bool // it did not succeed (failed or cancelled)
}

// ReleasedChild is a waiting child after some of its parents finished.
type ReleasedChild struct {
	StepKey
	ParentsLeft    int    `db:"parents_left"`
	ParentFailed   bool   `db:"parent_failed"`
	IfParentFailed string `db:"if_parent_failed"`
}

// ReleaseChildren counts the steps done as finished in each of their
// waiting children, once per child whatever the number of its parents in
// done (a chord's callback takes parents_left − n in one row update), and
// returns those children as they are now.
func (r *Workflows) ReleaseChildren(ctx context.Context, done []FinishedStep) ([]ReleasedChild, error) {
	n := len(done)
	wfs, steps, failed := make([]string, n), make([]string, n), make([]bool, n)
	for i, d := range done {
		wfs[i], steps[i], failed[i] = d.WorkflowID, d.StepID, d.Failed
	}
	out := []ReleasedChild{}
	err := r.q.SelectContext(ctx, &out,
		`WITH done AS (
		     SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[]) AS d(wf, step, failed)
		 ), agg AS (
		     SELECT e.workflow_id, e.child, count(*)::int AS n, bool_or(d.failed) AS failed
		       FROM done d JOIN workflow_edges e ON e.workflow_id = d.wf AND e.parent = d.step
		      GROUP BY e.workflow_id, e.child
		 )
		 UPDATE workflow_steps c SET parents_left = c.parents_left - agg.n, parent_failed = c.parent_failed OR agg.failed
		   FROM agg WHERE c.workflow_id = agg.workflow_id AND c.step_id = agg.child AND c.state = 'waiting'
		 RETURNING c.workflow_id, c.step_id, c.parents_left, c.parent_failed, c.if_parent_failed`,
		pq.Array(wfs), pq.Array(steps), pq.Array(failed))
	return out, mapErr(err, "release children of workflow steps")
}

// CancelWaiting cancels the steps of keys that are still waiting, with
// errMsg, and returns those it cancelled.
func (r *Workflows) CancelWaiting(ctx context.Context, keys []StepKey, errMsg string) ([]StepKey, error) {
	wfs, steps := splitKeys(keys)
	out := []StepKey{}
	err := r.q.SelectContext(ctx, &out,
		`UPDATE workflow_steps s SET state = 'cancelled', error = $3, finished_at = now()
		   FROM unnest($1::uuid[], $2::text[]) AS u(wf, step)
		  WHERE s.workflow_id = u.wf AND s.step_id = u.step AND s.state = 'waiting'
		 RETURNING s.workflow_id, s.step_id`, pq.Array(wfs), pq.Array(steps), errMsg)
	return out, mapErr(err, "cancel waiting workflow steps")
}

// ReadyStep is a step that EnqueueSteps sent to the outbox.
type ReadyStep struct {
	StepKey
	TaskID string `db:"task_id"` // also its outbox row's ID
}

// stepTaskOptions is the outbox options of workflow step s's task: the
// step's own, plus the HeaderWorkflowStep header that tells the worker
// which step it runs.
const stepTaskOptions = `s.options || jsonb_build_object('headers', COALESCE(s.options->'headers', '{}'::jsonb)
	|| jsonb_build_object('` + HeaderWorkflowStep + `', s.workflow_id::text || ':' || s.step_id))`

// EnqueueSteps adds an outbox row for each step of keys that is waiting
// with no parents left (across any number of workflows), marks those steps
// enqueued and returns them; like Workflows.Create, the row carries
// stepTaskOptions. The steps are marked first and the rows inserted from
// what that returns: one pass, whatever the number of steps.
func (r *Workflows) EnqueueSteps(ctx context.Context, keys []StepKey) ([]ReadyStep, error) {
	wfs, steps := splitKeys(keys)
	out := []ReadyStep{}
	err := r.q.SelectContext(ctx, &out,
		`WITH ready AS (
		     UPDATE workflow_steps s SET state = 'enqueued', enqueued_at = now()
		       FROM unnest($1::uuid[], $2::text[]) AS u(wf, step)
		      WHERE s.workflow_id = u.wf AND s.step_id = u.step AND s.state = 'waiting' AND s.parents_left = 0
		     RETURNING s.workflow_id, s.step_id, s.task_id, s.task_type, s.payload, `+stepTaskOptions+` AS options
		 ), sent AS (
		     INSERT INTO outbox (id, task_type, payload, request_id, options)
		     SELECT ready.task_id, ready.task_type, ready.payload, w.request_id, ready.options
		       FROM ready JOIN workflows w ON w.id = ready.workflow_id
		 )
		 SELECT workflow_id, step_id, task_id FROM ready`, pq.Array(wfs), pq.Array(steps))
	return out, mapErr(err, "enqueue workflow steps")
}

// Progress is how many steps of one workflow a transaction finished.
type Progress struct {
	WorkflowID string
	Finished   int // succeeded, failed or cancelled
	Failed     int // of those, failed or cancelled
}

// SettleAll counts each workflow's finished (and failed) steps and ends
// every running workflow that has no step left open, as succeeded or
// failed, in one statement. It returns the workflows as they are
// afterwards.
func (r *Workflows) SettleAll(ctx context.Context, ps []Progress) ([]Workflow, error) {
	n := len(ps)
	ids, fin, failed := make([]string, n), make([]int64, n), make([]int64, n)
	for i, p := range ps {
		ids[i], fin[i], failed[i] = p.WorkflowID, int64(p.Finished), int64(p.Failed)
	}
	out := []Workflow{}
	err := r.q.SelectContext(ctx, &out,
		`UPDATE workflows w SET steps_open = w.steps_open - u.fin, steps_failed = w.steps_failed + u.failed,
		        updated_at = now(),
		        state = CASE WHEN w.state = 'running' AND w.steps_open - u.fin <= 0
		                     THEN CASE WHEN w.steps_failed + u.failed > 0 THEN 'failed' ELSE 'succeeded' END
		                     ELSE w.state END,
		        finished_at = CASE WHEN w.state = 'running' AND w.steps_open - u.fin <= 0 THEN now() ELSE w.finished_at END
		   FROM unnest($1::uuid[], $2::int[], $3::int[]) AS u(id, fin, failed)
		  WHERE w.id = u.id RETURNING `+workflowCols, pq.Array(ids), pq.Array(fin), pq.Array(failed))
	return out, mapErr(err, "settle workflows")
}

// StepStart is when a step's task started.
type StepStart struct {
	StepKey
	At time.Time
}

// StepState returns the state of step stepID of workflow id (anything but
// enqueued means its task must not run: the step is finished or cancelled)
// and whether the step has parents. It only reads: the start itself is
// recorded by RecordStarts, in batches.
func (r *Workflows) StepState(ctx context.Context, id, stepID string) (state string, hasParents bool, err error) {
	var row struct {
		State      string `db:"state"`
		HasParents bool   `db:"has_parents"`
	}
	// Whether it has parents comes with the state, in the same round trip:
	// a step without any (a group's member) then needs no ParentResults
	// query, which every system:ping step would otherwise run.
	err = r.q.GetContext(ctx, &row,
		`SELECT s.state, `+hasParentsSQL+` AS has_parents
		   FROM workflow_steps s WHERE s.workflow_id = $1 AND s.step_id = $2`, id, stepID)
	return row.State, row.HasParents, mapErr(err, "state of step "+stepID+" of workflow "+id)
}

// hasParentsSQL says whether step s has parents: its count of parents, or,
// for a step stored before it had one, whether an edge leads to it. (Looking
// for edges when reading many steps at once let the planner scan every edge
// of the workflow for each step: it cannot tell which step it looks for.)
const hasParentsSQL = `COALESCE(s.parents > 0, EXISTS (SELECT 1 FROM workflow_edges e
	WHERE e.workflow_id = s.workflow_id AND e.child = s.step_id))`

// StepStatus is what a worker reads about a step when its task starts.
type StepStatus struct {
	State      string // anything but enqueued: the task must not run
	HasParents bool   // false: the step has no parent results to read
}

// StepStates is StepState for many steps (of any workflows) in one round
// trip, for the worker, which coalesces the reads of the tasks starting at
// the same time. The result is keyed by keys as given (every workflow ID
// must be a UUID); a step that does not exist is missing from it.
func (r *Workflows) StepStates(ctx context.Context, keys []StepKey) (map[StepKey]StepStatus, error) {
	wfs, steps := splitKeys(keys)
	var rows []struct {
		StepKey
		State      string `db:"state"`
		HasParents bool   `db:"has_parents"`
	}
	err := r.q.SelectContext(ctx, &rows,
		`SELECT u.wf AS workflow_id, s.step_id, s.state, `+hasParentsSQL+` AS has_parents
		   FROM workflow_steps s JOIN unnest($1::text[], $2::text[]) AS u(wf, step)
		        ON s.workflow_id = u.wf::uuid AND s.step_id = u.step`,
		pq.Array(wfs), pq.Array(steps))
	if err != nil {
		return nil, mapErr(err, "state of workflow steps")
	}
	out := make(map[StepKey]StepStatus, len(rows))
	for _, row := range rows {
		out[row.StepKey] = StepStatus{State: row.State, HasParents: row.HasParents}
	}
	return out, nil
}

// RecordStarts sets started_at of the steps of starts that have none yet.
// A row another transaction holds (the step is finishing right now, and
// its finish sets started_at) is skipped rather than waited for, so this
// never waits on, or deadlocks with, the advancement.
func (r *Workflows) RecordStarts(ctx context.Context, starts []StepStart) error {
	n := len(starts)
	wfs, steps, at := make([]string, n), make([]string, n), make([]string, n)
	for i, s := range starts {
		wfs[i], steps[i], at[i] = s.WorkflowID, s.StepID, pgTime(s.At)
	}
	_, err := r.q.ExecContext(ctx,
		`WITH u AS (
		     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(wf, step, at)
		 ), pick AS (
		     SELECT s.workflow_id, s.step_id, u.at FROM u
		       JOIN workflow_steps s ON s.workflow_id = u.wf AND s.step_id = u.step
		      WHERE s.started_at IS NULL
		        FOR UPDATE OF s SKIP LOCKED
		 )
		 UPDATE workflow_steps s SET started_at = pick.at
		   FROM pick WHERE s.workflow_id = pick.workflow_id AND s.step_id = pick.step_id`,
		pq.Array(wfs), pq.Array(steps), pq.Array(at))
	return mapErr(err, "record workflow step starts")
}

func splitKeys(keys []StepKey) (wfs, steps []string) {
	wfs, steps = make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		wfs[i], steps[i] = k.WorkflowID, k.StepID
	}
	return wfs, steps
}

// SucceededBatch is what SucceedSteps did.
type SucceededBatch struct {
	Finished []StepKey   // the steps it moved from enqueued to succeeded
	Enqueued []ReadyStep // the children that became ready, sent to the outbox
	Before   []Workflow  // the workflows it locked, as they were
	After    []Workflow  // those it settled, as they are now
}

// SucceedSteps records ends, every one a success (State is ignored), in
// one statement: what LockAll, FinishSteps, ReleaseChildren, EnqueueSteps
// and SettleAll do one after the other for a batch without a failure, in
// one round trip and, outside a transaction, without BEGIN and COMMIT (a
// statement is atomic on its own). Without a failure there is no cancel
// cascade, so nothing is left for the caller to decide between the steps.
// ends must name each step at most once.
//
// The workflows are locked first, in id order, as LockAll does: the lock
// CTE is read whole by an InitPlan of the finishing UPDATE before it
// changes any row. A row another transaction changed meanwhile is updated
// in its newest version (READ COMMITTED rechecks each UPDATE's conditions
// against it), so concurrent batches over one chord count every parent.
// A waiting child whose parents are all finished is enqueued if its
// workflow was running; a child that has a failed parent and must be
// cancelled for it is never waiting (the batch that failed the parent
// cancelled it).
func (r *Workflows) SucceedSteps(ctx context.Context, ends []StepEnd) (SucceededBatch, error) {
	n := len(ends)
	wfs, steps, results, errs, started, finished := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	retried := make([]int64, n)
	var ids []string
	seen := map[string]bool{}
	for i, e := range ends {
		wfs[i], steps[i], results[i], errs[i] = e.WorkflowID, e.StepID, string(e.Result), e.Error
		started[i], finished[i], retried[i] = pgTime(e.StartedAt), pgTime(e.FinishedAt), int64(e.Retried)
		if !seen[e.WorkflowID] {
			seen[e.WorkflowID] = true
			ids = append(ids, e.WorkflowID)
		}
	}
	var rows []struct {
		Kind   string `db:"kind"`
		StepID string `db:"step_id"`
		TaskID string `db:"task_id"`
		Workflow
	}
	err := r.q.SelectContext(ctx, &rows, succeedStepsSQL,
		pq.Array(ids), pq.Array(wfs), pq.Array(steps), pq.Array(results), pq.Array(errs),
		pq.Array(started), pq.Array(finished), pq.Array(retried))
	if err != nil {
		return SucceededBatch{}, mapErr(err, "record succeeded workflow steps")
	}
	var out SucceededBatch
	for _, row := range rows {
		switch row.Kind {
		case "f":
			out.Finished = append(out.Finished, StepKey{WorkflowID: row.ID, StepID: row.StepID})
		case "e":
			out.Enqueued = append(out.Enqueued, ReadyStep{StepKey: StepKey{WorkflowID: row.ID, StepID: row.StepID}, TaskID: row.TaskID})
		case "b":
			out.Before = append(out.Before, row.Workflow)
		case "a":
			out.After = append(out.After, row.Workflow)
		}
	}
	return out, nil
}

// succeedStepsSQL is SucceedSteps' statement. Its answer is one row per
// thing done, told apart by kind: f a step finished, e a child enqueued
// (with its task ID), b a workflow as locked, a a workflow as settled; the
// workflow columns of f and e rows are placeholders but for the ID.
const succeedStepsSQL = `WITH u AS (
	     SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[])
	            AS u(wf, step, result, error, started, finished, retried)
	 ), lock AS MATERIALIZED (
	     SELECT ` + workflowCols + ` FROM workflows w WHERE w.id = ANY($1::uuid[]) ORDER BY w.id FOR UPDATE
	 ), fin AS (
	     UPDATE workflow_steps s
	        SET state = 'succeeded', result = NULLIF(u.result, '')::jsonb, error = u.error,
	            started_at = COALESCE(s.started_at, NULLIF(u.started, '')::timestamptz),
	            finished_at = COALESCE(NULLIF(u.finished, '')::timestamptz, now()), retried = u.retried
	       FROM u
	      WHERE s.workflow_id = u.wf AND s.step_id = u.step AND s.state = 'enqueued'
	        AND u.wf = ANY (ARRAY(SELECT id FROM lock))
	     RETURNING s.workflow_id, s.step_id
	 ), agg AS (
	     SELECT e.workflow_id, e.child, count(*)::int AS n
	       FROM fin JOIN workflow_edges e ON e.workflow_id = fin.workflow_id AND e.parent = fin.step_id
	      GROUP BY e.workflow_id, e.child
	 ), rel AS (
	     UPDATE workflow_steps s
	        SET parents_left = s.parents_left - agg.n,
	            state = CASE WHEN s.parents_left - agg.n = 0 AND l.state = 'running' THEN 'enqueued' ELSE s.state END,
	            enqueued_at = CASE WHEN s.parents_left - agg.n = 0 AND l.state = 'running' THEN now() ELSE s.enqueued_at END
	       FROM agg JOIN lock l ON l.id = agg.workflow_id
	      WHERE s.workflow_id = agg.workflow_id AND s.step_id = agg.child AND s.state = 'waiting'
	     RETURNING s.workflow_id, s.step_id, s.state, s.task_id, s.task_type, s.payload, l.request_id,
	               ` + stepTaskOptions + ` AS options
	 ), sent AS (
	     INSERT INTO outbox (id, task_type, payload, request_id, options)
	     SELECT task_id, task_type, payload, request_id, options FROM rel WHERE state = 'enqueued'
	 ), cnt AS (
	     SELECT workflow_id, count(*)::int AS fin FROM fin GROUP BY workflow_id
	 ), settle AS (
	     UPDATE workflows w SET steps_open = w.steps_open - cnt.fin, updated_at = now(),
	            state = CASE WHEN w.state = 'running' AND w.steps_open - cnt.fin <= 0
	                         THEN CASE WHEN w.steps_failed > 0 THEN 'failed' ELSE 'succeeded' END
	                         ELSE w.state END,
	            finished_at = CASE WHEN w.state = 'running' AND w.steps_open - cnt.fin <= 0 THEN now() ELSE w.finished_at END
	       FROM cnt WHERE w.id = cnt.workflow_id
	     RETURNING ` + workflowCols + `
	 )
	 SELECT 'b' AS kind, '' AS step_id, '' AS task_id, w.* FROM lock w
	 UNION ALL SELECT 'a', '', '', w.* FROM settle w
	 UNION ALL SELECT 'f', step_id, '', workflow_id, '', '', 0, 0, 0, '', now(), now(), NULL::timestamptz FROM fin
	 UNION ALL SELECT 'e', step_id, task_id::text, workflow_id, '', '', 0, 0, 0, '', now(), now(), NULL::timestamptz
	             FROM rel WHERE state = 'enqueued'`
