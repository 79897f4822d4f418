package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/limits"
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
	Retried    int // retries before the final attempt
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
	// declared is each type's Opts.Retention: a step's result is written
	// to Redis only when its task is kept there (keepsResult); it reaches
	// PostgreSQL through the reporter either way.
	declared map[string]time.Duration
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
	var w io.Writer // nil: the result stays in memory, for the reporter
	if keepsResult(h.declared[t.Type()], t) {
		w = resultWriter(t)
	}
	ctx = withState(ctx, w)
	noParents := err == nil && !hasParents // known to have none: nothing to read
	ctx = context.WithValue(ctx, parentsKey{}, func(ctx context.Context) ([]ParentResult, error) {
		if noParents {
			return []ParentResult{}, nil
		}
		return steps.ParentResults(ctx, ref.WorkflowID, ref.StepID)
	})
	return ctx, &stepRun{ref: ref, started: started}, true
}

// ErrStepNotRecorded is returned for a workflow step's task that
// succeeded but whose outcome could not be recorded in PostgreSQL: the task
// must not complete, since nothing of it may be kept in Redis for the
// reconciler to read back (its type's retention: a system:ping step's task
// is deleted as it completes), so asynq runs it again. It is no failure
// (IsFailure): the retry spends none of the task's retries.
var ErrStepNotRecorded = errors.New("workflow step outcome not recorded")

// IsFailure is the worker's asynq IsFailure: a throttled attempt and a step
// whose outcome could not be recorded spend no retry.
func IsFailure(err error) bool {
	return limits.IsFailure(err) && !errors.Is(err, ErrStepNotRecorded)
}

// end reports a step's final outcome; a retried or throttled attempt
// reports nothing. It returns an error only for a succeeded step whose
// outcome could not be recorded (ErrStepNotRecorded): the task runs again,
// and a run after an outcome that did commit finds the step succeeded and
// is dropped. On the task's last attempt asynq archives it on any error, so
// there the report is tried again in the worker's slot until it is recorded
// or the task's context ends (its deadline, or the worker's shutdown). A
// failed step's report that fails is left to the reconciler
// (internal/workflow), which finds the archived task in Redis.
func (h *stepHook) end(ctx context.Context, step *stepRun, outcome string, err error) error {
	if step == nil || h.reporter == nil || outcome == OutcomeRetried || outcome == OutcomeThrottled {
		return nil
	}
	attempt := CurrentAttempt(ctx)
	o := StepOutcome{Succeeded: outcome == OutcomeSucceeded, StartedAt: step.started, FinishedAt: time.Now(),
		Retried: attempt.Retried}
	if o.Succeeded {
		if s, ok := ctx.Value(stateKey{}).(*taskState); ok {
			s.mu.Lock()
			o.Result = s.env.Result
			s.mu.Unlock()
		}
	} else if err != nil {
		o.Error = err.Error()
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		rerr := h.reporter.StepFinished(rctx, step.ref, o)
		cancel()
		switch {
		case rerr == nil:
			return nil
		case !o.Succeeded:
			h.log.Error("workflow step outcome not recorded; the reconciler will", "workflow_id", step.ref.WorkflowID,
				"step_id", step.ref.StepID, "err", rerr)
			return nil
		case !attempt.Last():
			h.log.Error("workflow step outcome not recorded; the task will run again", "workflow_id", step.ref.WorkflowID,
				"step_id", step.ref.StepID, "err", rerr)
			return fmt.Errorf("%w: %w", ErrStepNotRecorded, rerr)
		}
		h.log.Error("workflow step outcome not recorded on the task's last attempt; trying again",
			"workflow_id", step.ref.WorkflowID, "step_id", step.ref.StepID, "retry_in", wait, "err", rerr)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrStepNotRecorded, rerr)
		case <-time.After(wait):
		}
	}
}
