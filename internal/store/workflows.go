package store

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// Workflow states.
const (
	WorkflowRunning   = "running"
	WorkflowSucceeded = "succeeded"
	WorkflowFailed    = "failed"
	WorkflowCancelled = "cancelled"
)

// Workflow step states. A step is waiting until all its parents are
// finished, enqueued from then until its task's outcome is recorded, and
// then succeeded, failed or cancelled for good.
const (
	StepWaiting   = "waiting"
	StepEnqueued  = "enqueued"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepCancelled = "cancelled"
)

// Workflow is a row of workflows.
type Workflow struct {
	ID          string     `db:"id" json:"id"`
	Name        string     `db:"name" json:"name"`
	State       string     `db:"state" json:"state"`
	StepsTotal  int        `db:"steps_total" json:"steps_total"`
	StepsOpen   int        `db:"steps_open" json:"-"`
	StepsFailed int        `db:"steps_failed" json:"-"`
	RequestID   string     `db:"request_id" json:"-"`
	CreatedAt   time.Time  `db:"created_at" json:"created_at"`
	UpdatedAt   time.Time  `db:"updated_at" json:"updated_at"`
	FinishedAt  *time.Time `db:"finished_at" json:"finished_at"`
}

// Strings is a text[] column read as a Go slice.
type Strings []string

// Scan implements sql.Scanner.
func (s *Strings) Scan(src any) error {
	var a pq.StringArray
	if err := a.Scan(src); err != nil {
		return err
	}
	*s = Strings(a)
	return nil
}

// Value implements driver.Valuer.
func (s Strings) Value() (driver.Value, error) { return pq.StringArray(s).Value() }

// WorkflowStep is a row of workflow_steps, with After (its parents) read
// from workflow_edges.
type WorkflowStep struct {
	WorkflowID     string          `db:"workflow_id"`
	StepID         string          `db:"step_id"`
	Position       int             `db:"position"`
	TaskType       string          `db:"task_type"`
	Payload        json.RawMessage `db:"payload"`
	Options        json.RawMessage `db:"options"`
	Queue          string          `db:"queue"`
	IfParentFailed string          `db:"if_parent_failed"`
	State          string          `db:"state"`
	ParentsLeft    int             `db:"parents_left"`
	ParentFailed   bool            `db:"parent_failed"`
	TaskID         string          `db:"task_id"`
	Result         json.RawMessage `db:"result"`
	Error          string          `db:"error"`
	EnqueuedAt     *time.Time      `db:"enqueued_at"`
	StartedAt      *time.Time      `db:"started_at"`
	FinishedAt     *time.Time      `db:"finished_at"`
	CheckedAt      *time.Time      `db:"checked_at"`
	// Retried is how many times the step's task was retried before the
	// attempt that ended it; nil when not recorded (cancelled, or finished
	// before it was).
	Retried *int    `db:"retried"`
	After   Strings `db:"after"`
}

// NewWorkflowStep is one validated step to store.
type NewWorkflowStep struct {
	StepID         string
	TaskType       string
	Payload        json.RawMessage
	Options        json.RawMessage // TaskOptions as JSON; nil: {}
	Queue          string          // the queue the task will run on
	IfParentFailed string          // "cancel" or "run"
	After          []string
}

// NewWorkflow is a validated workflow to store (workflow.Prepare builds
// one).
type NewWorkflow struct {
	Name      string
	RequestID string // travels with every step's task
	Steps     []NewWorkflowStep
}

// CreatedStep is a step as Create stored it.
type CreatedStep struct {
	StepID string `json:"step_id"`
	// TaskID is the step's future task ID, which is also its outbox row's.
	TaskID string `json:"task_id"`
	// State is StepEnqueued for a step without parents (its outbox row was
	// added), StepWaiting for the others.
	State string `json:"state"`
}

// Workflows is the workflows repository. Every method that changes a
// workflow's steps expects the caller to hold the workflow's row lock (Lock),
// which serialises advancement per workflow and so rules out deadlocks.
type Workflows struct{ q Querier }

// NewWorkflows returns a repository over q.
func NewWorkflows(q Querier) *Workflows { return &Workflows{q: q} }

// Create inserts nw as a running workflow with its steps and edges, and
// enqueues its steps without parents (each marked enqueued, with its outbox
// row), all in one statement whatever the number of steps: atomic on its
// own, so q need not be a transaction. It returns the workflow and its
// steps in the order given.
func (r *Workflows) Create(ctx context.Context, nw NewWorkflow) (Workflow, []CreatedStep, error) {
	ctes, args, _, steps := workflowsInsert([]NewWorkflow{nw}, 0)
	var w Workflow
	err := r.q.GetContext(ctx, &w, `WITH `+ctes+` SELECT w.* FROM w`, args...)
	if err != nil {
		return Workflow{}, nil, mapErr(err, "create workflow")
	}
	return w, steps[0], nil
}

