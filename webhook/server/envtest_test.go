package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"
)

// rig is a real kube-apiserver and etcd (envtest) with the dumpcatcher
// webhook served over TLS and registered through a MutatingWebhookConfiguration.
type rig struct {
	api      *apiserver.Server
	cfg      *rest.Config
	client   *kubernetes.Clientset
	warnings *apiserver.Warnings
	health   string
	metrics  string
	stop     func()
	done     chan error
}

// startRig starts the control plane and the webhook. It skips the test when
// the binaries are not there, unless DUMPCATCHER_REQUIRE_REAL is set (as
// `make test` does), so a missing tool can never pass silently in CI.
func startRig(t testing.TB, log logr.Logger) *rig {
	t.Helper()
	api := apiserver.Start(t, apiserver.Options{
		// Registered through the configuration the Helm chart renders.
		MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{render.ForEnvtest(render.MutatingWebhook(t, "dumpcatcher-system", nil))},
	})
	r := &rig{api: api, cfg: api.Config, warnings: api.Warnings}
	r.client = kubernetes.NewForConfigOrDie(r.cfg)

	r.health = freeAddr(t)
	r.metrics = freeAddr(t)
	c, err := config.Parse([]byte("destination: s3://heap-dumps/envtest?endpoint=http://127.0.0.1:9000&path-style=true\ncredentialsSecret: dumpcatcher-s3\nsidecar: {image: dumpcatcher:envtest}\n"), "envtest")
	if err != nil {
		t.Fatal(err)
	}
	// The server's own client does not report to the test's recorder.
	serverCfg := rest.CopyConfig(api.Config)
	serverCfg.WarningHandler = nil
	ctx, cancel := context.WithCancel(context.Background())
	r.done = make(chan error, 1)
	go func() {
		r.done <- Run(ctx, serverCfg, Options{
			Config: c, Namespace: "dumpcatcher-system", Version: "envtest",
			Host: api.WebhookHost, Port: api.WebhookPort, CertDir: api.WebhookCertDir,
			MetricsAddr: r.metrics, HealthAddr: r.health,
			Registry: ctrlmetrics.Registry, Log: log,
		})
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-r.done:
				if err != nil {
					t.Errorf("webhook server: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("webhook server did not stop within 30s")
			}
		})
	}
	t.Cleanup(r.stop)
	waitFor(t, 60*time.Second, "webhook ready", func() error {
		select {
		case err := <-r.done:
			t.Fatalf("webhook server exited: %v", err)
		default:
		}
		return get200("http://" + r.health + "/readyz")
	})
	return r
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get200(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}

func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func (r *rig) namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	_, err := r.client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func testPod(name string, annotations map[string]string) *corev1.Pod {
	uid := int64(1000)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid},
			Containers:      []corev1.Container{{Name: "app", Image: "eclipse-temurin:17-jre"}},
		},
	}
}

func (r *rig) create(t testing.TB, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := r.client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, pod.Name, err)
	}
	return got
}

