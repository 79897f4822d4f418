// Package workflow runs DAGs of registered tasks — Celery's chain, group and
// chord — with their state in PostgreSQL.
//
// A workflow starts inside the producer's transaction (Start): its steps are
// stored and the steps without parents go to the outbox, so nothing reaches
// Redis before the commit. When a step's task ends for good, the worker
// records the outcome and, in the same transaction, enqueues (through the
// outbox) every child whose parents are now all finished (Finish). Each child
// keeps a count of unfinished parents, so a chord over N tasks costs O(N)
// and its callback is enqueued by exactly one transaction: the one that
// takes the count to zero. Every change to a workflow takes its row lock
// first, which serialises advancement per workflow and rules out deadlocks;
// a step's outcome is recorded only from state enqueued, so a duplicate
// completion (at-least-once delivery) changes nothing.
//
// A worker that dies between a task's success and the advancement leaves
// the step enqueued with its task completed in asynq; the Reconciler finds
// such steps and advances them from the task's stored outcome.
package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/conveyor-run/conveyor/tasks"
)

// MaxSteps bounds a workflow's size: a group of 10,000 tasks and its
// callback.
const MaxSteps = 10_001

// What a step does when one of its parents failed (or was cancelled).
const (
	IfParentFailedCancel = "cancel" // the default: the step is cancelled, and so are its own cancel dependents
	IfParentFailedRun    = "run"    // the step runs once all its parents are finished
)

// Spec describes a workflow: POST /api/v1/workflows's body, or what Chain,
// Group and Chord build.
type Spec struct {
	Name  string `json:"name"`
	Steps []Step `json:"steps"`
}

// Step is one task of a workflow. The options are those of
// POST /api/v1/tasks; nil means the task type's default.
type Step struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	Payload        json.RawMessage `json:"payload"`
	After          []string        `json:"after,omitempty"`
	IfParentFailed string          `json:"if_parent_failed,omitempty"`
	Queue          string          `json:"queue,omitempty"`
	MaxRetry       *int            `json:"max_retry,omitempty"`
	Timeout        *int64          `json:"timeout,omitempty"`   // seconds
	Countdown      *int64          `json:"countdown,omitempty"` // seconds after the step becomes runnable

	err error // set by Task when the payload could not be encoded
}

var validStepID = regexp.MustCompile(`^[A-Za-z0-9_.:\-]{1,100}$`)

// Validate checks s against the registry (known types, valid payloads) and,
// when queues is not nil, that every step's queue is served by the workers.
// The error is tasks.FieldErrors naming each field as steps[i].field.
func Validate(reg *tasks.Registry, queues map[string]int, s Spec) error {
	bad := tasks.FieldErrors{}
	switch {
	case len(s.Steps) == 0:
		bad["steps"] = "must hold at least one step"
	case len(s.Steps) > MaxSteps:
		bad["steps"] = fmt.Sprintf("must hold at most %d steps, not %d", MaxSteps, len(s.Steps))
	}
	if len(s.Name) > 200 {
		bad["name"] = "must be at most 200 characters"
	}
	if len(bad) > 0 {
		return bad
	}
	index := make(map[string]int, len(s.Steps))
	for i, st := range s.Steps {
		f := func(name string) string { return "steps[" + strconv.Itoa(i) + "]." + name }
		switch first, dup := index[st.ID]; {
		case !validStepID.MatchString(st.ID):
			bad[f("id")] = "must be 1-100 characters of letters, digits and _.:-"
		case dup:
			bad[f("id")] = fmt.Sprintf("duplicates the id of steps[%d]", first)
		default:
			index[st.ID] = i
		}
		if st.err != nil {
			bad[f("payload")] = st.err.Error()
		}
		validateTask(reg, queues, st, f, bad)
		switch st.IfParentFailed {
		case "", IfParentFailedCancel, IfParentFailedRun:
		default:
			bad[f("if_parent_failed")] = `must be "cancel" or "run"`
		}
	}
	for i, st := range s.Steps {
		seen := make(map[string]bool, len(st.After))
		for j, p := range st.After {
			field := fmt.Sprintf("steps[%d].after", i)
			if _, ok := index[p]; !ok {
				bad[field] = fmt.Sprintf("after[%d]: %q is not a step of this workflow", j, p)
			} else if p == st.ID {
				bad[field] = fmt.Sprintf("after[%d]: a step cannot wait for itself", j)
			} else if seen[p] {
				bad[field] = fmt.Sprintf("after[%d]: %q is listed twice", j, p)
			}
			seen[p] = true
		}
	}
	if len(bad) > 0 {
		return bad
	}
	if i, ok := findCycle(s.Steps, index); ok {
		bad[fmt.Sprintf("steps[%d].after", i)] = "makes a cycle: the workflow must be a DAG"
		return bad
	}
	return nil
}

