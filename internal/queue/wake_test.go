package queue_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// wakeWorker is an asynq server with Wakeups over its own Redis client,
// as cmd/worker builds it; handled receives each task ID it ran.
type wakeWorker struct {
	wake    *queue.Wakeups
	handled chan string
}

func startWakeWorker(t *testing.T, redisURL string, maxWait time.Duration) *wakeWorker {
	t.Helper()
	opt, err := queue.ParseRedisURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := queue.RedisClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &wakeWorker{
		wake:    queue.NewWakeups(rdb, allQueues, queue.WakeOptions{MaxWait: maxWait}, testenv.Logger(t)),
		handled: make(chan string, 100),
	}
	w.wake.Start(ctx)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 2, Queues: allQueues, TaskCheckInterval: queue.WakeSleep,
		DelayedTaskCheckInterval: 100 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		w.handled <- id
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // ends any wait, so Shutdown is prompt
		srv.Shutdown()
		rdb.Close()
	})
	testenv.Eventually(t, 10*time.Second, w.wake.Listening, "wake-up subscription never came up")
	return w
}

func (w *wakeWorker) await(t *testing.T, id string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-w.handled:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("task %s never ran", id)
		}
	}
}

// With the fallback look 5 s away, every task enqueued through queue.Client
// is handed over on its wake-up — whichever queue it is on — and none waits
// for a look: Woken counts each of them.
func TestWakeupsHandTasksOverWithoutPolling(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	w := startWakeWorker(t, redisURL, queue.MaxWakeWait)
	c := newTestClient(t, redisURL)
	for _, q := range []string{"default", "low", "critical", "default", "low"} {
		// Once the worker waits (its look after the last task ended empty),
		// this task can only arrive by wake-up — or by the look after a
		// 5 s wait that ran out just now, hence "at least 4" below.
		testenv.Eventually(t, 10*time.Second, w.wake.Waiting, "worker never idle")
		info, err := c.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing, Payload: []byte(`{}`), Queue: q})
		if err != nil {
			t.Fatal(err)
		}
		w.await(t, info.ID)
	}
	if got := w.wake.Woken(); got < 4 {
		t.Errorf("%d of 5 tasks were handed over on a wake-up, want at least 4", got)
	}
}

// A task that reaches a queue without a wake-up (another asynq client) is
// found by the fallback look.
func TestTaskWithoutWakeupIsFoundByTheFallbackLook(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	w := startWakeWorker(t, redisURL, 200*time.Millisecond)
	opt, _ := queue.ParseRedisURL(redisURL)
	raw := asynq.NewClient(opt)
	defer raw.Close()
	info, err := raw.Enqueue(asynq.NewTask(tasks.TypeSystemPing, []byte(`{}`)), asynq.Queue("low"))
	if err != nil {
		t.Fatal(err)
	}
	w.await(t, info.ID)
	if got := w.wake.Woken(); got != 0 {
		t.Errorf("Woken = %d for a task nobody announced", got)
	}
}

// A scheduled task moved to its queue by this worker's forwarder wakes the
// worker: it does not wait for the fallback look either.
func TestForwardedTaskWakesTheWorker(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	w := startWakeWorker(t, redisURL, queue.MaxWakeWait)
	c := newTestClient(t, redisURL)
	countdown := int64(1)
	info, err := c.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing, Payload: []byte(`{}`), Countdown: &countdown})
	if err != nil {
		t.Fatal(err)
	}
	w.await(t, info.ID)
	if got := w.wake.Woken(); got != 1 {
		t.Errorf("Woken = %d, want the forwarded task handed over on a wake-up", got)
	}
}

// Producers in different Redis databases do not wake each other's workers:
// the channel carries the database number.
func TestWakeChannelIsPerDatabase(t *testing.T) {
	t.Parallel()
	redisURL, rdb := testenv.Redis(t)
	otherURL, _ := testenv.Redis(t)
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, "conveyor:wake:"+strconv.Itoa(rdb.Options().DB))
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ url, queue string }{{otherURL, "low"}, {redisURL, "critical"}} {
		c, err := queue.NewClient(p.url, tasks.All(), allQueues)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Payload: []byte(`{}`), Queue: p.queue}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Payload != "critical" {
		t.Errorf("first wake-up on this database's channel names %q; want critical (low was enqueued in another database)", msg.Payload)
	}
}
