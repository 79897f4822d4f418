package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// Concurrent enqueues share pipelines (pipeline.go): every task must still
// land exactly once, with its own answer, whether it was alone or one of
// hundreds in flight, and a task ID in use must fail only its own enqueue.
func TestConcurrentEnqueuesEachGetTheirOwnAnswer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		goroutines int
		taken      int // task IDs enqueued before, so these enqueues conflict
	}{
		{name: "one", goroutines: 1},
		{name: "a few", goroutines: 8, taken: 3},
		{name: "more than one pipeline holds", goroutines: 700, taken: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			redisURL, _ := testenv.Redis(t)
			c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			id := func(i int) string { return fmt.Sprintf("pipe-%d", i) }
			for i := range tt.taken {
				if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, TaskID: id(i), Queue: "low"}); err != nil {
					t.Fatal(err)
				}
			}

			infos := make([]queue.TaskInfo, tt.goroutines)
			errs := make([]error, tt.goroutines)
			var wg sync.WaitGroup
			for i := range tt.goroutines {
				wg.Go(func() {
					infos[i], errs[i] = c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, TaskID: id(i), Queue: "low"})
				})
			}
			wg.Wait()

			for i := range tt.goroutines {
				switch {
				case i < tt.taken && !errors.Is(errs[i], queue.ErrConflict):
					t.Errorf("enqueue %d (ID taken) = %v, want ErrConflict", i, errs[i])
				case i >= tt.taken && errs[i] != nil:
					t.Errorf("enqueue %d = %v", i, errs[i])
				case i >= tt.taken && (infos[i].ID != id(i) || infos[i].Queue != "low" || infos[i].State != "pending"):
					t.Errorf("enqueue %d = %+v, want ID %s pending in low", i, infos[i], id(i))
				}
			}
			insp := asynq.NewInspector(mustRedisOpt(t, redisURL))
			t.Cleanup(func() { insp.Close() })
			qi, err := insp.GetQueueInfo("low")
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.goroutines; qi.Pending != want { // the taken ones once
				t.Errorf("pending in low = %d, want %d", qi.Pending, want)
			}
		})
	}
}

// A closed client refuses enqueues instead of waiting for a pipeline that
// no longer runs.
func TestEnqueueAfterCloseFails(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing})
	if !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("enqueue after Close = %v, want ErrUnavailable", err)
	}
}

// A context cancelled before the enqueue is sent sends nothing.
func TestEnqueueWithCancelledContextSendsNothing(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Queue: "low"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("enqueue = %v, want context.Canceled", err)
	}
	insp := asynq.NewInspector(mustRedisOpt(t, redisURL))
	t.Cleanup(func() { insp.Close() })
	if qi, err := insp.GetQueueInfo("low"); err == nil && qi.Pending != 0 {
		t.Fatalf("pending in low = %d, want 0", qi.Pending)
	}
}

func mustRedisOpt(t testing.TB, url string) asynq.RedisConnOpt {
	t.Helper()
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// An enqueue refused while Redis is down is refused whole: once Redis is
// back, the next enqueue to the same queue registers the queue again, so
// the task can be found by ID (GetTask lists the queues Redis knows).
func TestEnqueueAfterRedisOutageIsFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rs := testenv.StartRedisServer(t)
	c, err := queue.NewClient(rs.URL(), tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Queue: "critical"}); err != nil {
		t.Fatal(err)
	}
	rs.Kill()
	if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Queue: "low"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("enqueue while Redis is down = %v, want ErrUnavailable", err)
	}
	rs.Start()
	var info queue.TaskInfo
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err = c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Queue: "low"})
		return err == nil
	}, "enqueue after Redis came back: %v", &err)
	got, err := c.GetTask(ctx, info.ID, "")
	if err != nil || got.Queue != "low" {
		t.Fatalf("GetTask(%s) = %+v, %v; want it in low", info.ID, got, err)
	}
}
