package workflow

import (
	"encoding/json"
	"fmt"

	"github.com/conveyor-run/conveyor/tasks"
)

// The canvas: Celery's chain, group and chord for Go producers. They build
// the same Spec as POST /api/v1/workflows, and compose:
//
//	spec := workflow.Chain(
//		workflow.Task("fetch", FetchPayload{URL: u}),
//		workflow.Chord(
//			workflow.Group(workflow.Task("a", ResizePayload{W: 100}), workflow.Task("b", ResizePayload{W: 200})),
//			workflow.Task("publish", PublishPayload{}),
//		),
//	).Named("thumbnails")
//	v, err := workflow.Start(ctx, tx, tasks.All(), spec, workflow.StartOptions{})
//
// A step's ID must be unique within the workflow; Validate (run by Start)
// says which is not.

// Part is a piece of a workflow: one step, or a chain, group or chord of
// parts. Its heads are the steps that wait for whatever comes before the
// part; its tails are the steps that whatever follows it waits for.
type Part interface {
	parts() (steps []Step, heads, tails []int)
}

// Task is one step running the task of payload p under the given ID. Step
// options (queue, max_retry, timeout, countdown, if_parent_failed) can be set
// on the returned value.
func Task(id string, p tasks.Payload) *Step {
	b, err := json.Marshal(p)
	s := &Step{ID: id, Type: p.TypeName(), Payload: b}
	if err != nil {
		s.err = fmt.Errorf("encode payload: %w", err)
	}
	return s
}

// RunIfParentFailed makes the step run even when a parent failed.
func (s *Step) RunIfParentFailed() *Step {
	s.IfParentFailed = IfParentFailedRun
	return s
}

func (s *Step) parts() ([]Step, []int, []int) { return []Step{*s}, []int{0}, []int{0} }

// Spec is a workflow of this one step.
func (s *Step) Spec() Spec { return build(s) }

type chain []Part

// Chain runs parts one after the other: each part's heads wait for all of
// the previous part's tails (Celery's chain; a group followed by a task is a
// chord).
func Chain(parts ...Part) Composite { return Composite{chain(parts)} }

func (c chain) parts() ([]Step, []int, []int) {
	var steps []Step
	var heads, prevTails []int
	for i, p := range c {
		s, h, t := p.parts()
		off := len(steps)
		for j := range s {
			s[j].After = append([]string(nil), s[j].After...)
		}
		for _, hi := range h {
			for _, pt := range prevTails {
				s[hi].After = append(s[hi].After, steps[pt].ID)
			}
		}
		steps = append(steps, s...)
		if i == 0 {
			heads = shift(h, off)
		}
		prevTails = shift(t, off)
	}
	return steps, heads, prevTails
}

type group []Part

// Group runs parts side by side (Celery's group).
func Group(parts ...Part) Composite { return Composite{group(parts)} }

func (g group) parts() ([]Step, []int, []int) {
	var steps []Step
	var heads, tails []int
	for _, p := range g {
		s, h, t := p.parts()
		off := len(steps)
		steps = append(steps, s...)
		heads, tails = append(heads, shift(h, off)...), append(tails, shift(t, off)...)
	}
	return steps, heads, tails
}

// Chord runs callback once every step of header has finished (Celery's
// chord); the callback reads their results with tasks.ParentResults. Like
// any step it is cancelled if a parent failed, unless it was made to
// RunIfParentFailed.
func Chord(header Part, callback Part) Composite { return Chain(header, callback) }

// Composite is a chain, group or chord; Spec turns it into a workflow.
type Composite struct{ p Part }

func (c Composite) parts() ([]Step, []int, []int) { return c.p.parts() }

// Spec is the workflow of c.
func (c Composite) Spec() Spec { return build(c) }

// Named is the workflow of c with a name (shown by the API).
func (c Composite) Named(name string) Spec {
	s := build(c)
	s.Name = name
	return s
}

func build(p Part) Spec {
	steps, _, _ := p.parts()
	return Spec{Steps: steps}
}

func shift(idx []int, off int) []int {
	out := make([]int, len(idx))
	for i, v := range idx {
		out[i] = v + off
	}
	return out
}
