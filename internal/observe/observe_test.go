package observe_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestQueueCollectorExportsAsynqNames(t *testing.T) {
	t.Parallel()
	snap := func(context.Context) ([]observe.QueueSnapshot, error) {
		return []observe.QueueSnapshot{{
			Queue:  "default",
			States: map[string]int{"pending": 3, "archived": 1},
			Size:   4, Latency: 1500 * time.Millisecond, MemoryBytes: 2048,
			ProcessedTotal: 10, FailedTotal: 2, Paused: true,
		}}, nil
	}
	outbox := func(context.Context) (observe.OutboxSnapshot, error) {
		return observe.OutboxSnapshot{Pending: 7, Oldest: 90 * time.Second, Dead: 2}, nil
	}
	c := observe.NewQueueCollector(snap, outbox, testenv.Logger(t))

	want := `
# HELP asynq_queue_latency_seconds How long the oldest pending task of a queue has waited.
# TYPE asynq_queue_latency_seconds gauge
asynq_queue_latency_seconds{queue="default"} 1.5
# HELP asynq_queue_memory_usage_approx_bytes Approximate Redis memory used by a queue and its tasks (sampled).
# TYPE asynq_queue_memory_usage_approx_bytes gauge
asynq_queue_memory_usage_approx_bytes{queue="default"} 2048
# HELP asynq_queue_paused_total 1 if the queue is paused.
# TYPE asynq_queue_paused_total gauge
asynq_queue_paused_total{queue="default"} 1
# HELP asynq_queue_size Tasks in a queue, in any state, as asynq counts them (completed tasks kept for their retention included); for the backlog use asynq_tasks_enqueued_total{state="pending"}.
# TYPE asynq_queue_size gauge
asynq_queue_size{queue="default"} 4
# HELP asynq_tasks_enqueued_total Tasks in a queue right now, by state (a gauge despite its name, as in asynq's x/metrics).
# TYPE asynq_tasks_enqueued_total gauge
asynq_tasks_enqueued_total{queue="default",state="archived"} 1
asynq_tasks_enqueued_total{queue="default",state="pending"} 3
# HELP asynq_tasks_failed_total Task attempts that failed since the queue was created.
# TYPE asynq_tasks_failed_total counter
asynq_tasks_failed_total{queue="default"} 2
# HELP asynq_tasks_processed_total Tasks processed, succeeded or failed, since the queue was created.
# TYPE asynq_tasks_processed_total counter
asynq_tasks_processed_total{queue="default"} 10
# HELP conveyor_outbox_dead Outbox rows given up because they can never become a task (unknown type, invalid payload); list and requeue them with the api outbox command.
# TYPE conveyor_outbox_dead gauge
conveyor_outbox_dead 2
# HELP conveyor_outbox_oldest_seconds Age of the oldest outbox row not yet enqueued (0 if none).
# TYPE conveyor_outbox_oldest_seconds gauge
conveyor_outbox_oldest_seconds 90
# HELP conveyor_outbox_pending Outbox rows written by business transactions and not yet enqueued.
# TYPE conveyor_outbox_pending gauge
conveyor_outbox_pending 7
# HELP conveyor_queue_stats_up 1 if the last read of queue statistics from Redis succeeded.
# TYPE conveyor_queue_stats_up gauge
conveyor_queue_stats_up 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestQueueCollectorReportsRedisDown(t *testing.T) {
	t.Parallel()
	snap := func(context.Context) ([]observe.QueueSnapshot, error) { return nil, errors.New("connection refused") }
	c := observe.NewQueueCollector(snap, nil, testenv.Logger(t))
	want := `
# HELP conveyor_queue_stats_up 1 if the last read of queue statistics from Redis succeeded.
# TYPE conveyor_queue_stats_up gauge
conveyor_queue_stats_up 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
}

