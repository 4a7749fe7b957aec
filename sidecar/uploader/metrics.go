package uploader

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Why a dump or file was not delivered: the reason label of
// dumpcatcher_dumps_failed_total.
const (
	// FailNotRegular: a symbolic link, FIFO, socket or device in a dump
	// directory; refused, never opened.
	FailNotRegular = "not_regular"
	// FailReplaced: another file was renamed over the dump after the
	// watcher reported it (or after the claim); refused.
	FailReplaced = "replaced"
	// FailSparse: a sparse file (see dumpfile.Sparse); set aside unread.
	FailSparse = "sparse"
	// FailUnreadable: reading the dump failed maxFileErrors times; set aside.
	FailUnreadable = "unreadable"
	// FailRejected: the store refused the dump's key or metadata; set aside.
	FailRejected = "rejected"
)

// FailReasons lists the reason label values.
func FailReasons() []string {
	return []string{FailNotRegular, FailReplaced, FailSparse, FailUnreadable, FailRejected}
}

// Metrics are the uploader's Prometheus series; a nil *Metrics records
// nothing.
type Metrics struct {
	deliveredN    prometheus.Counter
	dumpsFailed   *prometheus.CounterVec
	failures      prometheus.Counter
	originalBytes prometheus.Counter
	storedBytes   prometheus.Counter
	queued        prometheus.Gauge
	storageUp     prometheus.Gauge
}

// NewMetrics registers the uploader's series with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveredN: prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_dumps_delivered_total", Help: "Dumps uploaded and verified."}),
		dumpsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dumpcatcher_dumps_failed_total",
			Help: "Files of the dump directories not delivered for a reason of their own, never retried: not_regular (link, FIFO, socket, device: refused), replaced (another file renamed over it: refused), sparse, unreadable, rejected (by the store for its key or metadata): set aside in the spool's failed/ directory."},
			[]string{"reason"}),
		failures:      prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_upload_failures_total", Help: "Failed upload attempts: storage errors and unreadable dumps (each is retried)."}),
		originalBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_original_bytes_total", Help: "Bytes of delivered dumps before compression."}),
		storedBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dumpcatcher_stored_bytes_total", Help: "Bytes of delivered dumps as stored."}),
		queued:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "dumpcatcher_dumps_pending", Help: "Dumps claimed and not yet delivered."}),
		storageUp:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "dumpcatcher_storage_up", Help: "1 when the last upload attempt succeeded, 0 after a failure."}),
	}
	for _, r := range FailReasons() {
		m.dumpsFailed.WithLabelValues(r) // present at 0
	}
	for _, c := range []prometheus.Collector{m.deliveredN, m.dumpsFailed, m.failures, m.originalBytes, m.storedBytes, m.queued, m.storageUp} {
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

func (m *Metrics) dumpFailed(reason string) {
	if m != nil {
		m.dumpsFailed.WithLabelValues(reason).Inc()
	}
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
