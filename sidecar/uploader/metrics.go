package uploader

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the uploader's Prometheus series; a nil *Metrics records
// nothing.
type Metrics struct {
	deliveredN    prometheus.Counter
	failures      prometheus.Counter
	originalBytes prometheus.Counter
	storedBytes   prometheus.Counter
	queued        prometheus.Gauge
	storageUp     prometheus.Gauge
}

// NewMetrics registers the uploader's series with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveredN:    prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_dumps_delivered_total", Help: "Dumps uploaded and verified."}),
		failures:      prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_upload_failures_total", Help: "Failed upload attempts (each is retried)."}),
		originalBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_original_bytes_total", Help: "Bytes of delivered dumps before compression."}),
		storedBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_stored_bytes_total", Help: "Bytes of delivered dumps as stored."}),
		queued:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "dumpcatcher_dumps_pending", Help: "Dumps claimed and not yet delivered."}),
		storageUp:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "dumpcatcher_storage_up", Help: "1 when the last upload attempt succeeded, 0 after a failure."}),
	}
	for _, c := range []prometheus.Collector{m.deliveredN, m.failures, m.originalBytes, m.storedBytes, m.queued, m.storageUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.storageUp.Set(1)
	return m, nil
}

func (m *Metrics) delivered(orig, stored int64) {
	if m == nil {
		return
	}
	m.deliveredN.Inc()
	m.originalBytes.Add(float64(orig))
	m.storedBytes.Add(float64(stored))
}

func (m *Metrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

func (m *Metrics) setQueued(n int) {
	if m != nil {
		m.queued.Set(float64(n))
	}
}

func (m *Metrics) setUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.storageUp.Set(1)
	} else {
		m.storageUp.Set(0)
	}
}
