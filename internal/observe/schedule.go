package observe

import "github.com/prometheus/client_golang/prometheus"

// ScheduleMetrics are the scheduler's metrics; it implements
// schedule.Observer.
type ScheduleMetrics struct {
	fires  *prometheus.CounterVec
	skips  *prometheus.CounterVec
	errors *prometheus.CounterVec
}

// NewScheduleMetrics registers the scheduler's metrics on reg. isLeader is
// read at every scrape (the lease, whose local deadline can pass between
// renewals).
func NewScheduleMetrics(reg prometheus.Registerer, isLeader func() bool) *ScheduleMetrics {
	m := &ScheduleMetrics{
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_schedule_fires_total",
			Help: "Schedule fires by outcome: enqueued, or duplicate (the tick was already enqueued, by another replica or an earlier attempt).",
		}, []string{"schedule", "outcome"}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_schedule_skips_total",
			Help: "Missed ticks not fired because they were older than the catch-up window.",
		}, []string{"schedule"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_schedule_errors_total",
			Help: "Schedule errors by reason: enqueue (retried), record (fired, not recorded) or invalid (database row skipped).",
		}, []string{"schedule", "reason"}),
	}
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "conveyor_scheduler_is_leader",
		Help: "1 while this scheduler replica holds the leader lease and fires, 0 otherwise.",
	}, func() float64 {
		if isLeader != nil && isLeader() {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.fires, m.skips, m.errors, leader)
	return m
}

// Fired implements schedule.Observer.
func (m *ScheduleMetrics) Fired(name, outcome string) { m.fires.WithLabelValues(name, outcome).Inc() }

// Skipped implements schedule.Observer.
func (m *ScheduleMetrics) Skipped(name string, ticks int) {
	m.skips.WithLabelValues(name).Add(float64(ticks))
}

// Failed implements schedule.Observer.
func (m *ScheduleMetrics) Failed(name, reason string) { m.errors.WithLabelValues(name, reason).Inc() }
