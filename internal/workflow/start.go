package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// StartOptions tune Start.
type StartOptions struct {
	// RequestID travels with every step's task (worker logs).
	RequestID string
	// Queues, when not nil, are the queues the workers serve: a step on any
	// other queue is refused (steps[i].queue).
	Queues map[string]int
}

// Start validates s and stores it as a running workflow in q, adding the
// tasks of its steps without parents to the outbox, in one statement
// (store.Workflows.Create): nothing reaches Redis before it commits, and
// nothing at all if it rolls back. q may be a transaction or the database
// itself. Once committed, hand the view's Outbox() to a queue.Dispatcher to
// send them at once (otherwise the relay's poll does). Invalid specs return
// tasks.FieldErrors naming steps[i].field and store nothing.
func Start(ctx context.Context, q store.Querier, reg *tasks.Registry, s Spec, o StartOptions) (View, error) {
	nw, err := Prepare(reg, s, o)
	if err != nil {
		return View{}, err
	}
	w, created, err := store.NewWorkflows(q).Create(ctx, nw)
	if err != nil {
		return View{}, err
	}
	v := View{ID: w.ID, Name: w.Name, State: w.State, CreatedAt: w.CreatedAt, Steps: make([]StepView, len(s.Steps))}
	for i, st := range nw.Steps {
		after := st.After
		if after == nil {
			after = []string{}
		}
		v.Steps[i] = StepView{ID: st.StepID, Type: st.TaskType, State: created[i].State, TaskID: created[i].TaskID,
			After: after, Queue: st.Queue}
	}
	return v, nil
}

// Prepare validates s and returns it as the store writes it, for a caller
// that stores the workflow together with its own row in one statement
// (store.Orders.CreateWithWorkflow); Start is Prepare and
// store.Workflows.Create. Invalid specs return tasks.FieldErrors naming
// steps[i].field.
func Prepare(reg *tasks.Registry, s Spec, o StartOptions) (store.NewWorkflow, error) {
	if err := Validate(reg, o.Queues, s); err != nil {
		return store.NewWorkflow{}, err
	}
	steps := make([]store.NewWorkflowStep, len(s.Steps))
	for i, st := range s.Steps {
		typ, _ := reg.Lookup(st.Type)
		opts := store.TaskOptions{Queue: st.Queue, MaxRetry: st.MaxRetry}
		if st.Timeout != nil {
			opts.Timeout = *st.Timeout
		}
		if st.Countdown != nil {
			opts.Countdown = *st.Countdown
		}
		rawOpts, err := json.Marshal(opts)
		if err != nil {
			return store.NewWorkflow{}, fmt.Errorf("encode step %s options: %w", st.ID, err)
		}
		payload := st.Payload
		if isNullPayload(payload) {
			payload = json.RawMessage("{}")
		}
		queue := st.Queue
		if queue == "" {
			queue = typ.Opts.Queue
		}
		mode := st.IfParentFailed
		if mode == "" {
			mode = IfParentFailedCancel
		}
		steps[i] = store.NewWorkflowStep{StepID: st.ID, TaskType: st.Type, Payload: payload, Options: rawOpts,
			Queue: queue, IfParentFailed: mode, After: st.After}
	}
	return store.NewWorkflow{Name: s.Name, RequestID: o.RequestID, Steps: steps}, nil
}

// View is a workflow as the API shows it.
type View struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Steps      []StepView `json:"steps"`
}

// StepView is one step of a View.
type StepView struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	State string `json:"state"`
	// TaskID is the step's task: in the queue once the step is enqueued
	// (GET /api/v1/tasks/{id}), chosen when the workflow starts.
	TaskID     string          `json:"task_id"`
	Queue      string          `json:"queue"`
	After      []string        `json:"after"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	EnqueuedAt *time.Time      `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

// Outbox returns the IDs of the outbox rows of the steps v shows enqueued
// (a step's task ID is its outbox row's): after Start, the rows to hand to
// a queue.Dispatcher once the transaction has committed.
func (v View) Outbox() []string {
	var ids []string
	for _, s := range v.Steps {
		if s.State == store.StepEnqueued {
			ids = append(ids, s.TaskID)
		}
	}
	return ids
}

// Finished reports whether the workflow has ended.
func (v View) Finished() bool { return v.State != store.WorkflowRunning }

// Get reads workflow id with its steps (store.ErrNotFound if none).
func Get(ctx context.Context, q store.Querier, id string) (View, error) {
	wfs := store.NewWorkflows(q)
	w, err := wfs.Get(ctx, id)
	if err != nil {
		return View{}, err
	}
	steps, err := wfs.Steps(ctx, id)
	if err != nil {
		return View{}, err
	}
	v := View{ID: w.ID, Name: w.Name, State: w.State, CreatedAt: w.CreatedAt, FinishedAt: w.FinishedAt,
		Steps: make([]StepView, len(steps))}
	for i, s := range steps {
		after := []string(s.After)
		if after == nil {
			after = []string{}
		}
		v.Steps[i] = StepView{ID: s.StepID, Type: s.TaskType, State: s.State, TaskID: s.TaskID, Queue: s.Queue,
			After: after, Result: s.Result, Error: s.Error, EnqueuedAt: s.EnqueuedAt, StartedAt: s.StartedAt,
			FinishedAt: s.FinishedAt}
	}
	return v, nil
}
