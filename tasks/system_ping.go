package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TypeSystemPing is a diagnostic task: a no-op by default, used by health
// checks and benchmarks. Its optional fields make it useful for drills too:
// SleepMS holds a worker slot (to watch graceful shutdown or load), and Fail
// makes every attempt fail with that message (to watch retries and archiving).
// In a workflow its result's "value" is Add plus the values of its parents'
// results, and "parents" counts them: a chain or chord of pings shows that
// results travel along the DAG.
//
// It is fire-and-forget: nothing of a completed ping is kept in Redis
// (NoRetention) and its result is not written, so a drain of pings costs
// what raw asynq does. A workflow step still passes its result on (the step
// hook reads it in memory), and a caller that wants to read one ping's
// result enqueues it with a retention (POST /api/v1/tasks "retention").
const TypeSystemPing = "system:ping"

// SystemPingPayload is the payload of system:ping.
type SystemPingPayload struct {
	SleepMS int64  `json:"sleep_ms,omitempty"`
	Fail    string `json:"fail,omitempty"`
	Add     int64  `json:"add,omitempty"`
}

// TypeName implements Payload.
func (SystemPingPayload) TypeName() string { return TypeSystemPing }

// Opts implements Payload.
func (SystemPingPayload) Opts() Opts {
	return Opts{Queue: "default", MaxRetry: 3, Timeout: 2 * time.Minute, Retention: NoRetention,
		RetryBase: 5 * time.Second, RetryCap: time.Minute}
}

// Validate implements Payload.
func (p SystemPingPayload) Validate() error {
	if p.SleepMS < 0 || p.SleepMS > 600_000 {
		return FieldErrors{"sleep_ms": "must be between 0 and 600000"}
	}
	return nil
}

func handleSystemPing(Deps) Handler[SystemPingPayload] {
	return func(ctx context.Context, p SystemPingPayload) error {
		started := time.Now().UTC()
		if p.SleepMS > 0 {
			select {
			case <-time.After(time.Duration(p.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if p.Fail != "" {
			return errors.New(p.Fail)
		}
		if !ResultKept(ctx) {
			return nil // a fire-and-forget ping: its result would not be kept
		}
		parents, err := ParentResults(ctx)
		if err != nil {
			return fmt.Errorf("read parent results: %w", err)
		}
		value := p.Add
		for _, pr := range parents {
			var r struct {
				Value int64 `json:"value"`
			}
			_ = json.Unmarshal(pr.Result, &r) // a failed parent has no result: 0
			value += r.Value
		}
		// started_at and at let drills see when handlers ran, e.g. that a
		// limit held (no more than N at once, no more than N a second).
		res := map[string]any{"pong": true, "started_at": started, "at": time.Now().UTC()}
		if len(parents) > 0 || p.Add != 0 {
			res["value"], res["parents"] = value, len(parents)
		}
		return SetResult(ctx, res)
	}
}