func TestTaskMetricsOutcomes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := observe.NewTaskMetrics(reg)
	for _, outcome := range []string{"succeeded", "succeeded", "retried", "archived", "throttled"} {
		m.TaskStarted("system:ping", "default")
		m.TaskFinished("system:ping", "default", outcome, time.Millisecond)
	}
	want := `
# HELP conveyor_tasks_failed_total Task attempts that failed (retried or archived): the sum of those two outcomes of conveyor_tasks_finished_total.
# TYPE conveyor_tasks_failed_total counter
conveyor_tasks_failed_total{queue="default",type="system:ping"} 2
# HELP conveyor_tasks_finished_total Task attempts finished, by outcome: succeeded, retried (failed, will retry), archived (failed for good) or throttled (over a limit, not started).
# TYPE conveyor_tasks_finished_total counter
conveyor_tasks_finished_total{outcome="archived",queue="default",type="system:ping"} 1
conveyor_tasks_finished_total{outcome="retried",queue="default",type="system:ping"} 1
conveyor_tasks_finished_total{outcome="succeeded",queue="default",type="system:ping"} 2
conveyor_tasks_finished_total{outcome="throttled",queue="default",type="system:ping"} 1
# HELP conveyor_tasks_in_flight Tasks being handled right now.
# TYPE conveyor_tasks_in_flight gauge
conveyor_tasks_in_flight{type="system:ping"} 0
# HELP conveyor_tasks_started_total Task attempts started.
# TYPE conveyor_tasks_started_total counter
conveyor_tasks_started_total{queue="default",type="system:ping"} 5
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"conveyor_tasks_failed_total", "conveyor_tasks_finished_total", "conveyor_tasks_in_flight", "conveyor_tasks_started_total")
	if err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "conveyor_task_duration_seconds"); n != 1 {
		t.Errorf("duration histogram series: %d, want 1", n)
	}
}

func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := observe.NewHTTPMetrics(reg)
	m.Observe("/api/v1/tasks/:id", "GET", 404, 3*time.Millisecond)
	m.Observe("/api/v1/tasks/:id", "GET", 200, 3*time.Millisecond)
	m.Observe("/api/v1/tasks/:id", "GET", 200, 3*time.Millisecond)
	want := `
# HELP conveyor_http_requests_total HTTP requests served, by route, method and status.
# TYPE conveyor_http_requests_total counter
conveyor_http_requests_total{method="GET",route="/api/v1/tasks/:id",status="200"} 2
conveyor_http_requests_total{method="GET",route="/api/v1/tasks/:id",status="404"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "conveyor_http_requests_total"); err != nil {
		t.Error(err)
	}
}

// Each type and queue keeps its own series (they are looked up once and
// remembered).
func TestTaskMetricsKeepTypesAndQueuesApart(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := observe.NewTaskMetrics(reg)
	for range 3 {
		m.TaskStarted("system:ping", "default")
		m.TaskFinished("system:ping", "default", "succeeded", time.Millisecond)
	}
	m.TaskStarted("system:ping", "low")
	m.TaskStarted("email:welcome", "critical")
	m.TaskFinished("email:welcome", "critical", "retried", time.Millisecond)
	want := `
# HELP conveyor_tasks_started_total Task attempts started.
# TYPE conveyor_tasks_started_total counter
conveyor_tasks_started_total{queue="critical",type="email:welcome"} 1
conveyor_tasks_started_total{queue="default",type="system:ping"} 3
conveyor_tasks_started_total{queue="low",type="system:ping"} 1
# HELP conveyor_tasks_in_flight Tasks being handled right now.
# TYPE conveyor_tasks_in_flight gauge
conveyor_tasks_in_flight{type="email:welcome"} 0
conveyor_tasks_in_flight{type="system:ping"} 1
# HELP conveyor_tasks_failed_total Task attempts that failed (retried or archived): the sum of those two outcomes of conveyor_tasks_finished_total.
# TYPE conveyor_tasks_failed_total counter
conveyor_tasks_failed_total{queue="critical",type="email:welcome"} 1
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"conveyor_tasks_started_total", "conveyor_tasks_in_flight", "conveyor_tasks_failed_total")
	if err != nil {
		t.Error(err)
	}
}
