package tasks

import (
	"time"

	"github.com/hibiken/asynq"
)

// What a finished task leaves in Redis is decided per type (Opts.Retention),
// because rate × retention × bytes per kept task is Redis memory:
//
//   - a type whose results callers read keeps the completed task and its
//     result for a while (email:* and order:process 24 h, maintenance:cleanup
//     a week);
//   - fire-and-forget work (system:ping) declares NoRetention: asynq deletes
//     the task the moment it completes and the worker does not write its
//     result to Redis at all.
//
// Failed tasks are not affected: asynq keeps archived tasks (90 days, at most
// 10,000 per queue) whatever the retention.
//
// A kept task is also what makes a re-sent task ID a duplicate (asynq
// refuses a second task with the ID of one it still holds), so retention was
// once raised to 24 h for everything. The consumers do not rely on that: a
// workflow step's task runs only while its step is "enqueued" (a second
// delivery finds it finished and is dropped), emails are deduplicated by key
// in email_log, order:process leaves a finished order alone, and the
// scheduler keeps each tick's task for its own dedupe window. Delivery is
// at-least-once in any case (a worker crash re-runs a task), so handlers are
// idempotent.

// NoRetention, as a type's Opts.Retention, keeps nothing once a task of the
// type completes: no task record and no result in Redis. GET
// /api/v1/tasks/{id} then explains that the record is gone. A producer may
// still keep one task (POST /api/v1/tasks "retention", a workflow step),
// which marks it with HeaderKeepResult.
const NoRetention time.Duration = -1

// A workflow step's task is kept like any task of its type: its outcome and
// result live in PostgreSQL (workflow_steps), recorded before the task
// completes (a task whose outcome could not be recorded runs again, see
// ErrStepNotRecorded), and GET /api/v1/tasks/{id} answers from the step
// once the task is gone. A worker that dies mid-task leaves the task active,
// and asynq's recoverer runs it again. (Step tasks used to be kept at least
// an hour with their result, so that the reconciler could read an outcome
// back from Redis: a third of a chord step's worker CPU.)

// HeaderKeepResult marks a task that is kept after completion although its
// type declares NoRetention, so the worker writes its result.
const HeaderKeepResult = "keep_result"

// retention is what a task of these options keeps: def for a type that
// declares nothing, 0 for NoRetention.
func (o Opts) retention(def time.Duration) time.Duration {
	switch {
	case o.Retention == 0:
		return def
	case o.Retention < 0:
		return 0
	default:
		return o.Retention
	}
}

// Retention is how long a completed task of this type stays in Redis, with
// DefaultRetention for a type that declares none: what the task-type
// catalog shows.
func (t Type) Retention() time.Duration { return t.Opts.retention(DefaultRetention) }

// Retention is the one rule for how long a completed task stays in Redis:
// its type's Opts.Retention (def for a type that declares none or is
// unknown: TASK_RETENTION), a workflow step's task included. Producers
// apply it (queue.Client); an explicit asynq.Retention option of the caller
// (the scheduler's dedupe window, POST /api/v1/tasks "retention") wins over
// it. headers are the task's (none changes the answer today).
func (r *Registry) Retention(taskType string, headers map[string]string, def time.Duration) time.Duration {
	if t, ok := r.types[taskType]; ok {
		return t.Opts.retention(def)
	}
	return def
}

// keepsResult reports whether the worker should write t's result to Redis:
// not when nothing of t will be kept (its type declares NoRetention and no
// producer asked to keep this one), which saves a Redis write per task. A
// workflow step's result reaches PostgreSQL through the step hook, which
// reads it from memory, whether or not it is written here.
func keepsResult(declared time.Duration, t *asynq.Task) bool {
	if declared >= 0 {
		return true
	}
	_, keep := t.Headers()[HeaderKeepResult]
	return keep
}
