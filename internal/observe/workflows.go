package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkflowMetrics count workflows (internal/workflow). Every method is safe
// on a nil *WorkflowMetrics, which records nothing.
type WorkflowMetrics struct {
	started  prometheus.Counter
	finished *prometheus.CounterVec
	advance  prometheus.Histogram
	stuck    prometheus.Gauge
}

// NewWorkflowMetrics registers the workflow metrics on reg. The api counts
// starts (and cancellations); workers count the rest.
func NewWorkflowMetrics(reg prometheus.Registerer) *WorkflowMetrics {
	m := &WorkflowMetrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conveyor_workflows_started_total", Help: "Workflows started (counted after their transaction committed).",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_workflows_finished_total", Help: "Workflows finished, by final state: succeeded, failed or cancelled.",
		}, []string{"state"}),
		advance: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "conveyor_workflow_step_advance_seconds",
			Help:    "From a step's task finishing to its children being enqueued (to the outbox), when it released any.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120},
		}),
		stuck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "conveyor_workflows_stuck",
			Help: "Running workflows that have not advanced for WORKFLOW_STUCK_AFTER and have no step running or recently enqueued.",
		}),
	}
	reg.MustRegister(m.started, m.finished, m.advance, m.stuck)
	return m
}

// Started counts n started workflows.
func (m *WorkflowMetrics) Started(n int) {
	if m != nil {
		m.started.Add(float64(n))
	}
}

// Finished counts a workflow that ended in state.
func (m *WorkflowMetrics) Finished(state string) {
	if m != nil {
		m.finished.WithLabelValues(state).Inc()
	}
}

// Advanced records the time from a step's end to its children's enqueueing.
func (m *WorkflowMetrics) Advanced(d time.Duration) {
	if m != nil {
		m.advance.Observe(d.Seconds())
	}
}

// Stuck sets the number of stuck workflows.
func (m *WorkflowMetrics) Stuck(n int64) {
	if m != nil {
		m.stuck.Set(float64(n))
	}
}
