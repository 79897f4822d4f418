package observe

import "github.com/prometheus/client_golang/prometheus"

// ScheduleMetrics count the scheduler's fires; it implements schedule.Observer.
type ScheduleMetrics struct {
	fires *prometheus.CounterVec
}

// NewScheduleMetrics registers the scheduler's metrics on reg.
func NewScheduleMetrics(reg prometheus.Registerer) *ScheduleMetrics {
	m := &ScheduleMetrics{
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_schedule_fires_total",
			Help: "Schedule fires by outcome: enqueued, duplicate (tick already enqueued) or error.",
		}, []string{"schedule", "outcome"}),
	}
	reg.MustRegister(m.fires)
	return m
}

// Fired implements schedule.Observer.
func (m *ScheduleMetrics) Fired(name, outcome string) { m.fires.WithLabelValues(name, outcome).Inc() }
