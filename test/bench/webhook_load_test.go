package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/webhook/admission"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Settings of BenchmarkWebhookLoad.
const (
	envAdmissions = "DUMPCATCHER_BENCH_ADMISSIONS"
	envRate       = "DUMPCATCHER_BENCH_RATE"
	envClients    = "DUMPCATCHER_BENCH_CLIENTS"
)

// The target of issue 11.
const (
	targetRate = 500
	targetP99  = 10 * time.Millisecond
	targetRSS  = 64 * mib
)

// BenchmarkWebhookLoad measures the webhook server alone under a steady
// load: the real dumpcatcher-webhook binary (built here, as the image
// builds it) serving HTTPS on 127.0.0.1 with a self-signed certificate made
// here, its namespace cache fed by a real kube-apiserver (envtest), as in a
// cluster. The load generator is bounded: DUMPCATCHER_BENCH_ADMISSIONS
// requests (default 100000) at DUMPCATCHER_BENCH_RATE per second (default
// 500) from DUMPCATCHER_BENCH_CLIENTS keep-alive connections (default 4),
// open loop: request i is due at start + i/rate and its latency counts from
// then, so a slow answer delays the ones after it and is not hidden. Each is
// the AdmissionReview of an opted-in pod (webhook/inject/testdata/
// bench-typical.yaml, in a namespace with injection enabled) and each answer
// is checked (allowed, a patch, the request's UID).
//
// Reported: latency percentiles, the achieved rate, the server's CPU, its
// RSS (VmRSS from /proc) after a warm-up and at the end, its peak (VmHWM),
// and its Go heap in use before and after (from its /metrics).
//
//	KUBEBUILDER_ASSETS=/path/to/kube-apiserver-and-etcd \
//	  go test -run '^$' -bench WebhookLoad -benchtime 1x -timeout 30m ./test/bench
func BenchmarkWebhookLoad(b *testing.B) {
	n, rate, clients := envInt(envAdmissions, 100000), envInt(envRate, targetRate), envInt(envClients, 4)
	w := startWebhook(b)
	review := reviewOf(b, "../../webhook/inject/testdata/bench-typical.yaml")
	for range b.N {
		b.Logf("%d admissions at %d/s from %d clients; load average %.2f", n, rate, clients, loadAvg1())
		// Warm-up: connections, caches, the heap's working size.
		if res := w.load(b, review, min(n, 2000), rate, clients); res.errors > 0 {
			b.Fatalf("warm-up: %d errors, first: %v", res.errors, res.firstErr)
		}
		rss0, _, err := procMem(w.pid)
		if err != nil {
			b.Fatal(err)
		}
		heap0 := w.metric(b, "go_memstats_heap_inuse_bytes")
		cpu0 := procCPU(w.pid)

		res := w.load(b, review, n, rate, clients)

		cpu := procCPU(w.pid) - cpu0
		rss1, hwm, err := procMem(w.pid)
		if err != nil {
			b.Fatal(err)
		}
		heap1 := w.metric(b, "go_memstats_heap_inuse_bytes")
		if res.errors > 0 {
			b.Fatalf("%d of %d admissions failed, first: %v", res.errors, n, res.firstErr)
		}
		lat, svc := res.latencies, res.service
		slices.Sort(lat)
		slices.Sort(svc)
		pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
		svcP99 := svc[min(len(svc)-1, int(float64(len(svc))*0.99))]
		achieved := float64(n) / res.elapsed.Seconds()
		b.ReportMetric(ms(pct(0.50)), "p50-ms")
		b.ReportMetric(ms(pct(0.99)), "p99-ms")
		b.ReportMetric(ms(pct(0.999)), "p99.9-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
		b.ReportMetric(ms(svcP99), "p99-sent-ms")
		b.ReportMetric(achieved, "admissions/s")
		b.ReportMetric(cpu/res.elapsed.Seconds(), "server-cores")
		b.ReportMetric(float64(rss0)/mib, "rss-start-MiB")
		b.ReportMetric(float64(rss1)/mib, "rss-end-MiB")
		b.ReportMetric(float64(hwm)/mib, "rss-peak-MiB")
		b.ReportMetric(heap0/mib, "heap-start-MiB")
		b.ReportMetric(heap1/mib, "heap-end-MiB")
		b.Logf("%d admissions in %s: %.0f/s; latency p50 %s p99 %s p99.9 %s max %s (p99 from sending %s); server CPU %.2f cores; RSS %.1f -> %.1f MiB (peak %.1f); Go heap in use %.1f -> %.1f MiB; load average %.2f",
			n, res.elapsed.Round(time.Millisecond), achieved, pct(0.50), pct(0.99), pct(0.999), lat[len(lat)-1], svcP99, cpu/res.elapsed.Seconds(),
			float64(rss0)/mib, float64(rss1)/mib, float64(hwm)/mib, heap0/mib, heap1/mib, loadAvg1())
		met := achieved >= 0.98*float64(rate) && pct(0.99) <= targetP99 && hwm <= targetRSS
		b.Logf("target (%d/s, p99 <= %s, RSS <= %d MiB over %d admissions): met=%v", targetRate, targetP99, targetRSS/mib, n, met && rate >= targetRate && n >= 100000)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// webhookProc is a running dumpcatcher-webhook.
type webhookProc struct {
	pid     int
	url     string // of the admission path
	metrics string // of /metrics
	pool    *x509.CertPool
}

// startWebhook starts a kube-apiserver, the namespace "shop" with injection
// enabled, and the real webhook binary pointed at it.
func startWebhook(b *testing.B) *webhookProc {
	b.Helper()
	api := apiserver.Start(b, apiserver.Options{})
	_, err := kubernetes.NewForConfigOrDie(api.Config).CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelInject: inject.LabelEnabled}}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	kubeconfig := api.Kubeconfig(b, "dumpcatcher-webhook", "system:masters")

	dir := b.TempDir()
	certDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		b.Fatal(err)
	}
	ca := certs.NewNamedCA(b, "dumpcatcher-webhook bench CA")
	serving := ca.Serving(b, "127.0.0.1")
	certPEM, keyPEM, pool := serving.CertPEM, serving.KeyPEM, ca.Pool()
	for name, data := range map[string][]byte{
		"kubeconfig":  kubeconfig,
		"config.yaml": []byte("destination: s3://heap-dumps/bench?endpoint=http://minio.minio.svc:9000&path-style=true\ncredentialsSecret: dumpcatcher-s3\nsidecar: {image: registry.example/dumpcatcher:bench}\n"),
		"tls/tls.crt": certPEM,
		"tls/tls.key": keyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	bin := buildWebhook(b, dir)
	port, metricsAddr, healthAddr := freePort(b), freeAddr(b), freeAddr(b)
	// The flags of the chart's Deployment, with its default log level.
	cmd := exec.Command(bin, "--config="+filepath.Join(dir, "config.yaml"), "--cert-dir="+certDir,
		"--host=127.0.0.1", "--port="+strconv.Itoa(port), "--metrics-bind-address="+metricsAddr,
		"--health-probe-bind-address="+healthAddr, "--zap-log-level=info",
		"--namespace=dumpcatcher-system", "--kubeconfig="+filepath.Join(dir, "kubeconfig"))
	logs := &countingWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("webhook exit after SIGTERM: %v\n%s", err, logs.tail())
			}
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
			b.Errorf("webhook did not stop within %s of SIGTERM", stopTimeout)
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := http.Get("http://" + healthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			b.Fatalf("webhook exited: %v\n%s", err, logs.tail())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("webhook not ready within %s\n%s", readyTimeout, logs.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &webhookProc{pid: cmd.Process.Pid, url: fmt.Sprintf("https://127.0.0.1:%d%s", port, admission.Path), metrics: "http://" + metricsAddr + "/metrics", pool: pool}
}

// buildWebhook builds cmd/dumpcatcher-webhook as Dockerfile.webhook does.
func buildWebhook(b testing.TB, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "dumpcatcher-webhook")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", bin,
		"github.com/dumpcatcher/dumpcatcher/cmd/dumpcatcher-webhook")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/dumpcatcher-webhook: %v\n%s", err, out)
	}
	return bin
}

