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

// StepRetention is the least a workflow step's task is kept: the workflow
// reconciler reads a step's outcome (and result) back from Redis when the
// worker that ran it died before recording it, and it looks at steps a
// minute or more old.
const StepRetention = time.Hour

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
// unknown: TASK_RETENTION), and at least StepRetention for a workflow step.
// Producers apply it (queue.Client); an explicit asynq.Retention option of
// the caller (the scheduler's dedupe window, POST /api/v1/tasks
// "retention") wins over it.
func (r *Registry) Retention(taskType string, headers map[string]string, def time.Duration) time.Duration {
	d := def
	if t, ok := r.types[taskType]; ok {
		d = t.Opts.retention(def)
	}
	if _, step := headers[HeaderWorkflowStep]; step {
		d = max(d, StepRetention)
	}
	return d
}

// keepsResult reports whether the worker should write t's result to Redis:
// not when nothing of t will be kept (its type declares NoRetention and no
// producer asked to keep this one), which saves a Redis write per task. A
// workflow step's result still reaches Postgres through the step hook,
// which reads it from memory.
func keepsResult(declared time.Duration, t *asynq.Task) bool {
	if declared >= 0 {
		return true
	}
	h := t.Headers()
	if _, step := h[HeaderWorkflowStep]; step {
		return true
	}
	_, keep := h[HeaderKeepResult]
	return keep
}
