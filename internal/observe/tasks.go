package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TaskMetrics are the worker's task counters; it implements tasks.Observer.
type TaskMetrics struct {
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	failed   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// NewTaskMetrics registers the worker's task metrics on reg.
func NewTaskMetrics(reg prometheus.Registerer) *TaskMetrics {
	m := &TaskMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_tasks_started_total", Help: "Task attempts started.",
		}, []string{"type", "queue"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_tasks_finished_total",
			Help: "Task attempts finished, by outcome: succeeded, retried (failed, will retry), archived (failed for good) or throttled (over a limit, not started).",
		}, []string{"type", "queue", "outcome"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_tasks_failed_total",
			Help: "Task attempts that failed (retried or archived): the sum of those two outcomes of conveyor_tasks_finished_total.",
		}, []string{"type", "queue"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "conveyor_task_duration_seconds", Help: "Duration of task attempts.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"type"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "conveyor_tasks_in_flight", Help: "Tasks being handled right now.",
		}, []string{"type"}),
	}
	reg.MustRegister(m.started, m.finished, m.failed, m.duration, m.inFlight)
	return m
}

// TaskStarted implements tasks.Observer.
func (m *TaskMetrics) TaskStarted(taskType, queue string) {
	m.started.WithLabelValues(taskType, queue).Inc()
	m.inFlight.WithLabelValues(taskType).Inc()
}

// TaskFinished implements tasks.Observer.
func (m *TaskMetrics) TaskFinished(taskType, queue, outcome string, d time.Duration) {
	m.inFlight.WithLabelValues(taskType).Dec()
	m.finished.WithLabelValues(taskType, queue, outcome).Inc()
	if outcome == "retried" || outcome == "archived" {
		m.failed.WithLabelValues(taskType, queue).Inc()
	}
	m.duration.WithLabelValues(taskType).Observe(d.Seconds())
}