// reviewOf is the AdmissionReview of the pod in a golden input; its UID is
// a fixed-width placeholder each request overwrites.
type review struct {
	body   []byte
	uidPos int
}

const uidPlaceholder = "00000000-0000-4000-8000-000000000000"

func reviewOf(b testing.TB, file string) review {
	b.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	var c struct {
		Namespace string          `json:"namespace"`
		Pod       json.RawMessage `json:"pod"`
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(j, &c); err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: uidPlaceholder, Operation: admissionv1.Create, Namespace: c.Namespace,
			Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Object:   runtime.RawExtension{Raw: c.Pod},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	return review{body: body, uidPos: bytes.Index(body, []byte(uidPlaceholder))}
}

// withUID is a copy of the review with the request's UID set to the i-th.
func (r review) withUID(i int) ([]byte, string) {
	body := slices.Clone(r.body)
	uid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	copy(body[r.uidPos:], uid)
	return body, uid
}

type loadResult struct {
	// latencies count from when each request was due; service from when
	// it was sent (without the wait for a free client).
	latencies, service []time.Duration
	elapsed            time.Duration
	errors             int64
	firstErr           error
}

// load sends n admissions due at start + i/rate from clients connections.
func (w *webhookProc) load(b testing.TB, r review, n, rate, clients int) loadResult {
	b.Helper()
	due := make(chan int, clients)
	lat, service := make([]time.Duration, n), make([]time.Duration, n)
	var errs atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now().Add(50 * time.Millisecond)
	interval := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	for range clients {
		client := &http.Client{
			Timeout: 10 * time.Second, // the API server's default webhook timeout
			Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: w.pool, MinVersion: tls.VersionTLS12},
				MaxIdleConnsPerHost: 1,
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer client.CloseIdleConnections()
			for i := range due {
				body, uid := r.withUID(i)
				at, sent := start.Add(time.Duration(i)*interval), time.Now()
				if err := admit(client, w.url, body, uid); err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
				lat[i], service[i] = time.Since(at), time.Since(sent)
			}
		}()
	}
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		due <- i
	}
	close(due)
	wg.Wait()
	return loadResult{latencies: lat, service: service, elapsed: time.Since(start), errors: errs.Load(), firstErr: firstErr}
}

