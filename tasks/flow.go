package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/limits"
)

// HeaderExpiresAt carries a task's deadline (RFC 3339, UTC): a task not
// started by then is archived as expired and never runs.
const HeaderExpiresAt = "expires_at"

// WithExpiry returns a copy of headers that makes the task expire at at:
// pass it to NewWithHeaders. It replaces the type's default (ExpiresIn).
func WithExpiry(headers map[string]string, at time.Time) map[string]string {
	out := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		out[k] = v
	}
	out[HeaderExpiresAt] = at.UTC().Format(time.RFC3339Nano)
	return out
}

// withDefaultExpiry adds the type's default deadline unless the producer
// gave one.
func withDefaultExpiry(headers map[string]string, in time.Duration) map[string]string {
	if in <= 0 || headers[HeaderExpiresAt] != "" {
		return headers
	}
	return WithExpiry(headers, time.Now().Add(in))
}

// ExpiresAt returns the deadline t carries, if any.
func ExpiresAt(t *asynq.Task) (time.Time, bool) { return ExpiryOf(t.Headers()) }

// ExpiryOf returns the deadline in a task's headers, if any.
func ExpiryOf(headers map[string]string) (time.Time, bool) {
	v := headers[HeaderExpiresAt]
	if v == "" {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	return at, err == nil
}

// Gate is flow control before a handler runs: *limits.Enforcer.
type Gate interface {
	// Admit returns a release func to call when the handler returns, or a
	// *limits.Throttled when the task may not start yet.
	Admit(ctx context.Context, taskType, taskID string, payload []byte) (release func(), err error)
}

// ExpiryObserver is told about tasks archived unstarted because they
// expired (the worker's metrics).
type ExpiryObserver interface {
	TaskExpired(taskType string)
}

type flowControl struct {
	gate    Gate
	expired ExpiryObserver
}

// SetFlowControl makes the mux ask g (nil: no limits) before every handler
// runs and report expired tasks to obs (may be nil). Expiry is checked
// whether or not this is called.
func (m *Mux) SetFlowControl(g Gate, obs ExpiryObserver) {
	m.flow = flowControl{gate: g, expired: obs}
}

// IsThrottled reports whether err is a throttled (not started) attempt.
func IsThrottled(err error) bool {
	_, ok := limits.AsThrottled(err)
	return ok
}

// admitAndDispatch runs the handler unless the task has expired or is over
// its type's limits.
func (m *Mux) admitAndDispatch(ctx context.Context, t *asynq.Task) error {
	if at, ok := ExpiresAt(t); ok && time.Now().After(at) {
		if m.flow.expired != nil {
			m.flow.expired.TaskExpired(t.Type())
		}
		return Permanent(fmt.Errorf("expired at %s: not started before its deadline", at.UTC().Format(time.RFC3339)))
	}
	if m.flow.gate == nil {
		return m.dispatch(ctx, t)
	}
	attempt := CurrentAttempt(ctx)
	for {
		release, err := m.flow.gate.Admit(ctx, t.Type(), attempt.TaskID, t.Payload())
		th, throttled := limits.AsThrottled(err)
		if throttled && attempt.Last() {
			// asynq archives any error on the last attempt, whatever
			// IsFailure says, so a task without retries left waits here,
			// in its slot, instead of going back to Redis.
			select {
			case <-time.After(th.RetryAfter):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err != nil {
			return err
		}
		defer release()
		return m.dispatch(ctx, t)
	}
}

// ThrottleAware wraps a RetryDelayFunc: a throttled attempt comes back when
// the limiter said (but no later than just after the task's deadline, to be
// archived as expired then); any other error gets delay's backoff.
func ThrottleAware(delay asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		th, ok := limits.AsThrottled(err)
		if !ok {
			return delay(n, err, t)
		}
		wait := th.RetryAfter
		if at, ok := ExpiresAt(t); ok {
			wait = min(wait, time.Until(at)+time.Second)
		}
		return max(wait, 0)
	}
}