// workflowsInsert returns the common table expressions that insert nws
// (w: the workflow rows, s: their steps, e: their edges, plus the outbox
// rows of the steps without parents) and their arguments, numbered from
// $(first+1) so that a caller can put its own before them
// (Orders.CreateManyWithWorkflows).
//
// The workflows' and the steps' task IDs are chosen here (newID), so the
// caller knows them without reading them back; it returns each workflow's
// ID and steps as stored, in nws's order.
//
// One round trip for any number of workflows and steps: a step without
// parents is inserted already enqueued, with its outbox row built from what
// the step insert returns (stepTaskOptions: the step's options and the
// HeaderWorkflowStep header, so the worker knows which step it runs). Steps
// and edges name their workflow by the ID chosen here (they have no foreign
// key to it: migration 00100).
func workflowsInsert(nws []NewWorkflow, first int) (ctes string, args []any, wfIDs []string, steps [][]CreatedStep) {
	n := 0
	for _, nw := range nws {
		n += len(nw.Steps)
	}
	wfIDs, steps = make([]string, len(nws)), make([][]CreatedStep, len(nws))
	names, totals, requests := make([]string, len(nws)), make([]int64, len(nws)), make([]string, len(nws))
	stepWFs, ids, types, payloads := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	options, queues, modes, taskIDs := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	positions, parents := make([]int64, 0, n), make([]int64, 0, n)
	edgeWFs, edgeParents, edgeChildren := []string{}, []string{}, []string{}
	for w, nw := range nws {
		wf := newID()
		wfIDs[w], names[w], totals[w], requests[w] = wf, nw.Name, int64(len(nw.Steps)), nw.RequestID
		steps[w] = make([]CreatedStep, len(nw.Steps))
		for i, s := range nw.Steps {
			opts := "{}"
			if len(s.Options) > 0 {
				opts = string(s.Options)
			}
			task := newID()
			stepWFs, ids, types, payloads = append(stepWFs, wf), append(ids, s.StepID), append(types, s.TaskType), append(payloads, string(s.Payload))
			options, queues, modes, taskIDs = append(options, opts), append(queues, s.Queue), append(modes, s.IfParentFailed), append(taskIDs, task)
			positions, parents = append(positions, int64(i)), append(parents, int64(len(s.After)))
			steps[w][i] = CreatedStep{StepID: s.StepID, TaskID: task, State: StepWaiting}
			if len(s.After) == 0 {
				steps[w][i].State = StepEnqueued
			}
			for _, p := range s.After {
				edgeWFs, edgeParents, edgeChildren = append(edgeWFs, wf), append(edgeParents, p), append(edgeChildren, s.StepID)
			}
		}
	}
	a := func(i int) string { return "$" + strconv.Itoa(first+i) }
	ctes = `w AS (
		     INSERT INTO workflows (id, name, steps_total, steps_open, request_id)
		     SELECT w.id, w.name, w.n, w.n, w.req
		       FROM unnest(` + a(1) + `::uuid[], ` + a(2) + `::text[], ` + a(3) + `::int[], ` + a(4) + `::text[]) AS w(id, name, n, req)
		     RETURNING *
		 ), s AS (
		     INSERT INTO workflow_steps (workflow_id, task_id, step_id, position, task_type, payload, options, queue,
		                                 if_parent_failed, parents_left, parents, state, enqueued_at)
		     SELECT s.wf, s.task, s.id, s.pos, s.typ, s.payload::jsonb, s.opts::jsonb, s.queue, s.mode, s.parents, s.parents,
		            CASE WHEN s.parents = 0 THEN 'enqueued' ELSE 'waiting' END,
		            CASE WHEN s.parents = 0 THEN now() END
		       FROM unnest(` + a(5) + `::uuid[], ` + a(6) + `::text[], ` + a(7) + `::int[], ` + a(8) + `::text[], ` + a(9) + `::text[], ` + a(10) + `::text[],
		                   ` + a(11) + `::text[], ` + a(12) + `::text[], ` + a(13) + `::int[], ` + a(14) + `::uuid[])
		            AS s(wf, id, pos, typ, payload, opts, queue, mode, parents, task)
		     RETURNING workflow_id, step_id, task_id, task_type, payload, options, state
		 ), e AS (
		     INSERT INTO workflow_edges (workflow_id, parent, child)
		     SELECT * FROM unnest(` + a(15) + `::uuid[], ` + a(16) + `::text[], ` + a(17) + `::text[])
		 ), sent AS (
		     INSERT INTO outbox (id, task_type, payload, request_id, options)
		     SELECT s.task_id, s.task_type, s.payload, w.request_id, ` + stepTaskOptions + `
		       FROM s JOIN w ON w.id = s.workflow_id WHERE s.state = 'enqueued'
		 )`
	args = []any{pq.Array(wfIDs), pq.Array(names), pq.Array(totals), pq.Array(requests),
		pq.Array(stepWFs), pq.Array(ids), pq.Array(positions), pq.Array(types), pq.Array(payloads), pq.Array(options),
		pq.Array(queues), pq.Array(modes), pq.Array(parents), pq.Array(taskIDs),
		pq.Array(edgeWFs), pq.Array(edgeParents), pq.Array(edgeChildren)}
	return ctes, args, wfIDs, steps
}