// admit posts one review and checks the answer.
func admit(c *http.Client, url string, body []byte, uid string) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	var out struct {
		Response struct {
			UID     string `json:"uid"`
			Allowed bool   `json:"allowed"`
			Patch   []byte `json:"patch"`
		} `json:"response"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return err
	}
	if out.Response.UID != uid || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		return fmt.Errorf("answer for %s: uid %s, allowed %v, %d bytes of patch", uid, out.Response.UID, out.Response.Allowed, len(out.Response.Patch))
	}
	return nil
}

// metric reads one unlabelled gauge from the webhook's /metrics.
func (w *webhookProc) metric(b testing.TB, name string) float64 {
	b.Helper()
	resp, err := http.Get(w.metrics)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	b.Fatalf("/metrics has no %s", name)
	return 0
}

// countingWriter keeps the last lines of the webhook's log (for errors)
// and counts the bytes, without holding it all.
type countingWriter struct {
	mu   sync.Mutex
	n    int64
	last []byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(len(p))
	c.last = append(c.last, p...)
	if len(c.last) > 16<<10 {
		c.last = slices.Clone(c.last[len(c.last)-8<<10:])
	}
	return len(p), nil
}

func (c *countingWriter) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.last)
}

func freeAddr(b testing.TB) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freePort(b testing.TB) int {
	b.Helper()
	_, p, err := net.SplitHostPort(freeAddr(b))
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
