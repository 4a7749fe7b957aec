// Package apiserver starts a real kube-apiserver and etcd for tests
// (controller-runtime's envtest, binaries from $KUBEBUILDER_ASSETS), the one
// rig of the webhook server's suite, the chart's suite and the webhook load
// benchmark.
//
//	api := apiserver.Start(t, apiserver.Options{CRDDirs: ...})
//	client := kubernetes.NewForConfigOrDie(api.Config)
//	... api.Warnings.Take() ...
//
// Without the binaries the test is skipped, or fails when
// DUMPCATCHER_REQUIRE_REAL is set (see realpart). The control plane stops
// when the test ends.
package apiserver

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
)

// crdInstallTimeout bounds the wait for installed CRDs to be served.
const crdInstallTimeout = 60 * time.Second

// Options configure Start. The zero value is a bare control plane.
type Options struct {
	// MutatingWebhooks are registered by envtest, which points them at
	// WebhookHost:WebhookPort and writes a serving certificate they trust
	// into WebhookCertDir (tls.crt, tls.key). The webhook itself is the
	// caller's to serve there.
	MutatingWebhooks []*admissionregistrationv1.MutatingWebhookConfiguration
	// CRDDirs hold CustomResourceDefinitions to install (each must exist);
	// Start returns once they are served.
	CRDDirs []string
}

// Server is a running kube-apiserver and etcd.
type Server struct {
	// Env is the envtest environment, for what this package does not wrap.
	Env *envtest.Environment
	// Config is an admin's rest.Config whose warnings go to Warnings.
	Config *rest.Config
	// Warnings records the warnings the API server sent to Config's clients.
	Warnings *Warnings
	// Webhook* are where the MutatingWebhooks of Options must be served,
	// and the directory of the certificate they trust.
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
}

// Start starts the control plane with opts, skipping (or failing under
// DUMPCATCHER_REQUIRE_REAL) when $KUBEBUILDER_ASSETS is not set, and stops
// it with t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	assets := realpart.Assets(t)
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	if len(opts.MutatingWebhooks) > 0 {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			LocalServingHost: "127.0.0.1",
			MutatingWebhooks: opts.MutatingWebhooks,
		}
	}
	if len(opts.CRDDirs) > 0 {
		env.CRDInstallOptions = envtest.CRDInstallOptions{Paths: opts.CRDDirs, ErrorIfPathMissing: true, MaxTime: crdInstallTimeout}
	}
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest (kube-apiserver and etcd from %s): %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	t.Logf("kube-apiserver and etcd up in %s", time.Since(start).Round(time.Millisecond))
	s := &Server{Env: env, Config: rest.CopyConfig(cfg), Warnings: &Warnings{}}
	s.Config.WarningHandler = s.Warnings
	wio := env.WebhookInstallOptions
	s.WebhookHost, s.WebhookPort, s.WebhookCertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
	return s
}

// Kubeconfig returns a kubeconfig of a new user of the API server in groups
// (e.g. "system:masters"), for a process started by the test.
func (s *Server) Kubeconfig(t testing.TB, name string, groups ...string) []byte {
	t.Helper()
	user, err := s.Env.AddUser(envtest.User{Name: name, Groups: groups}, s.Config)
	if err != nil {
		t.Fatalf("adding user %s: %v", name, err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("kubeconfig of %s: %v", name, err)
	}
	return kc
}

// Warnings records API server warnings (a rest.WarningHandler).
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader records msg.
func (w *Warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// Take returns the warnings recorded since the last Take.
func (w *Warnings) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// ChartCRDs returns a directory with the CRDs test/tools/install.sh copies
// into $KUBEBUILDER_ASSETS/crds (cert-manager's and the ServiceMonitor's),
// stripped of the lines that are only Helm template directives, or "" when
// there is none: then the test logs it, or fails under
// DUMPCATCHER_REQUIRE_REAL. Any other template text fails the test rather
// than being guessed at.
func ChartCRDs(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(realpart.Assets(t), "crds")
	if _, err := os.Stat(dir); err != nil {
		if realpart.Required() {
			t.Fatalf("%s is missing: run test/tools/install.sh (it copies cert-manager's CRDs there)", dir)
		}
		t.Logf("no %s: what needs cert-manager or ServiceMonitor CRDs is skipped", dir)
		return ""
	}
	return stripHelmDirectives(t, dir)
}

// stripHelmDirectives copies the CRD files of dir into a temporary
// directory without lines that are only Helm template directives (the CRDs
// in cert-manager's chart are wrapped in {{- if ... }}).
func stripHelmDirectives(t testing.TB, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRD files in %s: %v", dir, err)
	}
	out := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for i, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "{{") && strings.HasSuffix(trimmed, "}}") {
				continue
			}
			if strings.Contains(line, "{{") {
				t.Fatalf("%s:%d: a template expression inside a CRD: %s", f, i+1, trimmed)
			}
			kept = append(kept, line)
		}
		if err := os.WriteFile(filepath.Join(out, filepath.Base(f)), []byte(strings.Join(kept, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