// HeaderWorkflowStep is the task header that names a step's workflow and
// step ("<workflow id>:<step id>"); tasks.HeaderWorkflowStep has the same
// value.
const HeaderWorkflowStep = "workflow_step"

// Lock locks workflow id's row until the transaction ends and returns it.
// Every change to a workflow's steps takes this lock first.
func (r *Workflows) Lock(ctx context.Context, id string) (Workflow, error) {
	var w Workflow
	err := r.q.GetContext(ctx, &w, `SELECT * FROM workflows WHERE id = $1 FOR UPDATE`, id)
	return w, mapErr(err, "lock workflow "+id)
}

// Get returns workflow id.
func (r *Workflows) Get(ctx context.Context, id string) (Workflow, error) {
	var w Workflow
	err := r.q.GetContext(ctx, &w, `SELECT * FROM workflows WHERE id = $1`, id)
	return w, mapErr(err, "get workflow "+id)
}

// CancelledTask is the task of a step that Cancel cancelled while enqueued.
type CancelledTask struct {
	TaskID string `db:"task_id"`
	Queue  string `db:"queue"`
}

// Cancel ends running workflow id as cancelled: every waiting or enqueued
// step is cancelled and outbox rows not yet relayed are deleted. It returns
// the tasks that may already be in the queue (the caller removes them) and
// whether the workflow was running.
func (r *Workflows) Cancel(ctx context.Context, id string) ([]CancelledTask, bool, error) {
	res, err := r.q.ExecContext(ctx,
		`UPDATE workflows SET state = 'cancelled', steps_open = 0, updated_at = now(), finished_at = now()
		  WHERE id = $1 AND state = 'running'`, id)
	if err != nil {
		return nil, false, mapErr(err, "cancel workflow "+id)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, false, nil
	}
	queued := []CancelledTask{}
	err = r.q.SelectContext(ctx, &queued,
		`SELECT task_id, queue FROM workflow_steps WHERE workflow_id = $1 AND state = 'enqueued'`, id)
	if err != nil {
		return nil, false, mapErr(err, "cancel workflow steps "+id)
	}
	_, err = r.q.ExecContext(ctx,
		`UPDATE workflow_steps SET state = 'cancelled', finished_at = now(), error = 'workflow cancelled'
		  WHERE workflow_id = $1 AND state IN ('waiting', 'enqueued')`, id)
	if err != nil {
		return nil, false, mapErr(err, "cancel workflow steps "+id)
	}
	unsent := []string{}
	err = r.q.SelectContext(ctx, &unsent,
		`DELETE FROM outbox WHERE id = ANY($1::uuid[]) AND sent_at IS NULL RETURNING id`, pq.Array(taskIDs(queued)))
	if err != nil {
		return nil, false, mapErr(err, "delete unsent outbox rows of workflow "+id)
	}
	gone := make(map[string]bool, len(unsent))
	for _, u := range unsent {
		gone[u] = true
	}
	out := queued[:0]
	for _, q := range queued {
		if !gone[q.TaskID] {
			out = append(out, q)
		}
	}
	return out, true, nil
}

func taskIDs(ts []CancelledTask) []string {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.TaskID
	}
	return ids
}

const stepCols = `s.workflow_id, s.step_id, s.position, s.task_type, s.payload, s.options, s.queue,
	s.if_parent_failed, s.state, s.parents_left, s.parent_failed, s.task_id, COALESCE(s.result, 'null') AS result, s.error,
	s.enqueued_at, s.started_at, s.finished_at, s.checked_at, s.retried`

