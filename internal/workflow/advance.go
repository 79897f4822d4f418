package workflow

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/batch"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Advance is what Finish did.
type Advance struct {
	// Changed is false for a duplicate (or late) report: the step was not
	// enqueued any more, and nothing changed.
	Changed  bool
	Enqueued int            // children sent to the outbox
	Workflow store.Workflow // as it is afterwards
	// Ended: this report ended the workflow (Workflow.State says how).
	Ended bool
}

// Report is one step outcome for FinishBatch.
type Report struct {
	Ref     tasks.StepRef
	Outcome tasks.StepOutcome
}

// Batch is what FinishBatch did.
type Batch struct {
	// Advances has one entry per report, in order. The children a batch
	// enqueued for a workflow, and the workflow's end, are counted once: on
	// the first report of that workflow that changed something.
	Advances []Advance
	// TaskIDs are the tasks of the steps the batch enqueued, which are also
	// the IDs of their outbox rows: a Dispatcher may send them once the
	// transaction has committed.
	TaskIDs []string
}

const cancelledByParent = "cancelled: a parent step failed or was cancelled"

// Finish records how step ref's task ended and advances its workflow, all in
// tx: children whose parents are now all finished are enqueued through the
// outbox, cancel dependents of a failed step are cancelled transitively, and
// the workflow ends when no step is left open. Only an enqueued step can
// finish, so a duplicate report is a no-op (Changed false). It is
// FinishBatch with one report, except that an unknown workflow is
// store.ErrNotFound.
func Finish(ctx context.Context, tx *sqlx.Tx, ref tasks.StepRef, o tasks.StepOutcome) (Advance, error) {
	b, err := FinishBatch(ctx, tx, []Report{{Ref: ref, Outcome: o}})
	if err != nil {
		return Advance{}, err
	}
	if b.Advances[0].Workflow.ID == "" {
		return Advance{}, fmt.Errorf("workflow %s: %w", ref.WorkflowID, store.ErrNotFound)
	}
	return b.Advances[0], nil
}

// FinishBatch records many step outcomes, of any workflows, in tx with a
// fixed number of statements (plus one round per level of a cancel
// cascade), as Finish would one after the other: it locks the workflows in
// id order (so concurrent batches wait rather than deadlock), finishes the
// steps still enqueued (a later report of a step already reported, in this
// batch or before, changes nothing), releases each child once for all its
// parents in the batch, cancels cancel dependents of failed steps
// transitively, enqueues the children that became ready, and settles each
// workflow once. A report of an unknown workflow changes nothing.
func FinishBatch(ctx context.Context, tx *sqlx.Tx, reports []Report) (Batch, error) {
	if allSucceeded(reports) {
		return finishSucceeded(ctx, store.NewWorkflows(tx), reports)
	}
	return finishBatch(ctx, store.NewWorkflows(tx), reports)
}

// allSucceeded says whether every report is a success: then the batch
// needs no cancel cascade and is recorded in one statement
// (finishSucceeded).
func allSucceeded(reports []Report) bool {
	for _, r := range reports {
		if !r.Outcome.Succeeded {
			return false
		}
	}
	return true
}

// finishSucceeded is finishBatch for reports that all succeeded, in one
// statement (store.Workflows.SucceedSteps), which wfs may run outside a
// transaction: it is atomic on its own. Its Batch is the one finishBatch
// returns for the same reports.
func finishSucceeded(ctx context.Context, wfs *store.Workflows, reports []Report) (Batch, error) {
	b := Batch{Advances: make([]Advance, len(reports))}
	if len(reports) == 0 {
		return b, nil
	}
	first, ends := firstEnds(reports, nil)
	done, err := wfs.SucceedSteps(ctx, ends)
	if err != nil {
		return Batch{}, err
	}
	after := make(map[string]store.Workflow, len(done.Before))
	before := make(map[string]store.Workflow, len(done.Before))
	for _, w := range done.Before {
		before[w.ID], after[w.ID] = w, w
	}
	for _, w := range done.After {
		after[w.ID] = w
	}
	for _, k := range done.Finished {
		b.Advances[first[k]].Changed = true
	}
	enqueued := map[string]int{}
	for _, s := range done.Enqueued {
		enqueued[s.WorkflowID]++
		b.TaskIDs = append(b.TaskIDs, s.TaskID)
	}
	b.describe(reports, before, after, enqueued)
	return b, nil
}

