package observe

import "github.com/prometheus/client_golang/prometheus"

// FlowMetrics count the worker's flow control: throttled attempts, held
// concurrency slots and expired tasks. It implements limits.Observer and
// tasks.ExpiryObserver.
type FlowMetrics struct {
	throttled *prometheus.CounterVec
	slots     *prometheus.GaugeVec
	expired   *prometheus.CounterVec
}

// NewFlowMetrics registers the flow-control metrics on reg.
func NewFlowMetrics(reg prometheus.Registerer) *FlowMetrics {
	m := &FlowMetrics{
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_tasks_throttled_total",
			Help: "Task attempts not started because a limit was reached, by kind (rate, concurrency); they wait without spending a retry.",
		}, []string{"type", "kind"}),
		slots: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "conveyor_limits_concurrency_slots",
			Help: "Concurrency-limit slots this worker holds now, by task type (sum over workers: the type's current concurrency).",
		}, []string{"type"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_tasks_expired_total",
			Help: "Tasks archived unstarted because their deadline (expires_at) had passed.",
		}, []string{"type"}),
	}
	reg.MustRegister(m.throttled, m.slots, m.expired)
	return m
}

// TaskThrottled implements limits.Observer.
func (m *FlowMetrics) TaskThrottled(taskType, kind string) {
	m.throttled.WithLabelValues(taskType, kind).Inc()
}

// ConcurrencySlots implements limits.Observer.
func (m *FlowMetrics) ConcurrencySlots(taskType string, delta int) {
	m.slots.WithLabelValues(taskType).Add(float64(delta))
}

// TaskExpired implements tasks.ExpiryObserver.
func (m *FlowMetrics) TaskExpired(taskType string) { m.expired.WithLabelValues(taskType).Inc() }
