package tasks_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// BenchmarkWorkerThroughput runs system:ping tasks through an asynq server
// with the worker's Mux (exact dispatch, per-attempt log line, result
// written back to Redis) against the real Redis, at the worker's default
// concurrency of 10. The tasks are enqueued before the timer starts, so
// this is the draining rate of one worker process; see the tasks/s metric.
func BenchmarkWorkerThroughput(b *testing.B) {
	url, _ := testenv.Redis(b)
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		b.Fatal(err)
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	for range b.N {
		t, err := tasks.New(tasks.SystemPingPayload{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.Enqueue(t); err != nil {
			b.Fatal(err)
		}
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := tasks.NewMux(tasks.All(), tasks.Deps{Log: quiet}, nil)
	var done atomic.Int64
	finished := make(chan struct{})
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := mux.ProcessTask(ctx, t)
		if done.Add(1) == int64(b.N) {
			close(finished)
		}
		return err
	})
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: 10, Queues: map[string]int{"default": 1},
		LogLevel: asynq.ErrorLevel, ShutdownTimeout: 5 * time.Second,
	})
	b.ResetTimer()
	if err := srv.Start(handler); err != nil {
		b.Fatal(err)
	}
	select {
	case <-finished:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d tasks done after 5 minutes", done.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	srv.Shutdown()
}
