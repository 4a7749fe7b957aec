// Package apiserver starts a real kube-apiserver and etcd for tests
// (controller-runtime's envtest, binaries from $KUBEBUILDER_ASSETS), the one
// rig of the webhook server's suite, the chart's suite and the webhook load
// benchmark.
//
//	api := apiserver.Start(t, apiserver.Options{CRDDirs: ...})
//	client := kubernetes.NewForConfigOrDie(api.Config)
//	... api.Warnings.Take() ...
//
// With Options.Aggregation the kube-apiserver proxies to extension API
// servers (the aggregation layer) and RegisterAPIService puts one serving
// on 127.0.0.1 behind an APIService:
//
//	api := apiserver.Start(t, apiserver.Options{Aggregation: true})
//	kubeconfig := api.DelegatingKubeconfig(t, "my-api") // the backend's identity
//	cert := certs.NewCA(t).Serving(t, apiserver.ServiceDNSName(group, version), "127.0.0.1")
//	... serve on 127.0.0.1:port with cert ...
//	api.RegisterAPIService(t, group, version, "127.0.0.1:"+port, cert.CAPEM)
//
// Without the binaries the test is skipped, or fails when
// DUMPCATCHER_REQUIRE_REAL is set (see realpart). The control plane stops
// when the test ends.
package apiserver

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
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
	// Aggregation configures the aggregation layer: the kube-apiserver's
	// requestheader (front-proxy) flags with a CA and client certificate
	// generated for the test (Server.FrontProxy), aggregator routing off
	// (see RegisterAPIService).
	Aggregation bool
}

// FrontProxy is what the aggregation layer authenticates with towards an
// extension API server: a client certificate signed by a CA of its own,
// with the user in the X-Remote-* headers.
type FrontProxy struct {
	// CA signs Client; an extension API server trusts it as its
	// requestheader client CA (the kube-apiserver publishes it in the
	// kube-system/extension-apiserver-authentication ConfigMap).
	CA *certs.CA
	// CAFile is CA's PEM, the kube-apiserver's --requestheader-client-ca-file.
	CAFile string
	// Client is the kube-apiserver's proxy client certificate (CN
	// FrontProxyClientName), for a test that talks to a backend directly
	// as the aggregator does.
	Client certs.Pair
}

// Front-proxy header names and the proxy client's name, as kubeadm sets them.
const (
	FrontProxyClientName = "front-proxy-client"
	RemoteUserHeader     = "X-Remote-User"
	RemoteGroupHeader    = "X-Remote-Group"
	RemoteExtraPrefix    = "X-Remote-Extra-"
)

// apiServiceTimeout bounds the wait for a registered APIService to serve.
const apiServiceTimeout = 90 * time.Second

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
	// FrontProxy is set with Options.Aggregation.
	FrontProxy *FrontProxy
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
	var fp *FrontProxy
	if opts.Aggregation {
		fp = configureAggregation(t, env)
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
	s := &Server{Env: env, Config: rest.CopyConfig(cfg), Warnings: &Warnings{}, FrontProxy: fp}
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

// configureAggregation sets the kube-apiserver's front-proxy flags with a
// CA and client certificate generated for the test.
//
// envtest has no Service network and no pods. With
// --enable-aggregator-routing=true the aggregator resolves a Service
// through its EndpointSlices, which rejects ExternalName Services
// (k8s.io/apiserver/pkg/util/proxy.ResolveEndpoint: "unsupported service
// type") and whose addresses may not be loopback (EndpointSlice
// validation), so a backend would have to listen on a host address.
// Without it (the default) the aggregator uses proxy.ResolveCluster, which
// sends an ExternalName Service to <externalName>:<APIService port>: so
// RegisterAPIService registers through an ExternalName Service naming
// 127.0.0.1 and aggregator routing stays off.
func configureAggregation(t testing.TB, env *envtest.Environment) *FrontProxy {
	t.Helper()
	dir := t.TempDir()
	ca := certs.NewNamedCA(t, "front-proxy-ca")
	fp := &FrontProxy{CA: ca, CAFile: filepath.Join(dir, "front-proxy-ca.crt"), Client: ca.Client(t, FrontProxyClientName)}
	fp.Client.WriteAs(t, dir, "front-proxy-client.crt", "front-proxy-client.key", "front-proxy-ca.crt")
	env.ControlPlane.GetAPIServer().Configure().
		Set("requestheader-client-ca-file", fp.CAFile).
		Set("requestheader-allowed-names", FrontProxyClientName).
		Set("requestheader-username-headers", RemoteUserHeader).
		Set("requestheader-group-headers", RemoteGroupHeader).
		Set("requestheader-extra-headers-prefix", RemoteExtraPrefix).
		Set("proxy-client-cert-file", filepath.Join(dir, "front-proxy-client.crt")).
		Set("proxy-client-key-file", filepath.Join(dir, "front-proxy-client.key")).
		Set("enable-aggregator-routing", "false")
	return fp
}

// DelegatingKubeconfig returns a kubeconfig of a new user name bound, as
// an extension API server's chart binds its ServiceAccount, to the
// ClusterRole system:auth-delegator (TokenReviews, SubjectAccessReviews)
// and the Role kube-system/extension-apiserver-authentication-reader (the
// front-proxy CA and header names): what a backend needs to trust the
// front proxy and delegate authorization.
func (s *Server) DelegatingKubeconfig(t testing.TB, name string) []byte {
	t.Helper()
	kc := s.Kubeconfig(t, name)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	subj := []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: name}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + ":auth-delegator"}, Subjects: subj,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("binding %s to system:auth-delegator: %v", name, err)
	}
	if _, err := cs.RbacV1().RoleBindings(metav1.NamespaceSystem).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + ":auth-reader"}, Subjects: subj,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("binding %s to extension-apiserver-authentication-reader: %v", name, err)
	}
	return kc
}

