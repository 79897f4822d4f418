package observe

import "github.com/prometheus/client_golang/prometheus"

// DispatchMetrics count what the outbox dispatcher (queue.Dispatcher) does
// with the rows producers hand it. Every method is safe on a nil
// *DispatchMetrics, which records nothing.
type DispatchMetrics struct {
	sent    prometheus.Counter
	dropped prometheus.Counter
}

// NewDispatchMetrics registers the dispatcher's metrics on reg.
func NewDispatchMetrics(reg prometheus.Registerer) *DispatchMetrics {
	m := &DispatchMetrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conveyor_outbox_dispatched_total",
			Help: "Outbox rows enqueued by the dispatcher right after their producer's commit (the rest go out through the relay's poll).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conveyor_outbox_dispatch_dropped_total",
			Help: "Outbox row IDs the dispatcher dropped because its buffer was full; the relay's poll sends those rows, later.",
		}),
	}
	reg.MustRegister(m.sent, m.dropped)
	return m
}

// Sent counts n rows the dispatcher enqueued.
func (m *DispatchMetrics) Sent(n int) {
	if m != nil && n > 0 {
		m.sent.Add(float64(n))
	}
}

// Dropped counts n row IDs dropped for want of buffer space.
func (m *DispatchMetrics) Dropped(n int) {
	if m != nil && n > 0 {
		m.dropped.Add(float64(n))
	}
}