// firstEnds indexes the first report of each step, the one recorded, and
// returns the StepEnds that record them, those of workflows keep accepts
// (nil: all).
func firstEnds(reports []Report, keep func(workflowID string) bool) (map[store.StepKey]int, []store.StepEnd) {
	first := make(map[store.StepKey]int, len(reports))
	ends := make([]store.StepEnd, 0, len(reports))
	for i, r := range reports {
		k := store.StepKey{WorkflowID: r.Ref.WorkflowID, StepID: r.Ref.StepID}
		if _, dup := first[k]; dup {
			continue
		}
		first[k] = i
		if keep == nil || keep(k.WorkflowID) {
			ends = append(ends, endOf(k, r.Outcome))
		}
	}
	return first, ends
}

// endOf is the StepEnd that records outcome o of step k.
func endOf(k store.StepKey, o tasks.StepOutcome) store.StepEnd {
	e := store.StepEnd{StepKey: k, State: store.StepSucceeded, Result: o.Result, Error: o.Error,
		StartedAt: o.StartedAt, FinishedAt: o.FinishedAt, Retried: o.Retried}
	if !o.Succeeded {
		e.State, e.Result = store.StepFailed, nil
	}
	return e
}

// describe completes b.Advances, whose Changed is set, from the workflows
// before and after the batch and the children it enqueued per workflow:
// each report gets its workflow as it is now, and the first report that
// changed a workflow carries what the batch did to it.
func (b *Batch) describe(reports []Report, before, after map[string]store.Workflow, enqueued map[string]int) {
	counted := map[string]bool{}
	for i, r := range reports {
		wf := r.Ref.WorkflowID
		adv := &b.Advances[i]
		adv.Workflow = after[wf]
		if !adv.Changed || counted[wf] {
			continue
		}
		counted[wf] = true
		adv.Enqueued = enqueued[wf]
		adv.Ended = before[wf].State == store.WorkflowRunning && after[wf].State != store.WorkflowRunning
	}
}

// finishBatch is FinishBatch over wfs, a repository in a transaction.
func finishBatch(ctx context.Context, wfs *store.Workflows, reports []Report) (Batch, error) {
	b := Batch{Advances: make([]Advance, len(reports))}
	if len(reports) == 0 {
		return b, nil
	}
	var ids []string
	seen := map[string]bool{}
	for _, r := range reports {
		if !seen[r.Ref.WorkflowID] {
			seen[r.Ref.WorkflowID] = true
			ids = append(ids, r.Ref.WorkflowID)
		}
	}
	locked, err := wfs.LockAll(ctx, ids)
	if err != nil {
		return Batch{}, err
	}
	before := make(map[string]store.Workflow, len(locked))
	for _, w := range locked {
		before[w.ID] = w
	}

	first, ends := firstEnds(reports, func(wf string) bool { _, ok := before[wf]; return ok })
	var finished []store.StepKey
	if len(ends) > 0 {
		if finished, err = wfs.FinishSteps(ctx, ends); err != nil {
			return Batch{}, err
		}
	}

	progress := map[string]*store.Progress{}
	count := func(wf string, failed bool) {
		p := progress[wf]
		if p == nil {
			p = &store.Progress{WorkflowID: wf}
			progress[wf] = p
		}
		p.Finished++
		if failed {
			p.Failed++
		}
	}
	done := make([]store.FinishedStep, 0, len(finished))
	for _, k := range finished {
		i := first[k]
		b.Advances[i].Changed = true
		failed := !reports[i].Outcome.Succeeded
		count(k.WorkflowID, failed)
		done = append(done, store.FinishedStep{StepKey: k, Failed: failed})
	}

	// Release children, level by level: a cancelled child releases its own.
	var ready []store.StepKey
	for len(done) > 0 {
		children, err := wfs.ReleaseChildren(ctx, done)
		if err != nil {
			return Batch{}, err
		}
		done = done[:0]
		var cancel []store.StepKey
		for _, c := range children {
			switch {
			case c.ParentFailed && c.IfParentFailed == IfParentFailedCancel:
				cancel = append(cancel, c.StepKey)
			case c.ParentsLeft == 0 && before[c.WorkflowID].State == store.WorkflowRunning:
				ready = append(ready, c.StepKey)
			}
		}
		if len(cancel) == 0 {
			break
		}
		cancelled, err := wfs.CancelWaiting(ctx, cancel, cancelledByParent)
		if err != nil {
			return Batch{}, err
		}
		for _, k := range cancelled {
			count(k.WorkflowID, true)
			done = append(done, store.FinishedStep{StepKey: k, Failed: true})
		}
	}
	enqueued := map[string]int{}
	if len(ready) > 0 {
		sent, err := wfs.EnqueueSteps(ctx, ready)
		if err != nil {
			return Batch{}, err
		}
		for _, s := range sent {
			enqueued[s.WorkflowID]++
			b.TaskIDs = append(b.TaskIDs, s.TaskID)
		}
	}

	after := before
	if len(progress) > 0 {
		ps := make([]store.Progress, 0, len(progress))
		for _, p := range progress {
			ps = append(ps, *p)
		}
		settled, err := wfs.SettleAll(ctx, ps)
		if err != nil {
			return Batch{}, err
		}
		after = make(map[string]store.Workflow, len(before))
		for id, w := range before {
			after[id] = w
		}
		for _, w := range settled {
			after[w.ID] = w
		}
	}
	b.describe(reports, before, after, enqueued)
	return b, nil
}

