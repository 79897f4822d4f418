package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// A cancel request that arrives while the worker has dequeued the task but
// not yet registered its handler's cancel function is lost: Redis keeps no
// published message. Cancel repeats the request, so the handler is still
// cancelled once it starts, and the task is gone rather than left running.
func TestCancelReachesAHandlerThatStartsAfterTheFirstRequest(t *testing.T) {
	t.Parallel()
	redisURL, rdb := testenv.Redis(t)
	c := newTestClient(t, redisURL)
	ctx := context.Background()

	// Every published cancel request, whichever test sent it: the channel
	// is shared by all Redis databases.
	sub := rdb.Subscribe(ctx, "asynq:cancel")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	requests := sub.Channel()

	// asynq calls BaseContext after the dequeue (the task is active) and
	// before it registers the cancel function, so holding it open holds
	// the window in which a request is lost.
	dequeued, release := make(chan struct{}), make(chan struct{})
	handlerDone := make(chan error, 1)
	opt, err := queue.ParseRedisURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	wrdb, err := queue.RedisClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(wrdb, asynq.Config{
		Concurrency: 1, Queues: allQueues, TaskCheckInterval: 20 * time.Millisecond,
		LogLevel: asynq.FatalLevel,
		BaseContext: func() context.Context {
			close(dequeued)
			<-release
			return context.Background()
		},
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-ctx.Done():
			handlerDone <- ctx.Err()
			return ctx.Err()
		case <-time.After(time.Minute):
			handlerDone <- nil
			return nil
		}
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		wrdb.Close()
	})

	info, err := c.Enqueue(ctx, queue.Request{Type: tasks.TypeSystemPing, Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-dequeued:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker never dequeued the task")
	}

	result := make(chan string, 1)
	go func() {
		action, err := c.Cancel(ctx, info.ID, "", 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		result <- action
	}()
	// Let the first request go out while no cancel function is registered.
	for first := false; !first; {
		select {
		case m := <-requests:
			first = m.Payload == info.ID
		case <-time.After(30 * time.Second):
			t.Fatal("no cancel request was published")
		}
	}
	close(release)

	select {
	case err := <-handlerDone:
		if err == nil {
			t.Fatal("the handler ran to its end: no cancel request reached it")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was never cancelled")
	}
	if got := <-result; got != "canceled" {
		t.Fatalf("Cancel = %q, want canceled", got)
	}
	if _, err := c.GetTask(ctx, info.ID, ""); err == nil {
		t.Error("the cancelled task is still in Redis; want it gone")
	}
}