// ServiceNamespace holds the Services RegisterAPIService creates.
const ServiceNamespace = metav1.NamespaceDefault

// ServiceName is the name of the Service RegisterAPIService creates for
// group and version ("v1alpha1-dumps-example-io").
func ServiceName(group, version string) string {
	return version + "-" + strings.ReplaceAll(group, ".", "-")
}

// ServiceDNSName is the name the aggregator verifies the backend's serving
// certificate against: <ServiceName>.<ServiceNamespace>.svc.
func ServiceDNSName(group, version string) string {
	return ServiceName(group, version) + "." + ServiceNamespace + ".svc"
}

// RegisterAPIService serves group/version through the aggregation layer
// (Options.Aggregation) from a backend listening on hostPort (servers in
// tests listen on 127.0.0.1): an ExternalName Service ServiceName in
// ServiceNamespace naming the host, and an APIService on the port. The
// aggregator verifies the backend's serving certificate for ServiceDNSName
// against caBundle, or skips verification when caBundle is empty. It
// returns once GET /apis/<group>/<version> answers 200 through the
// kube-apiserver, and fails the test after apiServiceTimeout.
func (s *Server) RegisterAPIService(t testing.TB, group, version, hostPort string, caBundle []byte) {
	t.Helper()
	if s.FrontProxy == nil {
		t.Fatal("apiserver: RegisterAPIService needs Options{Aggregation: true}")
	}
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("apiserver: RegisterAPIService: host:port %q: %v", hostPort, err)
	}
	port, err := strconv.ParseInt(portStr, 10, 32)
	if err != nil {
		t.Fatalf("apiserver: RegisterAPIService: port of %q: %v", hostPort, err)
	}
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	name := ServiceName(group, version)
	if _, err := cs.CoreV1().Services(ServiceNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: host},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the Service %s/%s: %v", ServiceNamespace, name, err)
	}
	spec := map[string]any{
		"group": group, "version": version, "groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
		"service": map[string]any{"name": name, "namespace": ServiceNamespace, "port": port},
	}
	if len(caBundle) > 0 {
		spec["caBundle"] = base64.StdEncoding.EncodeToString(caBundle)
	} else {
		spec["insecureSkipTLSVerify"] = true
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": version + "." + group},
		"spec":     spec,
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(gvr).Create(ctx, apiService, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the APIService %s.%s: %v", version, group, err)
	}
	quiet := rest.CopyConfig(s.Config)
	quiet.WarningHandler = rest.NoWarnings{}
	qcs, err := kubernetes.NewForConfig(quiet)
	if err != nil {
		t.Fatal(err)
	}
	rc := qcs.Discovery().RESTClient()
	path := "/apis/" + group + "/" + version
	for deadline := time.Now().Add(apiServiceTimeout); ; {
		var code int
		body, err := rc.Get().AbsPath(path).Do(ctx).StatusCode(&code).Raw()
		if err == nil && code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the APIService %s.%s did not serve %s through the aggregator within %s: %d %v %.200s", version, group, path, apiServiceTimeout, code, err, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
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