func isInjected(t testing.TB, pod *corev1.Pod) bool {
	t.Helper()
	raw, ok := pod.Annotations[inject.AnnotationStatus]
	if !ok {
		return false
	}
	st, err := inject.ParseStatus(raw)
	if err != nil {
		t.Fatalf("status annotation %q: %v", raw, err)
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != st.Sidecar {
		t.Fatalf("status says sidecar %q but initContainers are %v", st.Sidecar, pod.Spec.InitContainers)
	}
	return true
}

var optIn = map[string]string{inject.AnnotationInject: "true"}

func TestMain(m *testing.M) {
	// controller-runtime's packages log through its global logger.
	ctrllog.SetLogger(crzap.New(crzap.WriteTo(os.Stderr), crzap.Level(zapcore.WarnLevel)))
	goleak.VerifyTestMain(m)
}

func TestWebhookAgainstAPIServer(t *testing.T) {
	r := startRig(t, crzap.New(crzap.WriteTo(os.Stderr), crzap.Level(zapcore.WarnLevel)))
	r.namespace(t, "plain", nil)
	r.namespace(t, "enabled", map[string]string{inject.LabelInject: inject.LabelEnabled})
	r.namespace(t, "dumpcatcher-system", nil)
	r.namespace(t, "secure", map[string]string{"pod-security.kubernetes.io/enforce": "restricted", inject.LabelInject: inject.LabelEnabled})
	r.namespace(t, "golden", nil)

	t.Run("annotated pod is injected", func(t *testing.T) {
		got := r.create(t, "plain", testPod("annotated", optIn))
		if !isInjected(t, got) {
			t.Fatalf("not injected: %v", got.Annotations)
		}
		app := got.Spec.Containers[0]
		if jto := envValue(app, "JAVA_TOOL_OPTIONS"); jto != "-XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath=/dumpcatcher/dumps/ -XX:ErrorFile=/dumpcatcher/dumps/hs_err_pid%p.log" {
			t.Errorf("JAVA_TOOL_OPTIONS = %q", jto)
		}
		if app.Lifecycle == nil || app.Lifecycle.PreStop == nil || app.Lifecycle.PreStop.Exec == nil {
			t.Errorf("no preStop exec hook: %+v", app.Lifecycle)
		}
		if got.Spec.TerminationGracePeriodSeconds == nil || *got.Spec.TerminationGracePeriodSeconds != 60 {
			t.Errorf("terminationGracePeriodSeconds = %v, want 60", got.Spec.TerminationGracePeriodSeconds)
		}
		sc := got.Spec.InitContainers[0]
		if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("sidecar is not native on a 1.34 API server: %+v", sc.RestartPolicy)
		}
	})
	t.Run("native sidecar goes before the user's init containers, which are kept as they are", func(t *testing.T) {
		withInit := func(name string) *corev1.Pod {
			pod := testPod(name, nil)
			pod.Spec.InitContainers = []corev1.Container{
				{Name: "migrate", Image: "migrate:1", Command: []string{"migrate", "up"}, Env: []corev1.EnvVar{{Name: "DB", Value: "db:5432"}}},
				{Name: "warm", Image: "warm:1"},
			}
			return pod
		}
		plain := r.create(t, "plain", withInit("init-plain"))
		got := r.create(t, "enabled", withInit("init-injected"))
		if !isInjected(t, got) {
			t.Fatal("not injected")
		}
		if len(got.Spec.InitContainers) != 3 {
			t.Fatalf("init containers: %d, want the sidecar and the user's two", len(got.Spec.InitContainers))
		}
		if diff := cmp.Diff(plain.Spec.InitContainers, got.Spec.InitContainers[1:]); diff != "" {
			t.Errorf("the user's init containers changed (-not injected +injected):\n%s", diff)
		}
	})
	t.Run("labelled namespace injects unannotated pods", func(t *testing.T) {
		if got := r.create(t, "enabled", testPod("by-label", nil)); !isInjected(t, got) {
			t.Fatal("not injected")
		}
	})
	untouched := []struct {
		name, ns string
		ann      map[string]string
	}{
		{"opt-out", "enabled", map[string]string{inject.AnnotationInject: "false"}},
		{"unannotated", "plain", nil},
		{"kube-system", "kube-system", optIn},
		{"own-namespace", "dumpcatcher-system", optIn},
	}
	for _, tc := range untouched {
		t.Run(tc.name+" is untouched", func(t *testing.T) {
			pod := testPod(tc.name, tc.ann)
			got := r.create(t, tc.ns, pod)
			if isInjected(t, got) || len(got.Spec.InitContainers) != 0 || len(got.Spec.Containers) != 1 || len(got.Spec.Volumes) != 0 {
				t.Fatalf("pod was changed: %+v", got.Spec)
			}
		})
	}
	t.Run("invalid annotation is denied naming it", func(t *testing.T) {
		pod := testPod("bad", map[string]string{inject.AnnotationInject: "true", inject.AnnotationPreStop: "sometimes"})
		_, err := r.client.CoreV1().Pods("plain").Create(context.Background(), pod, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `annotation dumpcatcher.io/prestop: invalid value "sometimes"`) {
			t.Fatalf("err = %v, want a denial naming the annotation", err)
		}
	})
	t.Run("warnings reach the client", func(t *testing.T) {
		pod := testPod("no-uid", optIn)
		pod.Spec.SecurityContext = nil
		r.warnings.Take()
		r.create(t, "plain", pod)
		w := strings.Join(r.warnings.Take(), "\n")
		if !strings.Contains(w, `container "app" has no runAsUser`) {
			t.Fatalf("warnings = %q", w)
		}
	})
	t.Run("restricted namespace admits the injected pod", func(t *testing.T) {
		// A pod that breaks "restricted" is rejected: the namespace enforces it.
		if _, err := r.client.CoreV1().Pods("secure").Create(context.Background(), testPod("lax", nil), metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
			t.Fatalf("a non-compliant pod was not rejected: %v", err)
		}
		got := r.create(t, "secure", restrictedPod("hardened"))
		if !isInjected(t, got) {
			t.Fatal("not injected")
		}
	})
	t.Run("every golden output is accepted by the API server", func(t *testing.T) {
		files, err := filepath.Glob("../inject/testdata/*.golden.yaml")
		if err != nil || len(files) < 20 {
			t.Fatalf("golden files: %d, %v", len(files), err)
		}
		n := 0
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Injected bool        `json:"injected"`
				Pod      *corev1.Pod `json:"pod"`
			}
			if err := yaml.Unmarshal(data, &g); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if !g.Injected {
				continue
			}
			n++
			g.Pod.Namespace = ""
			_, err = r.client.CoreV1().Pods("golden").Create(context.Background(), g.Pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Errorf("%s: rejected: %v", filepath.Base(f), err)
			}
		}
		t.Logf("%d injected golden pods accepted", n)
	})
	t.Run("metrics count admissions", func(t *testing.T) {
		resp, err := http.Get("http://" + r.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		for _, series := range []string{
			`dumpcatcher_webhook_admissions_total{outcome="injected"}`,
			`dumpcatcher_webhook_admissions_total{outcome="denied"} 1`,
			`dumpcatcher_webhook_admission_duration_seconds_bucket{outcome="injected",le=`,
		} {
			if !strings.Contains(string(b), series) {
				t.Errorf("/metrics has no %s", series)
			}
		}
		if err := get200("http://" + r.health + "/healthz"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rotated certificate is served without a restart", func(t *testing.T) {
		dir := r.api.WebhookCertDir
		addr := net.JoinHostPort(r.api.WebhookHost, fmt.Sprint(r.api.WebhookPort))
		origCert, _ := os.ReadFile(filepath.Join(dir, "tls.crt"))
		origKey, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
		before := servedFingerprint(t, addr)
		rotated := certs.NewNamedCA(t, "rotated").Serving(t, "127.0.0.1")
		newCert, newKey := rotated.CertPEM, rotated.KeyPEM
		writeKeyPair(t, dir, newCert, newKey)
		want := fingerprintPEM(t, newCert)
		waitFor(t, 30*time.Second, "new certificate served", func() error {
			if got := servedFingerprint(t, addr); got != want {
				return fmt.Errorf("still serving %x", got[:4])
			}
			return nil
		})
		if before == want {
			t.Fatal("test certificate equals the original")
		}
		writeKeyPair(t, dir, origCert, origKey)
		waitFor(t, 30*time.Second, "original certificate served again", func() error {
			if servedFingerprint(t, addr) != before {
				return errors.New("not yet")
			}
			return nil
		})
		if got := r.create(t, "plain", testPod("after-rotation", optIn)); !isInjected(t, got) {
			t.Fatal("not injected after the certificate came back")
		}
	})
	t.Run("webhook down and failurePolicy Ignore: pods are still created", func(t *testing.T) {
		r.stop()
		got := r.create(t, "plain", testPod("webhook-down", optIn))
		if isInjected(t, got) {
			t.Fatal("injected with the webhook stopped?")
		}
	})
}

func restrictedPod(name string) *corev1.Pod {
	yes, no := true, false
	uid := int64(10001)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "app", Image: "app:1", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func servedFingerprint(t testing.TB, addr string) [32]byte {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the served certificate only
	if err != nil {
		return [32]byte{}
	}
	defer conn.Close()
	return sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
}

func fingerprintPEM(t testing.TB, certPEM []byte) [32]byte {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("bad PEM")
	}
	return sha256.Sum256(b.Bytes)
}

// writeKeyPair replaces both files the way cert-manager's Secret volume
// update does: new files renamed into place.
func writeKeyPair(t testing.TB, dir string, cert, key []byte) {
	t.Helper()
	for name, data := range map[string][]byte{"tls.key": key, "tls.crt": cert} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}