// validateTask checks a step's type, payload and options.
func validateTask(reg *tasks.Registry, queues map[string]int, st Step, f func(string) string, bad tasks.FieldErrors) {
	typ, ok := reg.Lookup(st.Type)
	if !ok {
		if st.Type == "" {
			bad[f("type")] = "is required"
		} else {
			bad[f("type")] = fmt.Sprintf("unknown task type %q", st.Type)
		}
		return
	}
	if _, err := reg.Decode(st.Type, st.Payload); err != nil {
		var fe tasks.FieldErrors
		if !errors.As(err, &fe) {
			bad[f("payload")] = err.Error()
		}
		for k, v := range fe {
			if k == "payload" {
				bad[f("payload")] = v
			} else {
				bad[f("payload."+k)] = v
			}
		}
	}
	q := st.Queue
	if q == "" {
		q = typ.Opts.Queue
	}
	if _, ok := queues[q]; queues != nil && !ok {
		bad[f("queue")] = fmt.Sprintf("queue %q is not served by the workers (WORKER_QUEUES)", q)
	}
	if st.MaxRetry != nil && (*st.MaxRetry < 0 || *st.MaxRetry > 100) {
		bad[f("max_retry")] = "must be between 0 and 100"
	}
	if st.Timeout != nil && (*st.Timeout < 1 || *st.Timeout > 24*3600) {
		bad[f("timeout")] = "must be between 1 and 86400 seconds"
	}
	if st.Countdown != nil && (*st.Countdown < 0 || *st.Countdown > 365*24*3600) {
		bad[f("countdown")] = "must be between 0 and 31536000 seconds"
	}
}

// findCycle returns the index of a step on a cycle, if any (Kahn's
// algorithm: whatever cannot be ordered lies on or behind a cycle).
func findCycle(steps []Step, index map[string]int) (int, bool) {
	indegree := make([]int, len(steps))
	children := make([][]int, len(steps))
	for i, st := range steps {
		indegree[i] = len(st.After)
		for _, p := range st.After {
			children[index[p]] = append(children[index[p]], i)
		}
	}
	ready := make([]int, 0, len(steps))
	for i, d := range indegree {
		if d == 0 {
			ready = append(ready, i)
		}
	}
	done := 0
	for len(ready) > 0 {
		i := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		done++
		for _, c := range children[i] {
			if indegree[c]--; indegree[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	if done == len(steps) {
		return 0, false
	}
	// Every step left has a parent left: walking up from any of them must
	// come back to a step already seen, which lies on a cycle.
	at := slices.IndexFunc(indegree, func(d int) bool { return d > 0 })
	seen := make(map[int]bool)
	for !seen[at] {
		seen[at] = true
		for _, p := range steps[at].After {
			if indegree[index[p]] > 0 {
				at = index[p]
				break
			}
		}
	}
	return at, true
}

// isNullPayload reports an absent payload, which decodes as the type's zero
// payload.
func isNullPayload(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}
