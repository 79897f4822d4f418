package queue

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
)

// The hook recognises asynq's scripts by their keys alone; anything else
// passes through untouched.
func TestWakeHookRecognisesScripts(t *testing.T) {
	cmd := func(args ...any) redis.Cmder { return redis.NewCmd(context.Background(), args...) }
	for _, c := range []struct {
		name         string
		cmd          redis.Cmder
		dequeue, fwd string
		isDeq, isFwd bool
	}{
		{"dequeue", cmd("evalsha", "sha", 4, "asynq:{default}:pending", "asynq:{default}:paused", "asynq:{default}:active", "asynq:{default}:lease", int64(1), "asynq:{default}:t:"), "default", "", true, false},
		{"dequeue by eval", cmd("eval", "src", 4, "asynq:{a:b}:pending", "asynq:{a:b}:paused", "asynq:{a:b}:active", "asynq:{a:b}:lease"), "a:b", "", true, false},
		{"mixed queues", cmd("evalsha", "sha", 4, "asynq:{x}:pending", "asynq:{y}:paused", "asynq:{x}:active", "asynq:{x}:lease"), "", "", false, false},
		{"other 4-key script", cmd("evalsha", "sha", 4, "asynq:{x}:active", "asynq:{x}:lease", "asynq:{x}:t:1", "asynq:{x}:processed"), "", "", false, false},
		{"forward scheduled", cmd("evalsha", "sha", 2, "asynq:{low}:scheduled", "asynq:{low}:pending", int64(1)), "", "low", false, true},
		{"forward retry", cmd("evalsha", "sha", 2, "asynq:{low}:retry", "asynq:{low}:pending"), "", "low", false, true},
		{"not a script", cmd("get", "asynq:{default}:pending"), "", "", false, false},
		{"no tag", cmd("evalsha", "sha", 2, "scheduled", "pending"), "", "", false, false},
		{"short", cmd("evalsha", "sha"), "", "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			keys, ok := scriptKeys(c.cmd)
			q, isDeq := "", false
			if ok {
				q, isDeq = dequeueQueue(keys)
			}
			if isDeq != c.isDeq || q != c.dequeue {
				t.Errorf("dequeueQueue = %q, %v; want %q, %v", q, isDeq, c.dequeue, c.isDeq)
			}
			f, isFwd := "", false
			if ok {
				f, isFwd = forwardQueue(keys)
			}
			if isFwd != c.isFwd || f != c.fwd {
				t.Errorf("forwardQueue = %q, %v; want %q, %v", f, isFwd, c.fwd, c.isFwd)
			}
		})
	}
}

func TestRetargetKeepsLeaseAndMovesKeys(t *testing.T) {
	args := []any{"evalsha", "sha", 4, "asynq:{low}:pending", "asynq:{low}:paused", "asynq:{low}:active", "asynq:{low}:lease", int64(42), "asynq:{low}:t:"}
	got := retarget(args, "low", "critical")
	want := []any{"evalsha", "sha", 4, "asynq:{critical}:pending", "asynq:{critical}:paused", "asynq:{critical}:active", "asynq:{critical}:lease", int64(42), "asynq:{critical}:t:"}
	if !slices.Equal(got, want) {
		t.Errorf("retarget = %v\nwant       %v", got, want)
	}
	if args[3] != "asynq:{low}:pending" {
		t.Error("retarget changed its input")
	}
}