// Dispatcher sends committed outbox rows to the queue right away, without
// waiting for the relay (queue.Dispatcher). It must not block; the relay
// still delivers whatever it does not.
type Dispatcher interface {
	Dispatch(ids ...string)
}

// maxBatch bounds the reports one transaction records.
const maxBatch = 1000

// startFlushEvery is how often recorded step starts are written.
const startFlushEvery = 100 * time.Millisecond

// Advancer records step outcomes reported by the worker's Mux; it
// implements tasks.StepReporter.
//
// Outcomes are group-committed: a report that arrives while the Advancer is
// idle is recorded at once, in a transaction of its own; reports that arrive
// while a transaction is in flight are gathered and recorded together by the
// next one (FinishBatch). Each reporter waits for the commit of its batch,
// so a task is acknowledged only once its outcome is durable, and a failed
// transaction fails every report of its batch (the reconciler then
// recovers them, as it does for a worker that died).
//
// Step starts are only timestamps: a step's finish records its start, so
// only the starts of steps still running are written, every
// startFlushEvery, without waiting for the WAL flush (a crash may lose
// them). A step that finishes within startFlushEvery of its start (most
// do) costs no write for its start.
//
// The Advancer also reads the state of the steps whose tasks start
// (tasks.StepStateReader), coalescing concurrent reads into one query.
//
// Its statements are prepared once per connection (store.Prepared): they
// are few, run over and over, and cost PostgreSQL more to parse and plan
// than to run.
type Advancer struct {
	db       *sqlx.DB
	prepared *store.Prepared
	dispatch Dispatcher
	metrics  *observe.WorkflowMetrics
	log      *slog.Logger
	states   *stateReads
	outcomes *batch.Coalescer[Report, struct{}]

	startMu    sync.Mutex
	starts     map[store.StepKey]time.Time // steps started and not finished yet
	startTimer bool                        // a flush of starts is due
}

// NewAdvancer returns an Advancer over d. dispatch sends the steps it
// enqueues to the queue after each commit; metrics and dispatch may be nil
// (then the outbox relay delivers them).
func NewAdvancer(d *sqlx.DB, dispatch Dispatcher, metrics *observe.WorkflowMetrics, log *slog.Logger) *Advancer {
	prepared := store.NewPrepared(d)
	a := &Advancer{db: d, prepared: prepared, dispatch: dispatch, metrics: metrics, log: log.With("component", "workflow"),
		states: newStateReads(d, prepared), starts: map[store.StepKey]time.Time{}}
	// A batch is one transaction: it commits all its outcomes or none.
	a.outcomes = batch.New(maxBatch, 30*time.Second, a.record, batch.Linger(lingerFor, lingerBelow), batch.Busy(busyWithin), batch.FailTogether())
	return a
}

// StepState implements tasks.StepStateReader: the state of step ref and
// whether it has parents, read together with those of the other tasks
// starting at the same time.
func (a *Advancer) StepState(ctx context.Context, ref tasks.StepRef) (state string, hasParents bool, err error) {
	return a.states.read(ctx, ref)
}

