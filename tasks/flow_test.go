package tasks_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/limits"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// gate throttles the first `throttle` calls, then admits.
type gate struct {
	throttle int32
	calls    atomic.Int32
	released atomic.Int32
}

func (g *gate) Admit(context.Context, string, string, []byte) (func(), error) {
	if g.calls.Add(1) <= g.throttle {
		return nil, &limits.Throttled{Kind: limits.KindRate, Limit: "1 per 1s (burst 1)", RetryAfter: 10 * time.Millisecond}
	}
	return func() { g.released.Add(1) }, nil
}

type expiredCounter struct{ n atomic.Int32 }

func (e *expiredCounter) TaskExpired(string) { e.n.Add(1) }

func TestExpiredTaskIsArchivedUnstarted(t *testing.T) {
	t.Parallel()
	mux := tasks.NewMux(tasks.All(), tasks.Deps{Log: testenv.Logger(t)}, nil)
	g, exp := &gate{}, &expiredCounter{}
	mux.SetFlowControl(g, exp)
	past := tasks.WithExpiry(nil, time.Now().Add(-time.Second))
	task, err := tasks.NewWithHeaders(tasks.SystemPingPayload{Fail: "ran"}, past)
	if err != nil {
		t.Fatal(err)
	}
	err = mux.ProcessTask(context.Background(), task)
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "expired at ") || strings.Contains(err.Error(), "ran") {
		t.Fatalf("expired task: %v", err)
	}
	if exp.n.Load() != 1 || g.calls.Load() != 0 {
		t.Fatalf("expired counted %d times; gate asked %d times", exp.n.Load(), g.calls.Load())
	}
	// Not yet expired: it runs.
	future := tasks.WithExpiry(nil, time.Now().Add(time.Hour))
	task, _ = tasks.NewWithHeaders(tasks.SystemPingPayload{}, future)
	if err := mux.ProcessTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if g.released.Load() != 1 {
		t.Fatal("the gate's slot was not released after the handler")
	}
}

// Outside a worker every attempt is the last one (no retries left), where
// asynq would archive a throttled task: the mux waits instead.
func TestThrottledLastAttemptWaitsInsteadOfFailing(t *testing.T) {
	t.Parallel()
	mux := tasks.NewMux(tasks.All(), tasks.Deps{Log: testenv.Logger(t)}, nil)
	g := &gate{throttle: 3}
	mux.SetFlowControl(g, nil)
	task, _ := tasks.New(tasks.SystemPingPayload{})
	if err := mux.ProcessTask(context.Background(), task); err != nil {
		t.Fatalf("throttled last attempt: %v", err)
	}
	if g.calls.Load() != 4 {
		t.Fatalf("gate asked %d times, want 4", g.calls.Load())
	}
}

func TestThrottleAwareRetryDelay(t *testing.T) {
	t.Parallel()
	base := func(int, error, *asynq.Task) time.Duration { return time.Hour }
	delay := tasks.ThrottleAware(base)
	task, _ := tasks.New(tasks.SystemPingPayload{})
	th := &limits.Throttled{Kind: limits.KindConcurrency, RetryAfter: 3 * time.Second}
	if d := delay(0, th, task); d != 3*time.Second {
		t.Fatalf("throttled: %v", d)
	}
	if d := delay(0, errors.New("boom"), task); d != time.Hour {
		t.Fatalf("failure: %v", d)
	}
	soon, _ := tasks.NewWithHeaders(tasks.SystemPingPayload{}, tasks.WithExpiry(nil, time.Now().Add(time.Second)))
	th.RetryAfter = time.Hour
	if d := delay(0, th, soon); d > 3*time.Second {
		t.Fatalf("a task expiring in 1s waits %v", d)
	}
	if limits.IsFailure(th) || !limits.IsFailure(errors.New("boom")) {
		t.Fatal("IsFailure")
	}
}

// otpPayload is a type whose tasks expire by default.
type otpPayload struct{}

func (otpPayload) TypeName() string { return "test:otp" }
func (otpPayload) Opts() tasks.Opts { return tasks.Opts{ExpiresIn: 20 * time.Minute} }
func (otpPayload) Validate() error  { return nil }

func TestTypeDefaultExpiry(t *testing.T) {
	t.Parallel()
	task, err := tasks.New(otpPayload{})
	if err != nil {
		t.Fatal(err)
	}
	at, ok := tasks.ExpiresAt(task)
	if !ok || time.Until(at) > 20*time.Minute || time.Until(at) < 19*time.Minute {
		t.Fatalf("default expiry: %v %v", at, ok)
	}
	// A producer's own deadline wins.
	mine := time.Now().Add(time.Hour).Truncate(time.Second)
	task, _ = tasks.NewWithHeaders(otpPayload{}, tasks.WithExpiry(nil, mine))
	if at, _ := tasks.ExpiresAt(task); !at.Equal(mine) {
		t.Fatalf("producer's expiry %v, want %v", at, mine)
	}
	// Types without a default get none.
	task, _ = tasks.New(tasks.SystemPingPayload{})
	if _, ok := tasks.ExpiresAt(task); ok {
		t.Fatal("system:ping got a deadline")
	}
}
