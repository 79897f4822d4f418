package queue

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Gone answers for task id when it is in no queue (GET /api/v1/tasks/{id}).
// A workflow step's task whose step has finished is shown from its step in
// PostgreSQL: state completed (the step succeeded) or archived (it failed),
// with the step's result, error, retries and finish time. A step's task
// stays in Redis only for its type's retention (a system:ping step's not at
// all: tasks/retention.go), while the step keeps its outcome for the
// workflow's lifetime. Anything else is the *MissingTask that says why the
// task is missing (Missing). d may be nil (no database).
func (c *Client) Gone(ctx context.Context, d store.Querier, id string) (TaskInfo, error) {
	if d == nil || !store.IsUUID(id) {
		return TaskInfo{}, c.Missing(ctx, nil, id)
	}
	row, err := store.NewOutbox(d).Get(ctx, id)
	if err != nil {
		// Not an outbox row, or PostgreSQL cannot say: the generic answer.
		return TaskInfo{}, c.Missing(ctx, nil, id)
	}
	if info, ok := c.stepTask(ctx, d, row); ok {
		return info, nil
	}
	return TaskInfo{}, c.missingRow(row)
}

// stepTask is the task of outbox row row as its workflow step shows it;
// ok is false unless row is a step's task and the step has succeeded or
// failed.
func (c *Client) stepTask(ctx context.Context, d store.Querier, row store.OutboxEntry) (_ TaskInfo, ok bool) {
	_, headers, err := rowOptions(row.Options)
	wf, stepID, isStep := strings.Cut(headers[tasks.HeaderWorkflowStep], ":")
	if err != nil || !isStep || !store.IsUUID(wf) {
		return TaskInfo{}, false
	}
	s, err := store.NewWorkflows(d).Step(ctx, wf, stepID)
	if err != nil || s.TaskID != row.ID {
		return TaskInfo{}, false
	}
	info := TaskInfo{ID: row.ID, Type: s.TaskType, Queue: s.Queue, LastError: s.Error, Payload: s.Payload}
	switch s.State {
	case store.StepSucceeded:
		info.State, info.CompletedAt, info.Result = "completed", s.FinishedAt, s.Result
	case store.StepFailed:
		info.State = "archived"
	default: // cancelled: its task was deleted and never ran to an end
		return TaskInfo{}, false
	}
	if s.Retried != nil {
		info.Retried = *s.Retried
	}
	var o store.TaskOptions
	if json.Unmarshal(s.Options, &o) == nil && o.MaxRetry != nil {
		info.MaxRetry = *o.MaxRetry
	} else if t, ok := c.reg.Lookup(s.TaskType); ok {
		info.MaxRetry = t.Opts.MaxRetry
	}
	return info, true
}