// stepsSQL reads a workflow's steps with their parents, each parent probed
// by primary key as in parentResultsSQL, whatever the statistics say.
const stepsSQL = `SELECT ` + stepCols + `,
	        COALESCE((SELECT array_agg(p.step_id ORDER BY p.position) FROM workflow_edges e
	                   CROSS JOIN LATERAL (
	                          SELECT p.step_id, p.position FROM workflow_steps p
	                           WHERE p.workflow_id = e.workflow_id AND p.step_id = e.parent LIMIT 1) p
	                   WHERE e.workflow_id = s.workflow_id AND e.child = s.step_id), '{}') AS after
	   FROM workflow_steps s WHERE s.workflow_id = $1 ORDER BY s.position`

// Steps returns every step of workflow id in the order they were given,
// each with its parents.
func (r *Workflows) Steps(ctx context.Context, id string) ([]WorkflowStep, error) {
	out := []WorkflowStep{}
	err := r.q.SelectContext(ctx, &out, stepsSQL, id)
	return out, mapErr(err, "workflow steps "+id)
}

// Step returns step stepID of workflow id (without After).
func (r *Workflows) Step(ctx context.Context, id, stepID string) (WorkflowStep, error) {
	var s WorkflowStep
	err := r.q.GetContext(ctx, &s, `SELECT `+stepCols+`, '{}'::text[] AS after
		FROM workflow_steps s WHERE s.workflow_id = $1 AND s.step_id = $2`, id, stepID)
	return s, mapErr(err, fmt.Sprintf("get step %s of workflow %s", stepID, id))
}

// List returns one page of workflows, newest first, with the total; state
// "" lists every state.
func (r *Workflows) List(ctx context.Context, state string, p Page) ([]Workflow, int64, error) {
	out := []Workflow{}
	err := r.q.SelectContext(ctx, &out, `SELECT * FROM workflows WHERE ($1 = '' OR state = $1)
		ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3`, state, p.Skip, p.Limit)
	if err != nil {
		return nil, 0, mapErr(err, "list workflows")
	}
	var total int64
	if err := r.q.GetContext(ctx, &total, `SELECT count(*) FROM workflows WHERE ($1 = '' OR state = $1)`, state); err != nil {
		return nil, 0, mapErr(err, "count workflows")
	}
	return out, total, nil
}

// ParentResult is a finished parent of a step, as its handler reads it.
type ParentResult struct {
	StepID string          `db:"step_id" json:"step_id"`
	Type   string          `db:"task_type" json:"type"`
	State  string          `db:"state" json:"state"`
	Result json.RawMessage `db:"result" json:"result"`
	Error  string          `db:"error" json:"error,omitempty"`
}

// parentResultsSQL reads a step's parents through its edges, probing each
// parent by primary key. The LATERAL ... LIMIT 1 keeps that plan whatever
// the statistics say: a workflow the last ANALYZE has not seen is estimated
// at a row or two, and for a plain join the planner then chose to rescan
// all the workflow's steps for each edge and filter — 50 million rows
// (14 s) for a chord callback of 10,000 parents, against 30 ms here.
const parentResultsSQL = `
SELECT p.step_id, p.task_type, p.state, COALESCE(p.result, 'null') AS result, p.error
  FROM workflow_edges e
 CROSS JOIN LATERAL (
        SELECT p.step_id, p.task_type, p.state, p.result, p.error, p.position
          FROM workflow_steps p
         WHERE p.workflow_id = e.workflow_id AND p.step_id = e.parent
         LIMIT 1) p
 WHERE e.workflow_id = $1 AND e.child = $2
 ORDER BY p.position`

// ParentResults returns the parents of step stepID in the order the
// workflow gave them.
func (r *Workflows) ParentResults(ctx context.Context, id, stepID string) ([]ParentResult, error) {
	out := []ParentResult{}
	err := r.q.SelectContext(ctx, &out, parentResultsSQL, id, stepID)
	return out, mapErr(err, "parent results of step "+stepID)
}

// StaleStep is an enqueued step the reconciler should look at.
type StaleStep struct {
	WorkflowID string    `db:"workflow_id"`
	StepID     string    `db:"step_id"`
	TaskID     string    `db:"task_id"`
	Queue      string    `db:"queue"`
	EnqueuedAt time.Time `db:"enqueued_at"`
}

