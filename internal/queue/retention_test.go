package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// undeclaredPayload is a type that declares no retention: TASK_RETENTION
// applies to it.
type undeclaredPayload struct{}

func (undeclaredPayload) TypeName() string { return "test:undeclared" }
func (undeclaredPayload) Opts() tasks.Opts { return tasks.Opts{} }
func (undeclaredPayload) Validate() error  { return nil }

// Every producer path gives a task its type's retention, with no global
// floor: a ping keeps nothing, an email a day, cleanup a week, a type that
// declares nothing TASK_RETENTION; a workflow step as its type (its outcome
// is in PostgreSQL); a caller's own retention wins.
func TestRetentionPerType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	reg := tasks.NewRegistry(append(tasks.All().Types(),
		tasks.Define(func(tasks.Deps) tasks.Handler[undeclaredPayload] { return nil }))...)
	c, err := queue.NewClient(redisURL, reg, allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDefaultRetention(72 * time.Hour)
	insp := asynq.NewInspectorFromRedisClient(c.Redis())

	enqueue := func(p tasks.Payload, headers map[string]string, opts ...asynq.Option) queue.TaskInfo {
		t.Helper()
		task, err := tasks.NewWithHeaders(p, headers)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.EnqueueTask(ctx, task, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	sec := func(n int64) *int64 { return &n }
	viaAPI, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Retention: sec(600)})
	if err != nil {
		t.Fatal(err)
	}
	step := map[string]string{tasks.HeaderWorkflowStep: "wf-1:a"}
	for _, tc := range []struct {
		name string
		task queue.TaskInfo
		want time.Duration
	}{
		{"ping keeps nothing", enqueue(tasks.SystemPingPayload{}, nil), 0},
		{"email a day", enqueue(tasks.EmailWelcomePayload{UserID: 1}, nil), 24 * time.Hour},
		{"order a day", enqueue(tasks.OrderProcessPayload{OrderID: 1}, nil), 24 * time.Hour},
		{"cleanup a week", enqueue(tasks.MaintenanceCleanupPayload{}, nil), 7 * 24 * time.Hour},
		{"undeclared: TASK_RETENTION", enqueue(undeclaredPayload{}, nil), 72 * time.Hour},
		{"workflow step of a ping", enqueue(tasks.SystemPingPayload{}, step), 0},
		{"workflow step of cleanup", enqueue(tasks.MaintenanceCleanupPayload{}, step), 7 * 24 * time.Hour},
		{"explicit option wins (scheduler)", enqueue(tasks.SystemPingPayload{}, nil, asynq.Retention(10*time.Minute)), 10 * time.Minute},
		{"caller's retention (POST /api/v1/tasks)", viaAPI, 10 * time.Minute},
	} {
		info, err := insp.GetTaskInfo(tc.task.Queue, tc.task.ID)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if info.Retention != tc.want {
			t.Errorf("%s: retention %s, want %s", tc.name, info.Retention, tc.want)
		}
	}
	if info, _ := insp.GetTaskInfo(viaAPI.Queue, viaAPI.ID); info.Headers[tasks.HeaderKeepResult] == "" {
		t.Errorf("a ping the caller keeps lacks the %s header (headers %v): its result would not be written", tasks.HeaderKeepResult, info.Headers)
	}
	if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Retention: sec(-1)}); err == nil {
		t.Error("a negative retention was accepted")
	}
}

// The relay applies the same rule: an outbox row's task keeps its type's
// retention, not a 24 h floor.
func TestRelayUsesTypeRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	email := addWelcome(t, b.db, 7)
	ping, err := store.NewOutbox(b.db).Add(ctx, tasks.TypeSystemPing, json.RawMessage(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if n, failed, err := b.relay.RelayOnce(ctx); err != nil || n != 2 || failed != 0 {
		t.Fatalf("RelayOnce = %d, %d, %v", n, failed, err)
	}
	insp := asynq.NewInspectorFromRedisClient(b.client.Redis())
	for id, want := range map[string]time.Duration{email: 24 * time.Hour, ping: 0} {
		info, err := b.client.GetTask(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		ai, err := insp.GetTaskInfo(info.Queue, id)
		if err != nil {
			t.Fatal(err)
		}
		if ai.Retention != want {
			t.Errorf("%s task %s: retention %s, want %s", info.Type, id, ai.Retention, want)
		}
	}
}

// A worker leaves nothing of a completed ping in Redis and writes no
// result for it; a ping its caller asked to keep is kept with its result
// for that long.
func TestWorkerKeepsNothingOfAPing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rdb := c.Redis()
	mux := tasks.NewMux(tasks.All(), tasks.Deps{Log: testenv.Logger(t)}, nil)
	live := queue.NewLiveness(rdb, testenv.Logger(t), nil, queue.LivenessOptions{})
	if err := live.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{"default": 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(live.Middleware(mux)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); live.Stop(ctx) })

	sec := int64(600)
	gone, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Retention: &sec})
	if err != nil {
		t.Fatal(err)
	}
	var info queue.TaskInfo
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err = c.GetTask(ctx, kept.ID, "")
		return err == nil && info.State == "completed"
	}, "the kept ping never completed (%+v, %v)", info, err)
	var res struct{ Pong bool }
	if json.Unmarshal(info.Result, &res) != nil || !res.Pong {
		t.Errorf("kept ping's result = %s, want pong", info.Result)
	}
	// asynq scores a completed task with the Unix time its retention ends:
	// completion time + 600 s.
	score, err := rdb.ZScore(ctx, "asynq:{default}:completed", kept.ID).Result()
	if err != nil || info.CompletedAt == nil || int64(score) != info.CompletedAt.Unix()+sec {
		t.Errorf("kept ping expires at %v (%v), want completed_at %v + 600 s", score, err, info.CompletedAt)
	}

	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := c.GetTask(ctx, gone.ID, "")
		return err != nil
	}, "the plain ping is still in Redis")
	if n, err := rdb.Exists(ctx, "asynq:{default}:t:"+gone.ID).Result(); err != nil || n != 0 {
		t.Errorf("the plain ping's task hash exists (%d, %v)", n, err)
	}
	if n, _ := rdb.ZCard(ctx, "asynq:{default}:completed").Result(); n != 1 {
		t.Errorf("%d completed tasks kept, want 1 (the ping its caller kept)", n)
	}
	qi, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default")
	if err != nil || qi.Processed != 2 || qi.Failed != 0 {
		t.Errorf("queue info %+v (%v): want 2 processed, none failed", qi, err)
	}
}
