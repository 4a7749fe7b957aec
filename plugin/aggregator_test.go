package plugin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestRealAggregatorDownload downloads through a REAL kube-apiserver's
// aggregation layer (envtest with front-proxy certificates and
// --enable-aggregator-routing) from a STUB backend (httptest, not the
// dumps API server: it serves one Dump and its download with net/http's
// Range support). It shows what the plugin relies on: the aggregator
// forwards Range, answers 206 with Content-Range, passes the
// X-Dumpcatcher-Sha256 header, and the chunks join to the original bytes.
func TestRealAggregatorDownload(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		if os.Getenv("DUMPCATCHER_REQUIRE_REAL") != "" {
			t.Fatal("KUBEBUILDER_ASSETS is not set; run `make tools` (make test does)")
		}
		t.Skip("KUBEBUILDER_ASSETS not set: run via `make test`")
	}
	// The aggregator refuses loopback endpoints: serve on a host address.
	hostIP := nonLoopbackIP(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := frontProxyCerts(t, dir)

	data := make([]byte, 5<<20+123)
	rand.Read(data)
	sum := sha256.Sum256(data)
	slow := make([]byte, 6<<20)
	rand.Read(slow)
	slowSum := sha256.Sum256(slow)
	var mu sync.Mutex
	var ranges []string
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const base = "/apis/dumps.dumpcatcher.io/v1alpha1"
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case base:
			fmt.Fprint(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"dumps.dumpcatcher.io/v1alpha1","resources":[`+
				`{"name":"dumps","singularName":"dump","namespaced":true,"kind":"Dump","verbs":["get","list","delete"]},`+
				`{"name":"dumps/download","singularName":"","namespaced":true,"kind":"Dump","verbs":["get"]}]}`)
		case base + "/namespaces/shop/dumps/d1":
			json.NewEncoder(w).Encode(map[string]any{"apiVersion": "dumps.dumpcatcher.io/v1alpha1", "kind": "Dump",
				"metadata": map[string]any{"name": "d1", "namespace": "shop"}, "encoding": "none", "size": len(data),
				"file": "java_pid1.hprof", "sha256": hex.EncodeToString(sum[:])})
		case base + "/namespaces/shop/dumps/d1/download":
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
			w.Header().Set("X-Dumpcatcher-Sha256", hex.EncodeToString(sum[:]))
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		case base + "/namespaces/shop/dumps/slow":
			json.NewEncoder(w).Encode(map[string]any{"apiVersion": "dumps.dumpcatcher.io/v1alpha1", "kind": "Dump",
				"metadata": map[string]any{"name": "slow", "namespace": "shop"}, "encoding": "none", "size": len(slow),
				"file": "slow.hprof", "sha256": hex.EncodeToString(slowSum[:])})
		case base + "/namespaces/shop/dumps/slow/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(&throttled{ResponseWriter: w, ctx: r.Context(), rate: slowRate}, r, "", time.Time{}, bytes.NewReader(slow))
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
		}
	}))
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	backend.Listener = ln
	backend.StartTLS()
	defer backend.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	env.ControlPlane.GetAPIServer().Configure().
		Set("requestheader-client-ca-file", caFile).
		Set("requestheader-allowed-names", "front-proxy-client").
		Set("requestheader-username-headers", "X-Remote-User").
		Set("requestheader-group-headers", "X-Remote-Group").
		Set("requestheader-extra-headers-prefix", "X-Remote-Extra-").
		Set("proxy-client-cert-file", certFile).
		Set("proxy-client-key-file", keyFile).
		Set("enable-aggregator-routing", "true")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dumpcatcher-system"}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().Services("dumpcatcher-system").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dumpcatcher-api"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(int32(port))}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	ready, pname, pport, proto := true, "https", int32(port), corev1.ProtocolTCP
	_, err = cs.DiscoveryV1().EndpointSlices("dumpcatcher-system").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "dumpcatcher-api-1", Labels: map[string]string{discoveryv1.LabelServiceName: "dumpcatcher-api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{hostIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &pport, Protocol: &proto}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1alpha1.dumps.dumpcatcher.io"},
		"spec": map[string]any{
			"group": "dumps.dumpcatcher.io", "version": "v1alpha1", "groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "dumpcatcher-system", "name": "dumpcatcher-api", "port": int64(443)},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	_, err = dynamic.NewForConfigOrDie(cfg).Resource(gvr).Create(ctx, apiService, metav1.CreateOptions{})
	mustCreate(err)

	// Wait until the aggregator routes to the stub.
	var out string
	for deadline := time.Now().Add(60 * time.Second); ; {
		out, _, err = runWith(ctx, kubeconfig, "get", "d1", "-n", "shop", "-o", "name")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil || out != "dump.dumps.dumpcatcher.io/d1\n" {
		t.Fatalf("get through the aggregator: %q, %v", out, err)
	}

	target := filepath.Join(dir, "d1.hprof")
	_, errOut, err := runWith(ctx, kubeconfig, "download", "d1", "-n", "shop", "-o", target, "--chunk-size", "1Mi")
	if err != nil {
		t.Fatalf("download: %v\n%s", err, errOut)
	}
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes (%v), want the %d original bytes", len(got), err, len(data))
	}
	if !strings.Contains(errOut, "SHA-256 verified") {
		t.Errorf("stderr %q does not say verified", errOut)
	}
	t.Run("slower than the 60 s cut", func(t *testing.T) {
		if testing.Short() {
			t.Skip("takes 80 s (-short)")
		}
		// One request for the whole dump, as a client without ranges makes.
		hc, err := rest.HTTPClientFor(admin.Config())
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			n    int64
			err  error
			took time.Duration
		}
		whole := make(chan result, 1)
		go func() {
			start := time.Now()
			resp, err := hc.Get(strings.TrimSuffix(admin.Config().Host, "/") + "/apis/dumps.dumpcatcher.io/v1alpha1/namespaces/shop/dumps/slow/download")
			if err != nil {
				whole <- result{err: err, took: time.Since(start)}
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
			whole <- result{n: n, err: err, took: time.Since(start)}
		}()
		start := time.Now()
		target := filepath.Join(dir, "slow.hprof")
		_, errOut, err := runWith(ctx, kubeconfig, "download", "slow", "-n", "shop", "-o", target, "--chunk-size", "1Mi")
		took := time.Since(start)
		if err != nil {
			t.Fatalf("chunked download: %v\n%s", err, errOut)
		}
		if got, _ := os.ReadFile(target); !bytes.Equal(got, slow) || took < 60*time.Second {
			t.Fatalf("chunked download: %d bytes in %v, want the %d original bytes in more than 60 s", len(got), took, len(slow))
		}
		t.Logf("chunked download (1 MiB ranges): %d bytes in %v, byte-equal, SHA-256 verified", len(slow), took.Round(time.Second))
		r := <-whole
		t.Logf("one request for the whole dump: %d of %d bytes in %v, error %v", r.n, len(slow), r.took.Round(time.Second), r.err)
		if r.took < 55*time.Second {
			t.Errorf("the whole-dump request ended after %v (%v): not the 60 s cut this test is about", r.took, r.err)
		}
		if r.n >= int64(len(slow)) && r.err == nil {
			t.Errorf("one request streamed for %v without a cut: the kube-apiserver's 60 s timeout did not apply", r.took)
		}
	})

	var want []string
	for p := 0; p < len(data); p += 1 << 20 {
		want = append(want, "bytes="+strconv.Itoa(p)+"-"+strconv.Itoa(min(p+1<<20, len(data))-1))
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(ranges, " ") != strings.Join(want, " ") {
		t.Errorf("the stub saw Range headers %q, want %q", ranges, want)
	}
}

func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address for the aggregator's endpoint")
	return ""
}

// frontProxyCerts writes a CA and the aggregator's client certificate
// (CN front-proxy-client) signed by it.
func frontProxyCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "front-proxy-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "front-proxy-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	cliDER, err := x509.CreateCertificate(rand.Reader, cliTmpl, caCert, &cliKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(cliKey)
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	for f, b := range map[string]*pem.Block{ca: {Type: "CERTIFICATE", Bytes: caDER}, cert: {Type: "CERTIFICATE", Bytes: cliDER}, key: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// slowRate is the stub's pace for the slow dump: 6 MiB take 80 s.
const slowRate = 6 << 20 / 80

// throttled writes at most rate bytes a second.
type throttled struct {
	http.ResponseWriter
	ctx  context.Context
	rate int
}

func (w *throttled) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		n := min(len(p), w.rate/10)
		k, err := w.ResponseWriter.Write(p[:n])
		done += k
		if err != nil {
			return done, err
		}
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[n:]
		select {
		case <-w.ctx.Done():
			return done, w.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return done, nil
}
