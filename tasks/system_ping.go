package tasks

import (
	"context"
	"errors"
	"time"
)

// TypeSystemPing is a diagnostic task: a no-op by default, used by health
// checks and benchmarks. Its optional fields make it useful for drills too:
// SleepMS holds a worker slot (to watch graceful shutdown or load), and Fail
// makes every attempt fail with that message (to watch retries and archiving).
const TypeSystemPing = "system:ping"

// SystemPingPayload is the payload of system:ping.
type SystemPingPayload struct {
	SleepMS int64  `json:"sleep_ms,omitempty"`
	Fail    string `json:"fail,omitempty"`
}

// TypeName implements Payload.
func (SystemPingPayload) TypeName() string { return TypeSystemPing }

// Opts implements Payload.
func (SystemPingPayload) Opts() Opts {
	return Opts{Queue: "default", MaxRetry: 3, Timeout: 2 * time.Minute, Retention: time.Hour,
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
		return SetResult(ctx, map[string]any{"pong": true, "at": time.Now().UTC()})
	}
}