// ClaimStale returns up to limit enqueued steps whose task went out (its
// outbox row was relayed, or is gone) more than age ago and that nobody
// checked within age, least recently checked first, and marks them checked.
// It looks at the steps of running workflows (an enqueued step's workflow
// is running), by workflow ID: no index names a step's state, so that
// recording a step's outcome rewrites its row in place (migration 00062).
// The running workflows are listed first (ARRAY(…)) so that the planner
// cannot prefer a scan of every step ever stored, and only those created
// more than age ago (see olderRunning): a busy system's young workflows
// (an order backlog: thousands) are skipped inside the index, where
// looking at each one's steps cost ~70,000 buffers per call.
func (r *Workflows) ClaimStale(ctx context.Context, age time.Duration, limit int) ([]StaleStep, error) {
	out := []StaleStep{}
	err := r.q.SelectContext(ctx, &out,
		`UPDATE workflow_steps s SET checked_at = now()
		   FROM (SELECT s2.workflow_id, s2.step_id FROM workflow_steps s2
		           LEFT JOIN outbox o ON o.id = s2.task_id
		          WHERE s2.workflow_id = ANY (ARRAY(SELECT w.id FROM workflows w
		                                             WHERE `+olderRunning+`))
		            AND s2.state = 'enqueued'
		            AND COALESCE(s2.checked_at, s2.enqueued_at) < now() - make_interval(secs => $1)
		            AND (o.id IS NULL OR o.sent_at IS NOT NULL)
		          ORDER BY COALESCE(s2.checked_at, s2.enqueued_at) LIMIT $2
		          FOR UPDATE OF s2 SKIP LOCKED) pick
		  WHERE s.workflow_id = pick.workflow_id AND s.step_id = pick.step_id
		 RETURNING s.workflow_id, s.step_id, s.task_id, s.queue, s.enqueued_at`, age.Seconds(), limit)
	return out, mapErr(err, "claim stale workflow steps")
}

// olderRunning selects the running workflows created more than $1 seconds
// ago, a range of the index on (state, created_at): the only ones the
// reconciler's statements can match. A workflow's steps are enqueued (and
// checked) and the workflow advanced (updated_at) no earlier than it was
// created, all at PostgreSQL's clock, so a step enqueued or checked more
// than age ago, or a workflow idle for age, belongs to a workflow created
// more than age ago.
const olderRunning = `w.state = 'running' AND w.created_at < now() - make_interval(secs => $1)`

// CountStuck counts running workflows that have not advanced for age and
// have no step that could advance them: every enqueued step (if any) was
// enqueued more than age ago and never started. Like ClaimStale, it looks
// only at workflows created more than age ago, listed first (ARRAY(…)),
// and at each one's steps by its ID in a scalar subquery (LIMIT 1), which
// PostgreSQL runs once per workflow. With NOT EXISTS over the workflows
// themselves, it preferred an anti join that hashed every enqueued step of
// the table (a sequential scan of all steps ever stored: ~68,000 buffers,
// 1.2 s per call on the bench database), and with the subquery alone its
// estimate for the index range was large enough to JIT-compile the
// statement (~0.5 s of CPU per call).
func (r *Workflows) CountStuck(ctx context.Context, age time.Duration) (int64, error) {
	var n int64
	err := r.q.GetContext(ctx, &n,
		`SELECT count(*) FROM unnest(ARRAY(SELECT w.id FROM workflows w
		                                    WHERE `+olderRunning+` AND w.updated_at < now() - make_interval(secs => $1))) AS w(id)
		  WHERE (SELECT 1 FROM workflow_steps s WHERE s.workflow_id = w.id AND s.state = 'enqueued'
		            AND (s.started_at IS NOT NULL OR s.enqueued_at >= now() - make_interval(secs => $1))
		          LIMIT 1) IS NULL`,
		age.Seconds())
	return n, mapErr(err, "count stuck workflows")
}

// DeleteFinishedBefore deletes workflows, with their steps and edges, that
// finished before cutoff (maintenance:cleanup) and returns how many. Steps
// and edges have no foreign key to their workflow (migration 00100): this
// statement is what deletes them with it.
func (r *Workflows) DeleteFinishedBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := r.q.GetContext(ctx, &n,
		`WITH w AS (DELETE FROM workflows WHERE finished_at < $1 RETURNING id),
		      s AS (DELETE FROM workflow_steps WHERE workflow_id IN (SELECT id FROM w)),
		      e AS (DELETE FROM workflow_edges WHERE workflow_id IN (SELECT id FROM w))
		 SELECT count(*) FROM w`, cutoff)
	return n, mapErr(err, "delete finished workflows")
}
