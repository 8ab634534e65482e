package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/revsync/revsync/jobs"
)

// Metrics are revsync's Prometheus metrics. Labels only ever carry
// configured names (integrations, connectors) and error classes, never
// values taken from a message, so their cardinality is bounded. A nil
// *Metrics records nothing.
type Metrics struct {
	received     prometheus.Counter
	exported     *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	requeued     prometheus.Counter
	inFlight     prometheus.Gauge
	jobDuration  *prometheus.HistogramVec
	breakerState *prometheus.GaugeVec
	reconnects   prometheus.Counter
	connected    prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "revsync_messages_received_total",
			Help: "Messages received from the work queue.",
		}),
		exported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "revsync_messages_acked_total",
			Help: "Messages exported and acknowledged, by integration and connector.",
		}, []string{"integration", "connector"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "revsync_messages_retried_total",
			Help: "Messages sent to a delay queue to be tried again, by integration and reason (an error class, or breaker_open).",
		}, []string{"integration", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "revsync_messages_dead_lettered_total",
			Help: "Messages dead-lettered, by error class.",
		}, []string{"class"}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "revsync_messages_requeued_total",
			Help: "Messages returned to the work queue unhandled (shutdown, or a dead-letter publish that could not be confirmed).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "revsync_messages_in_flight",
			Help: "Messages being handled now.",
		}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "revsync_job_duration_seconds",
			Help:    "Duration of export job runs, by integration, connector and status.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10), // 5ms .. ~19s
		}, []string{"integration", "connector", "status"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "revsync_breaker_state",
			Help: "Circuit breaker state per integration: 0 closed, 1 half-open, 2 open.",
		}, []string{"integration"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "revsync_broker_reconnects_total",
			Help: "Successful reconnections to the broker after a lost connection.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "revsync_broker_connected",
			Help: "1 while connected to the broker and consuming, else 0.",
		}),
	}
	// Every class a message can be dead-lettered with starts at zero, so
	// that "none yet" and "not exported" look different.
	for _, c := range []jobs.Class{jobs.ClassInvalidMessage, jobs.ClassUnknownRoute, jobs.ClassIntegrationDisabled,
		jobs.ClassPermanent, jobs.ClassPanic, jobs.ClassRetriesExhausted} {
		m.deadLettered.WithLabelValues(string(c))
	}
	reg.MustRegister(m.received, m.exported, m.retried, m.deadLettered, m.requeued,
		m.inFlight, m.jobDuration, m.breakerState, m.reconnects, m.connected)
	return m
}

// Received counts a message taken from the queue and marks it in flight.
func (m *Metrics) Received() {
	if m != nil {
		m.received.Inc()
		m.inFlight.Inc()
	}
}

// Done marks a message no longer in flight.
func (m *Metrics) Done() {
	if m != nil {
		m.inFlight.Dec()
	}
}

// Exported counts a message exported and acknowledged.
func (m *Metrics) Exported(integration, connector string) {
	if m != nil {
		m.exported.WithLabelValues(integration, connector).Inc()
	}
}

// Retried counts a message sent to a delay queue; reason is an error class
// or "breaker_open".
func (m *Metrics) Retried(integration, reason string) {
	if m != nil {
		m.retried.WithLabelValues(integration, reason).Inc()
	}
}

// DeadLettered counts a message dead-lettered with class.
func (m *Metrics) DeadLettered(class jobs.Class) {
	if m != nil {
		m.deadLettered.WithLabelValues(string(class)).Inc()
	}
}

// Requeued counts a message returned to the work queue unhandled.
func (m *Metrics) Requeued() {
	if m != nil {
		m.requeued.Inc()
	}
}

// JobDuration observes one job run.
func (m *Metrics) JobDuration(integration, connector string, status jobs.Status, d time.Duration) {
	if m != nil {
		m.jobDuration.WithLabelValues(integration, connector, string(status)).Observe(d.Seconds())
	}
}

// BreakerState records an integration's breaker state: 0 closed,
// 1 half-open, 2 open.
func (m *Metrics) BreakerState(integration string, state int) {
	if m != nil {
		m.breakerState.WithLabelValues(integration).Set(float64(state))
	}
}

// Reconnected counts a successful reconnection to the broker.
func (m *Metrics) Reconnected() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// Connected records whether the broker connection is up and consuming.
func (m *Metrics) Connected(up bool) {
	if m != nil {
		v := 0.0
		if up {
			v = 1
		}
		m.connected.Set(v)
	}
}
