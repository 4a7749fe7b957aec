package admission

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts admissions by outcome and times them.
type Metrics struct {
	admissions *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

// NewMetrics registers the webhook's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dumpcatcher_webhook_admissions_total",
			Help: "Pod admission requests answered, by outcome (injected, skipped, denied, error).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dumpcatcher_webhook_admission_duration_seconds",
			Help:    "Time to answer a pod admission request, by outcome.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"outcome"}),
	}
	var err error
	if m.admissions, err = register(reg, m.admissions); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	for _, o := range []string{OutcomeInjected, OutcomeSkipped, OutcomeDenied, OutcomeError} {
		m.admissions.WithLabelValues(o)
	}
	return m, nil
}

func (m *Metrics) observe(outcome string, d time.Duration) {
	m.admissions.WithLabelValues(outcome).Inc()
	m.latency.WithLabelValues(outcome).Observe(d.Seconds())
}

// register adds c to reg, or returns the collector reg already has under the
// same name (a second server in one process shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
