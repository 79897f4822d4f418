package store

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
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
	After          Strings         `db:"after"`
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

// Workflows is the workflows repository. Every method that changes a
// workflow's steps expects the caller to hold the workflow's row lock (Lock),
// which serialises advancement per workflow and so rules out deadlocks.
type Workflows struct{ q Querier }

// NewWorkflows returns a repository over q.
func NewWorkflows(q Querier) *Workflows { return &Workflows{q: q} }

// Create inserts a running workflow with its steps and edges, in one
// statement whatever the number of steps, and returns it with each step's
// future task ID. id is the workflow's ID if the caller chose it (an order
// names its workflow when it is inserted), empty for a new one. Steps are not
// enqueued: call EnqueueReady next, in the same transaction.
func (r *Workflows) Create(ctx context.Context, id, name, requestID string, steps []NewWorkflowStep) (Workflow, []EnqueuedStep, error) {
	n := len(steps)
	ids, types, payloads, options, queues, modes := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	positions, parents := make([]int64, n), make([]int64, n)
	edgeParents, edgeChildren := []string{}, []string{}
	for i, s := range steps {
		ids[i], types[i], payloads[i], queues[i], modes[i] = s.StepID, s.TaskType, string(s.Payload), s.Queue, s.IfParentFailed
		options[i] = "{}"
		if len(s.Options) > 0 {
			options[i] = string(s.Options)
		}
		positions[i], parents[i] = int64(i), int64(len(s.After))
		for _, p := range s.After {
			edgeParents, edgeChildren = append(edgeParents, p), append(edgeChildren, s.StepID)
		}
	}
	// One round trip instead of three: the foreign keys of steps and edges
	// are checked at the end of the statement, when the workflow row exists.
	var row struct {
		Workflow
		Steps json.RawMessage `db:"created_steps"`
	}
	err := r.q.GetContext(ctx, &row,
		`WITH w AS (
		     INSERT INTO workflows (id, name, steps_total, steps_open, request_id)
		     VALUES (COALESCE(NULLIF($4, '')::uuid, gen_random_uuid()), $1, $2, $2, $3) RETURNING *
		 ), s AS (
		     INSERT INTO workflow_steps (workflow_id, step_id, position, task_type, payload, options, queue,
		                                 if_parent_failed, parents_left)
		     SELECT w.id, s.id, s.pos, s.typ, s.payload::jsonb, s.opts::jsonb, s.queue, s.mode, s.parents
		       FROM w, unnest($5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[])
		            AS s(id, pos, typ, payload, opts, queue, mode, parents)
		     RETURNING step_id, task_id
		 ), e AS (
		     INSERT INTO workflow_edges (workflow_id, parent, child)
		     SELECT w.id, e.parent, e.child FROM w, unnest($13::text[], $14::text[]) AS e(parent, child)
		 )
		 SELECT w.*, COALESCE((SELECT json_agg(json_build_object('step_id', s.step_id, 'task_id', s.task_id)) FROM s),
		                      '[]') AS created_steps
		   FROM w`,
		name, n, requestID, id,
		pq.Array(ids), pq.Array(positions), pq.Array(types), pq.Array(payloads), pq.Array(options),
		pq.Array(queues), pq.Array(modes), pq.Array(parents), pq.Array(edgeParents), pq.Array(edgeChildren))
	if err != nil {
		return Workflow{}, nil, mapErr(err, "create workflow")
	}
	var created []struct {
		StepID string `json:"step_id"`
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(row.Steps, &created); err != nil {
		return Workflow{}, nil, fmt.Errorf("create workflow: read its steps: %w", err)
	}
	out := make([]EnqueuedStep, len(created))
	for i, c := range created {
		out[i] = EnqueuedStep{StepID: c.StepID, TaskID: c.TaskID}
	}
	return row.Workflow, out, nil
}

// HeaderWorkflowStep is the task header that names a step's workflow and
// step ("<workflow id>:<step id>"); tasks.HeaderWorkflowStep has the same
// value.
const HeaderWorkflowStep = "workflow_step"

// EnqueuedStep names a step's task.
type EnqueuedStep struct {
	StepID string `db:"step_id"`
	TaskID string `db:"task_id"`
}

// EnqueueReady adds an outbox row for each waiting step of workflow id with
// no parents left (restricted to stepIDs unless nil), marks those steps
// enqueued and returns them. The outbox row carries the step's options and
// the HeaderWorkflowStep header, so the worker knows which step it runs.
func (r *Workflows) EnqueueReady(ctx context.Context, id string, stepIDs []string) ([]EnqueuedStep, error) {
	var filter any
	if stepIDs != nil {
		filter = pq.Array(stepIDs)
	}
	out := []EnqueuedStep{}
	// The steps are marked first and their outbox rows inserted from what
	// that returns: joining the marked rows back to workflow_steps made the
	// planner compare every pair (33 s for a group of 10,000).
	err := r.q.SelectContext(ctx, &out,
		`WITH ready AS (
		     UPDATE workflow_steps s SET state = 'enqueued', enqueued_at = now()
		      WHERE s.workflow_id = $1 AND s.state = 'waiting' AND s.parents_left = 0
		        AND ($2::text[] IS NULL OR s.step_id = ANY($2))
		     RETURNING s.step_id, s.task_id, s.task_type, s.payload, `+stepTaskOptions+` AS options
		 ), sent AS (
		     INSERT INTO outbox (id, task_type, payload, request_id, options)
		     SELECT ready.task_id, ready.task_type, ready.payload, w.request_id, ready.options
		       FROM ready, workflows w WHERE w.id = $1
		 )
		 SELECT step_id, task_id FROM ready`, id, filter)
	return out, mapErr(err, "enqueue workflow steps")
}

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
	s.enqueued_at, s.started_at, s.finished_at, s.checked_at`

// Steps returns every step of workflow id in the order they were given,
// each with its parents.
func (r *Workflows) Steps(ctx context.Context, id string) ([]WorkflowStep, error) {
	out := []WorkflowStep{}
	err := r.q.SelectContext(ctx, &out, `SELECT `+stepCols+`,
		        COALESCE((SELECT array_agg(e.parent ORDER BY p.position) FROM workflow_edges e
		                    JOIN workflow_steps p ON p.workflow_id = e.workflow_id AND p.step_id = e.parent
		                   WHERE e.workflow_id = s.workflow_id AND e.child = s.step_id), '{}') AS after
		   FROM workflow_steps s WHERE s.workflow_id = $1 ORDER BY s.position`, id)
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

// ParentResults returns the parents of step stepID in the order the
// workflow gave them.
func (r *Workflows) ParentResults(ctx context.Context, id, stepID string) ([]ParentResult, error) {
	out := []ParentResult{}
	err := r.q.SelectContext(ctx, &out,
		`SELECT p.step_id, p.task_type, p.state, COALESCE(p.result, 'null') AS result, p.error
		   FROM workflow_edges e JOIN workflow_steps p ON p.workflow_id = e.workflow_id AND p.step_id = e.parent
		  WHERE e.workflow_id = $1 AND e.child = $2 ORDER BY p.position`, id, stepID)
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
func (r *Workflows) ClaimStale(ctx context.Context, age time.Duration, limit int) ([]StaleStep, error) {
	out := []StaleStep{}
	err := r.q.SelectContext(ctx, &out,
		`UPDATE workflow_steps s SET checked_at = now()
		   FROM (SELECT s2.workflow_id, s2.step_id FROM workflow_steps s2
		           LEFT JOIN outbox o ON o.id = s2.task_id
		          WHERE s2.state = 'enqueued'
		            AND COALESCE(s2.checked_at, s2.enqueued_at) < now() - make_interval(secs => $1)
		            AND (o.id IS NULL OR o.sent_at IS NOT NULL)
		          ORDER BY COALESCE(s2.checked_at, s2.enqueued_at) LIMIT $2
		          FOR UPDATE OF s2 SKIP LOCKED) pick
		  WHERE s.workflow_id = pick.workflow_id AND s.step_id = pick.step_id
		 RETURNING s.workflow_id, s.step_id, s.task_id, s.queue, s.enqueued_at`, age.Seconds(), limit)
	return out, mapErr(err, "claim stale workflow steps")
}

// CountStuck counts running workflows that have not advanced for age and
// have no step that could advance them: every enqueued step (if any) was
// enqueued more than age ago and never started.
func (r *Workflows) CountStuck(ctx context.Context, age time.Duration) (int64, error) {
	var n int64
	err := r.q.GetContext(ctx, &n,
		`SELECT count(*) FROM workflows w
		  WHERE w.state = 'running' AND w.updated_at < now() - make_interval(secs => $1)
		    AND NOT EXISTS (SELECT 1 FROM workflow_steps s WHERE s.workflow_id = w.id AND s.state = 'enqueued'
		                      AND (s.started_at IS NOT NULL OR s.enqueued_at >= now() - make_interval(secs => $1)))`,
		age.Seconds())
	return n, mapErr(err, "count stuck workflows")
}

// DeleteFinishedBefore deletes workflows (with their steps) that finished
// before cutoff (maintenance:cleanup) and returns how many.
func (r *Workflows) DeleteFinishedBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := r.q.ExecContext(ctx, `DELETE FROM workflows WHERE finished_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr(err, "delete finished workflows")
	}
	return res.RowsAffected()
}
