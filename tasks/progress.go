package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress is how far a running task has got, as its handler last reported
// it with ReportProgress: Celery's update_state(state="PROGRESS", meta=…).
type Progress struct {
	Done      int64     `json:"done"`
	Total     int64     `json:"total"` // 0: unknown
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Task results and progress share asynq's one result field (written with
// the task's ResultWriter, kept with the task until its retention ends, and
// deleted with it), so they are stored together in an envelope:
//
//	{"conveyor_result":1,"progress":{…},"result":…}
//
// Every write rewrites the whole envelope: a result keeps the last progress,
// and progress reported after SetResult keeps the result. A result field
// without the marker (written by something else) is read as a bare result.
type resultEnvelope struct {
	Marker   int             `json:"conveyor_result"`
	Progress *Progress       `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
}

const envelopeVersion = 1

// DecodeResult splits a task's stored result field into the handler's
// result (nil if none yet) and its last progress (nil if never reported).
func DecodeResult(b []byte) (result json.RawMessage, progress *Progress) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	var env resultEnvelope
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) && json.Unmarshal(b, &env) == nil && env.Marker == envelopeVersion {
		return env.Result, env.Progress
	}
	return b, nil
}

// taskState is the running attempt's copy of its envelope, so that progress
// and result updates, even from several goroutines, never lose each other.
type taskState struct {
	mu  sync.Mutex
	w   io.Writer // the task's ResultWriter; nil outside a worker
	env resultEnvelope
	// discard: nothing of the task is kept and no workflow reads its
	// result, so results and progress are dropped unencoded.
	discard bool
}

type stateKey struct{}

func withState(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, stateKey{}, &taskState{w: w, env: resultEnvelope{Marker: envelopeVersion}})
}

// update changes the envelope and writes it whole.
func (s *taskState) update(change func(*resultEnvelope)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.env)
	if s.w == nil {
		return nil // no Redis to write to (a handler run by a unit test); a workflow step's hook still reads env
	}
	b, err := json.Marshal(s.env)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// writeResult stores v (as JSON) as the task's result.
func writeResult(ctx context.Context, v any) error {
	s, ok := ctx.Value(stateKey{}).(*taskState)
	if !ok || s.discard {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return s.update(func(e *resultEnvelope) { e.Result = b })
}

// ReportProgress records how far the running task has got: done out of
// total (0 if unknown) with an optional message. GET /api/v1/tasks/{id}
// shows it as "progress" while the task runs and after it finishes. Each
// call is one Redis write, so report per step or per batch, not per row.
// Outside a worker (handler unit tests) it does nothing.
func ReportProgress(ctx context.Context, done, total int64, msg string) error {
	s, ok := ctx.Value(stateKey{}).(*taskState)
	if !ok || s.w == nil || s.discard {
		return nil
	}
	p := &Progress{Done: done, Total: total, Message: msg, UpdatedAt: time.Now().UTC()}
	return s.update(func(e *resultEnvelope) { e.Progress = p })
}
