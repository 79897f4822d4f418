package observe

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueSnapshot is one queue's state at scrape time.
type QueueSnapshot struct {
	Queue          string
	States         map[string]int // tasks by state: pending, active, scheduled, retry, archived, completed, aggregating
	Size           int            // every task in the queue, as asynq counts them
	Latency        time.Duration  // how long the oldest pending task has waited
	MemoryBytes    int64          // approximate (sampled) Redis memory use
	ProcessedTotal int            // cumulative tasks processed (succeeded or failed)
	FailedTotal    int            // cumulative tasks failed
	Paused         bool
}

// QueueSnapshotFunc reads every queue's state (queue.Client does, over
// asynq's Inspector).
type QueueSnapshotFunc func(ctx context.Context) ([]QueueSnapshot, error)

// OutboxSnapshot is the transactional outbox's backlog at scrape time.
type OutboxSnapshot struct {
	Pending int64         // rows not yet enqueued
	Oldest  time.Duration // age of the oldest of them (0 if none)
	Dead    int64         // rows given up: they can never become a task
}

// OutboxFunc reads the outbox backlog (store.Outbox does).
type OutboxFunc func(ctx context.Context) (OutboxSnapshot, error)

// QueueCollector exports queue sizes, latency and totals at scrape time. The
// metric names are those of asynq's x/metrics collector, which Asynqmon's
// charts and the KEDA example query. Queue state is global, so exactly one
// kind of process (the api) registers this collector; worker and scheduler
// do not.
type QueueCollector struct {
	snapshot QueueSnapshotFunc
	outbox   OutboxFunc
	log      *slog.Logger
	timeout  time.Duration

	up, enqueued, size, latency, memory, processed, failed, paused *prometheus.Desc
	outboxPending, outboxOldest, outboxDead                        *prometheus.Desc
}

// NewQueueCollector returns a collector over snapshot. outbox may be nil
// (then the conveyor_outbox_* metrics are not exported).
func NewQueueCollector(snapshot QueueSnapshotFunc, outbox OutboxFunc, log *slog.Logger) *QueueCollector {
	q := []string{"queue"}
	return &QueueCollector{
		snapshot: snapshot, outbox: outbox, log: log, timeout: 5 * time.Second,
		up: prometheus.NewDesc("conveyor_queue_stats_up",
			"1 if the last read of queue statistics from Redis succeeded.", nil, nil),
		enqueued: prometheus.NewDesc("asynq_tasks_enqueued_total",
			"Tasks in a queue right now, by state (a gauge despite its name, as in asynq's x/metrics).", []string{"queue", "state"}, nil),
		size: prometheus.NewDesc("asynq_queue_size",
			"Tasks in a queue, in any state, as asynq counts them (completed tasks kept for their retention included); for the backlog use asynq_tasks_enqueued_total{state=\"pending\"}.", q, nil),
		latency: prometheus.NewDesc("asynq_queue_latency_seconds",
			"How long the oldest pending task of a queue has waited.", q, nil),
		memory: prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
			"Approximate Redis memory used by a queue and its tasks (sampled).", q, nil),
		processed: prometheus.NewDesc("asynq_tasks_processed_total",
			"Tasks processed, succeeded or failed, since the queue was created.", q, nil),
		failed: prometheus.NewDesc("asynq_tasks_failed_total",
			"Task attempts that failed since the queue was created.", q, nil),
		paused: prometheus.NewDesc("asynq_queue_paused_total",
			"1 if the queue is paused.", q, nil),
		outboxPending: prometheus.NewDesc("conveyor_outbox_pending",
			"Outbox rows written by business transactions and not yet enqueued.", nil, nil),
		outboxDead: prometheus.NewDesc("conveyor_outbox_dead",
			"Outbox rows given up because they can never become a task (unknown type, invalid payload); list and requeue them with the api outbox command.", nil, nil),
		outboxOldest: prometheus.NewDesc("conveyor_outbox_oldest_seconds",
			"Age of the oldest outbox row not yet enqueued (0 if none).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.enqueued, c.size, c.latency, c.memory, c.processed, c.failed, c.paused} {
		ch <- d
	}
	if c.outbox != nil {
		ch <- c.outboxPending
		ch <- c.outboxOldest
		ch <- c.outboxDead
	}
}

// Collect implements prometheus.Collector: it reads Redis (and the outbox)
// once per scrape, within a timeout.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if c.outbox != nil {
		if o, err := c.outbox(ctx); err != nil {
			c.log.Warn("metrics: outbox backlog", "err", err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.outboxPending, prometheus.GaugeValue, float64(o.Pending))
			ch <- prometheus.MustNewConstMetric(c.outboxOldest, prometheus.GaugeValue, o.Oldest.Seconds())
			ch <- prometheus.MustNewConstMetric(c.outboxDead, prometheus.GaugeValue, float64(o.Dead))
		}
	}
	queues, err := c.snapshot(ctx)
	if err != nil {
		c.log.Warn("metrics: queue statistics", "err", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, q := range queues {
		for state, n := range q.States {
			ch <- prometheus.MustNewConstMetric(c.enqueued, prometheus.GaugeValue, float64(n), q.Queue, state)
		}
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(q.Size), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, q.Latency.Seconds(), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(q.MemoryBytes), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, q.Queue)
	}
}
