package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
)

// HeaderWorkflowStep is the header of a task that runs a workflow step:
// "<workflow id>:<step id>". The outbox writes it (store.Workflows.Create, EnqueueSteps); the
// Mux reads it to tell the workflow how the step ended.
const HeaderWorkflowStep = store.HeaderWorkflowStep

// StepRef names one step of one workflow.
type StepRef struct {
	WorkflowID string
	StepID     string
}

// stepRef reads t's HeaderWorkflowStep; ok is false for a plain task.
func stepRef(t *asynq.Task) (StepRef, bool) {
	h := t.Headers()[HeaderWorkflowStep]
	wf, step, ok := strings.Cut(h, ":") // workflow IDs are UUIDs: no colon
	if !ok || wf == "" || step == "" {
		return StepRef{}, false
	}
	return StepRef{WorkflowID: wf, StepID: step}, true
}

// StepOutcome is how a step's task ended for good: succeeded (with the
// result the handler set, if any) or failed (archived: Permanent, retries
// exhausted, or expired).
type StepOutcome struct {
	Succeeded  bool
	Result     json.RawMessage
	Error      string
	StartedAt  time.Time // when the final attempt started; zero: unknown
	FinishedAt time.Time
}

// StepReporter records a step's outcome and advances its workflow
// (internal/workflow.Advancer). A duplicate report must change nothing.
// StepStarted notes when a step's task starts; it must not block (the time
// is shown to operators, nothing depends on it).
type StepReporter interface {
	StepStarted(ref StepRef, at time.Time)
	StepFinished(ctx context.Context, ref StepRef, o StepOutcome) error
}

// StepStateReader reads a step's state and whether it has parents when its
// task starts. A StepReporter that implements it (internal/workflow.Advancer,
// which coalesces the reads of tasks starting together into one query) is
// used for that; otherwise the Mux queries PostgreSQL once per task.
type StepStateReader interface {
	StepState(ctx context.Context, ref StepRef) (state string, hasParents bool, err error)
}

// ParentResult is one parent of the running step: its outcome and result.
type ParentResult = store.ParentResult

type parentsKey struct{}

// ParentResults returns the results of the running step's parents, in the
// order the workflow lists them: how a chord's callback reads its group's
// results. A parent that failed (its child ran with if_parent_failed: run)
// has State "failed" and its Error. Outside a workflow step it returns nil.
func ParentResults(ctx context.Context) ([]ParentResult, error) {
	load, ok := ctx.Value(parentsKey{}).(func(context.Context) ([]ParentResult, error))
	if !ok {
		return nil, nil
	}
	return load(ctx)
}

// stepHook connects the Mux to workflows: before a step's task runs it checks
// that the step is still due (the task of a cancelled or succeeded step is
// dropped: a duplicate delivery or a cancellation that raced) and makes
// ParentResults work; after the task's final attempt
// it reports the outcome. Plain tasks pass through untouched.
type stepHook struct {
	db       *sqlx.DB
	reporter StepReporter
	log      *slog.Logger
}

// stepRun is a workflow step whose task is running.
type stepRun struct {
	ref     StepRef
	started time.Time
}

// begin prepares ctx for t. run is false when the task must not run (its
// step succeeded or was cancelled); then the task completes without a
// handler. step is nil for a plain task. It only reads the step's state:
// the start time goes to the reporter, which writes it in batches.
func (h *stepHook) begin(ctx context.Context, t *asynq.Task) (_ context.Context, step *stepRun, run bool) {
	ref, isStep := stepRef(t)
	if !isStep || h == nil || h.db == nil {
		return ctx, nil, true
	}
	started := time.Now()
	steps := store.NewWorkflows(h.db)
	var state string
	var hasParents bool
	var err error
	if r, ok := h.reporter.(StepStateReader); ok {
		state, hasParents, err = r.StepState(ctx, ref)
	} else {
		state, hasParents, err = steps.StepState(ctx, ref.WorkflowID, ref.StepID)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.log.Warn("workflow step not found; task dropped", "workflow_id", ref.WorkflowID, "step_id", ref.StepID)
		return ctx, nil, false
	case err != nil:
		// Postgres trouble: run anyway; the outcome is reported (or
		// reconciled) later, and the handler is idempotent.
		h.log.Warn("workflow step state unknown; running it", "workflow_id", ref.WorkflowID, "step_id", ref.StepID, "err", err)
	case state == store.StepFailed:
		// An operator re-running an archived step's task (dashboard "Run"):
		// the handler runs, so its business effect happens, but the step's
		// outcome is final and the workflow does not change.
		h.log.Warn("re-running the task of a failed workflow step; the workflow will not change",
			"workflow_id", ref.WorkflowID, "step_id", ref.StepID)
	case state != store.StepEnqueued:
		h.log.Info("workflow step already "+state+"; task dropped", "workflow_id", ref.WorkflowID, "step_id", ref.StepID)
		return ctx, nil, false
	}
	if h.reporter != nil {
		h.reporter.StepStarted(ref, started)
	}
	ctx = withState(ctx, resultWriter(t))
	noParents := err == nil && !hasParents // known to have none: nothing to read
	ctx = context.WithValue(ctx, parentsKey{}, func(ctx context.Context) ([]ParentResult, error) {
		if noParents {
			return []ParentResult{}, nil
		}
		return steps.ParentResults(ctx, ref.WorkflowID, ref.StepID)
	})
	return ctx, &stepRun{ref: ref, started: started}, true
}

// end reports a step's final outcome; a retried or throttled attempt reports nothing. A
// report that fails is left to the reconciler (internal/workflow), which
// reads the outcome back from asynq.
func (h *stepHook) end(ctx context.Context, step *stepRun, outcome string, err error) {
	if step == nil || h.reporter == nil || outcome == OutcomeRetried || outcome == OutcomeThrottled {
		return
	}
	o := StepOutcome{Succeeded: outcome == OutcomeSucceeded, StartedAt: step.started, FinishedAt: time.Now()}
	if o.Succeeded {
		if s, ok := ctx.Value(stateKey{}).(*taskState); ok {
			s.mu.Lock()
			o.Result = s.env.Result
			s.mu.Unlock()
		}
	} else if err != nil {
		o.Error = err.Error()
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := h.reporter.StepFinished(rctx, step.ref, o); rerr != nil {
		h.log.Error("workflow step outcome not recorded; the reconciler will", "workflow_id", step.ref.WorkflowID,
			"step_id", step.ref.StepID, "err", rerr)
	}
}
