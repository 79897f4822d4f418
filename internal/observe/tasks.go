package observe

import (
	"sync"
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

	// sets holds each (type, queue)'s series, looked up once: resolving
	// five labelled series per task (hashing their labels each time) was a
	// measurable share of a ping's CPU. A map under a read lock rather than
	// a sync.Map, whose lookups box the key (an allocation per call).
	mu   sync.RWMutex
	sets map[typeQueue]*taskSeries
}

type typeQueue struct{ taskType, queue string }

// taskSeries are the series of one task type and queue.
type taskSeries struct {
	started  prometheus.Counter
	inFlight prometheus.Gauge
	duration prometheus.Observer
	// Made at the first task that needs them, so /metrics shows only the
	// outcomes that happened, as before the cache.
	mu       sync.Mutex
	finished map[string]prometheus.Counter // by outcome
	failed   prometheus.Counter
}

func (m *TaskMetrics) series(taskType, queue string) *taskSeries {
	k := typeQueue{taskType, queue}
	m.mu.RLock()
	s, ok := m.sets[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sets[k]; ok {
		return s
	}
	s = &taskSeries{
		started:  m.started.WithLabelValues(taskType, queue),
		inFlight: m.inFlight.WithLabelValues(taskType),
		duration: m.duration.WithLabelValues(taskType),
		finished: map[string]prometheus.Counter{},
	}
	m.sets[k] = s
	return s
}

// finish counts one attempt's outcome (and a failure) in s.
func (m *TaskMetrics) finish(s *taskSeries, taskType, queue, outcome string) {
	failed := outcome == "retried" || outcome == "archived"
	s.mu.Lock()
	c, ok := s.finished[outcome]
	if !ok {
		c = m.finished.WithLabelValues(taskType, queue, outcome)
		s.finished[outcome] = c
	}
	if failed && s.failed == nil {
		s.failed = m.failed.WithLabelValues(taskType, queue)
	}
	f := s.failed
	s.mu.Unlock()
	c.Inc()
	if failed {
		f.Inc()
	}
}

// NewTaskMetrics registers the worker's task metrics on reg.
func NewTaskMetrics(reg prometheus.Registerer) *TaskMetrics {
	m := &TaskMetrics{
		sets: map[typeQueue]*taskSeries{},
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
	s := m.series(taskType, queue)
	s.started.Inc()
	s.inFlight.Inc()
}

// TaskFinished implements tasks.Observer.
func (m *TaskMetrics) TaskFinished(taskType, queue, outcome string, d time.Duration) {
	s := m.series(taskType, queue)
	s.inFlight.Dec()
	m.finish(s, taskType, queue, outcome)
	s.duration.Observe(d.Seconds())
}