// StepFinished implements tasks.StepReporter: it returns once the batch
// holding this outcome has committed (or failed), or when ctx ends.
func (a *Advancer) StepFinished(ctx context.Context, ref tasks.StepRef, o tasks.StepOutcome) error {
	// The outcome carries the start: the start need not be written apart.
	// The first start noted is the one kept, as when it is written first.
	k := store.StepKey{WorkflowID: ref.WorkflowID, StepID: ref.StepID}
	a.startMu.Lock()
	if at, ok := a.starts[k]; ok {
		delete(a.starts, k)
		if o.StartedAt.IsZero() || at.Before(o.StartedAt) {
			o.StartedAt = at
		}
	}
	a.startMu.Unlock()
	_, err := a.outcomes.DoContext(ctx, Report{Ref: ref, Outcome: o})
	return err
}

// record finishes one batch atomically (in one statement when every
// outcome succeeded, else in a transaction of its own), then dispatches
// the steps it enqueued.
func (a *Advancer) record(ctx context.Context, reports []Report) ([]struct{}, error) {
	var b Batch
	var err error
	if allSucceeded(reports) {
		// One statement, no transaction around it: one round trip.
		b, err = finishSucceeded(ctx, store.NewWorkflows(a.prepared), reports)
	} else {
		err = db.InTx(ctx, a.db, func(tx *sqlx.Tx) error {
			var err error
			b, err = finishBatch(ctx, store.NewWorkflows(a.prepared.InTx(tx)), reports)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("record %d workflow step outcomes: %w", len(reports), err)
	}
	if a.dispatch != nil && len(b.TaskIDs) > 0 {
		a.dispatch.Dispatch(b.TaskIDs...)
	}
	for i, adv := range b.Advances {
		r := reports[i]
		if !adv.Changed {
			a.log.Info("duplicate workflow step outcome ignored", "workflow_id", r.Ref.WorkflowID, "step_id", r.Ref.StepID)
			continue
		}
		if adv.Enqueued > 0 && !r.Outcome.FinishedAt.IsZero() {
			a.metrics.Advanced(time.Since(r.Outcome.FinishedAt))
		}
		if adv.Ended {
			a.metrics.Finished(adv.Workflow.State)
			a.log.Info("workflow finished", "workflow_id", r.Ref.WorkflowID, "state", adv.Workflow.State)
		}
	}
	return make([]struct{}, len(reports)), nil
}

// StepStarted implements tasks.StepReporter: it notes that step ref's task
// started at at, to be written within startFlushEvery unless the step has
// finished by then; it does not block. A step noted twice (a retried task)
// keeps its first start.
func (a *Advancer) StepStarted(ref tasks.StepRef, at time.Time) {
	k := store.StepKey{WorkflowID: ref.WorkflowID, StepID: ref.StepID}
	a.startMu.Lock()
	if prev, ok := a.starts[k]; !ok || at.Before(prev) {
		a.starts[k] = at
	}
	if !a.startTimer {
		a.startTimer = true
		time.AfterFunc(startFlushEvery, a.flushStarts)
	}
	a.startMu.Unlock()
}

// flushStarts writes the starts of the steps still running with
// synchronous_commit off: the commit does not wait for the WAL flush, since
// losing a timestamp in a crash is harmless. They are forgotten then (even
// if the write failed): a start written stays, the finish does not
// overwrite it.
func (a *Advancer) flushStarts() {
	a.startMu.Lock()
	a.startTimer = false
	starts := make([]store.StepStart, 0, len(a.starts))
	for k, at := range a.starts {
		starts = append(starts, store.StepStart{StepKey: k, At: at})
	}
	a.startMu.Unlock()
	if len(starts) == 0 {
		return
	}
	defer func() {
		a.startMu.Lock()
		for _, st := range starts {
			if at, ok := a.starts[st.StepKey]; ok && at.Equal(st.At) {
				delete(a.starts, st.StepKey)
			}
		}
		a.startMu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := db.InTx(ctx, a.db, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		return store.NewWorkflows(a.prepared.InTx(tx)).RecordStarts(ctx, starts)
	})
	if err != nil {
		a.log.Warn("workflow step start times not recorded", "steps", len(starts), "err", err)
	}
}
