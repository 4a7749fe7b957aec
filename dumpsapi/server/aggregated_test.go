package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/klauspost/compress/gzip"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/dumpsapi/server"
	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/storagetest"
)

const (
	apiNamespace = "dumpcatcher-system"
	base         = "/apis/dumps.dumpcatcher.io/v1alpha1"
)

// rig is a kube-apiserver (envtest) with the aggregation layer configured,
// the dumps API server running in-process on 127.0.0.1 behind an
// APIService, a MinIO destination ("default") and a file:// one ("nas").
type rig struct {
	api          *apiserver.Server
	admin        *rest.Config
	alice, bob   *rest.Config
	minio, nas   storage.Bucket
	nasDir       string
	kube         *kubernetes.Clientset
	serverCancel context.CancelFunc
	// direct reaches the dumps API server itself, as the aggregator does:
	// with the front-proxy client certificate and X-Remote-User.
	direct    *http.Client
	serverURL string
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, file string, data []byte) {
	t.Helper()
	must(t, os.WriteFile(file, data, 0o600))
}

func startRig(t *testing.T) *rig {
	t.Helper()
	// The aggregation layer: the kube-apiserver proxies with a front-proxy
	// client certificate and X-Remote-* headers the extension server
	// trusts through the extension-apiserver-authentication ConfigMap.
	api := apiserver.Start(t, apiserver.Options{Aggregation: true})
	mio := miniotest.Start(t, miniotest.Options{})
	dir := t.TempDir()
	r := &rig{api: api, admin: api.Config}
	cfg := api.Config
	r.kube = kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()

	// The server's own identity: system:auth-delegator and the
	// extension-apiserver-authentication-reader Role, as the chart binds.
	write(t, filepath.Join(dir, "kubeconfig"), api.DelegatingKubeconfig(t, "dumpcatcher-api"))

	// Users: alice downloads in shop, bob reads in bank.
	for _, ns := range []string{"shop", "bank", apiNamespace} {
		_, err := r.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must(t, err)
	}
	role := func(ns, name, user string, rules ...rbacv1.PolicyRule) {
		_, err := r.kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
		must(t, err)
		_, err = r.kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + user}, Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		}, metav1.CreateOptions{})
		must(t, err)
	}
	group := []string{v1alpha1.GroupName}
	reader := rbacv1.PolicyRule{APIGroups: group, Resources: []string{"dumps"}, Verbs: []string{"get", "list"}}
	downloader := rbacv1.PolicyRule{APIGroups: group, Resources: []string{"dumps/download", "dumps/presign"}, Verbs: []string{"get"}}
	role("shop", "dumps-downloader", "alice", reader, downloader)
	role("bank", "dumps-reader", "bob", reader)
	for name, p := range map[string]**rest.Config{"alice": &r.alice, "bob": &r.bob} {
		u, err := api.Env.AddUser(envtest.User{Name: name}, cfg)
		must(t, err)
		*p = u.Config()
	}

	// The stores.
	credDir := filepath.Join(dir, "creds")
	must(t, os.Mkdir(credDir, 0o700))
	mio.WriteCredentials(t, credDir)
	r.nasDir = filepath.Join(dir, "nas")
	must(t, os.Mkdir(r.nasDir, 0o700))
	configFile := filepath.Join(dir, "config.yaml")
	write(t, configFile, []byte(fmt.Sprintf("destinations:\n- name: default\n  url: %q\n  credentialsDir: %s\n- name: nas\n  url: file://%s\npresign:\n  enabled: true\n  expiry: 5m\n",
		mio.URL("apitest"), credDir, r.nasDir)))
	md, err := contract.ParseDestination(mio.URL("apitest"))
	must(t, err)
	r.minio, err = storage.Open(md, storage.Options{CredentialsDir: credDir})
	must(t, err)
	fd, err := contract.ParseDestination("file://" + r.nasDir)
	must(t, err)
	r.nas, err = storage.Open(fd, storage.Options{})
	must(t, err)

	// The server, with the flags the chart passes, and a serving
	// certificate for the name the aggregator verifies.
	servingCA := certs.NewNamedCA(t, "dumpcatcher-api-ca")
	servingCA.Serving(t, apiserver.ServiceDNSName(v1alpha1.GroupName, "v1alpha1"), "localhost", "127.0.0.1").
		WriteAs(t, dir, "serving.crt", "serving.key", "")
	certFile, keyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r.serverURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	r.direct = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{api.FrontProxy.Client.TLS(t)}, RootCAs: servingCA.Pool()}}}
	o := server.NewOptions()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	must(t, fs.Parse([]string{
		"--secure-port", fmt.Sprint(port), "--bind-address", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-private-key-file", keyFile,
		"--kubeconfig", filepath.Join(dir, "kubeconfig"), "--config", configFile,
	}))
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := server.LoadConfig(configFile)
	must(t, err)
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(sctx, o, c, logr.Discard()) }()
	r.serverCancel = cancel
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop within 30 s")
		}
	})

	// Registration: an ExternalName Service and the APIService; it
	// returns once the aggregator serves the group version.
	api.RegisterAPIService(t, v1alpha1.GroupName, "v1alpha1", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), servingCA.CertPEM)
	if code, body := r.do(t, r.admin, "GET", base, nil); code != 200 {
		t.Fatalf("the APIService is not available: %d %s", code, body)
	}
	return r
}

// kubeconfigFor renders cfg (envtest's client-certificate users) as a
// kubeconfig file.
func kubeconfigFor(t *testing.T, cfg *rest.Config) []byte {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "user"}
	kc.CurrentContext = "envtest"
	data, err := clientcmd.Write(*kc)
	must(t, err)
	return data
}

// do sends a request through the kube-apiserver as cfg's user.
func (r *rig) do(t *testing.T, cfg *rest.Config, method, path string, hdr http.Header) (int, []byte) {
	t.Helper()
	resp := r.open(t, cfg, method, path, hdr)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, body
}

func (r *rig) open(t *testing.T, cfg *rest.Config, method, path string, hdr http.Header) *http.Response {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	must(t, err)
	req, err := http.NewRequest(method, strings.TrimSuffix(cfg.Host, "/")+path, nil)
	must(t, err)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	must(t, err)
	return resp
}

func gzipped(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write(data)
	must(t, err)
	must(t, zw.Close())
	return b.Bytes()
}

func readAll(t *testing.T, r io.Reader) []byte {
	b, err := io.ReadAll(r)
	must(t, err)
	return b
}

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// dump is one stored object of the test.
type dump struct {
	store       storage.Bucket
	key         string
	stored, raw []byte
	name        string // learned from the list
}

func TestAggregatedAPI(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	raw := readAll(t, storagetest.Stream(1, 3<<20))
	bankSecret := []byte("bank: password=hunter2 " + strings.Repeat("x", 1000))
	dumps := map[string]*dump{
		"shop-minio": {store: r.minio, key: "shop/deployment-web/web-1/app/20261129T190405.123Z-oom-java_pid1.hprof.gz", raw: raw, stored: gzipped(t, raw)},
		"shop-nas":   {store: r.nas, key: "shop/deployment-web/web-2/app/20261129T190406.000Z-prestop-java_pid1.hprof", raw: raw[:2<<20], stored: raw[:2<<20]},
		"bank-minio": {store: r.minio, key: "bank/deployment-core/core-1/app/20261129T190407.000Z-oom-java_pid1.hprof", raw: bankSecret, stored: bankSecret},
		"bank-nas":   {store: r.nas, key: "bank/deployment-core/core-2/app/20261129T190408.000Z-manual-java_pid1.hprof", raw: bankSecret, stored: bankSecret},
	}
	for _, d := range dumps {
		md := map[string]string{"complete": "true", "encoding": "identity", "original-size": fmt.Sprint(len(d.raw))}
		enc := ""
		if strings.HasSuffix(d.key, ".gz") {
			md["encoding"], enc = "gzip", "gzip"
		}
		_, err := d.store.Put(ctx, d.key, bytes.NewReader(d.stored), storage.PutOptions{Metadata: md, ContentEncoding: enc})
		must(t, err)
	}
	// Names from the admin's list across namespaces.
	code, body := r.do(t, r.admin, "GET", base+"/dumps", nil)
	if code != 200 {
		t.Fatalf("admin list -A: %d %s", code, body)
	}
	var all v1alpha1.DumpList
	must(t, json.Unmarshal(body, &all))
	for _, item := range all.Items {
		for _, d := range dumps {
			if strings.HasSuffix(item.URL, d.key) && (item.Destination == "nas") == (d.store == r.nas) {
				d.name = item.Name
			}
		}
	}
	for k, d := range dumps {
		if d.name == "" {
			t.Fatalf("%s not in the admin's list: %s", k, body)
		}
	}
	shopMinio, shopNas, bankMinio := dumps["shop-minio"], dumps["shop-nas"], dumps["bank-minio"]
	path := func(ns, name, sub string) string {
		p := base + "/namespaces/" + ns + "/dumps"
		if name != "" {
			p += "/" + name
		}
		if sub != "" {
			p += "/" + sub
		}
		return p
	}

	t.Run("ListAndGet", func(t *testing.T) {
		code, body := r.do(t, r.alice, "GET", path("shop", "", ""), nil)
		var l v1alpha1.DumpList
		if code != 200 || json.Unmarshal(body, &l) != nil || len(l.Items) != 2 {
			t.Fatalf("alice list shop: %d %s", code, body)
		}
		code, body = r.do(t, r.alice, "GET", path("shop", shopMinio.name, ""), nil)
		var d v1alpha1.Dump
		if code != 200 || json.Unmarshal(body, &d) != nil {
			t.Fatalf("alice get: %d %s", code, body)
		}
		if d.SHA256 != hexsum(shopMinio.stored) || d.Encoding != "gzip" || d.OriginalSize != int64(len(raw)) || d.Complete == nil || !*d.Complete ||
			d.Labels[v1alpha1.LabelReason] != "oom" || d.Destination != "default" || d.Size != int64(len(shopMinio.stored)) {
			t.Errorf("alice get = %s", body)
		}
	})

	t.Run("SelectorsWithClientGo", func(t *testing.T) {
		dyn := dynamic.NewForConfigOrDie(r.alice)
		res := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("dumps")).Namespace("shop")
		for _, tc := range []struct {
			opts metav1.ListOptions
			want []string
		}{
			{metav1.ListOptions{LabelSelector: "dumpcatcher.io/reason=oom"}, []string{shopMinio.name}},
			{metav1.ListOptions{LabelSelector: "dumpcatcher.io/pod=web-2,dumpcatcher.io/container=app,dumpcatcher.io/workload=deployment-web"}, []string{shopNas.name}},
			{metav1.ListOptions{LabelSelector: "dumpcatcher.io/reason in (crash)"}, nil},
			{metav1.ListOptions{FieldSelector: "metadata.name=" + shopNas.name}, []string{shopNas.name}},
		} {
			l, err := res.List(ctx, tc.opts)
			if err != nil {
				t.Errorf("%+v: %v", tc.opts, err)
				continue
			}
			var got []string
			for _, it := range l.Items {
				got = append(got, it.GetName())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%+v: %v, want %v", tc.opts, got, tc.want)
			}
		}
	})

	t.Run("Table", func(t *testing.T) {
		code, body := r.do(t, r.alice, "GET", path("shop", "", ""), http.Header{"Accept": {"application/json;as=Table;v=v1;g=meta.k8s.io"}})
		var tbl metav1.Table
		if code != 200 || json.Unmarshal(body, &tbl) != nil {
			t.Fatalf("table: %d %s", code, body)
		}
		var cols []string
		for _, c := range tbl.ColumnDefinitions {
			cols = append(cols, c.Name)
		}
		if fmt.Sprint(cols) != "[Name Workload Pod Container Reason Size Complete Age]" || len(tbl.Rows) != 2 {
			t.Errorf("table: %s", body)
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		for _, tc := range []struct {
			who    string
			cfg    *rest.Config
			method string
			path   string
			code   int
		}{
			{"alice", r.alice, "GET", path("bank", "", ""), 403},
			{"alice", r.alice, "GET", base + "/dumps", 403},
			{"alice", r.alice, "GET", path("bank", bankMinio.name, ""), 403},
			{"alice", r.alice, "GET", path("bank", bankMinio.name, "download"), 403},
			{"alice", r.alice, "DELETE", path("shop", shopMinio.name, ""), 403},
			{"bob", r.bob, "GET", path("bank", "", ""), 200},
			{"bob", r.bob, "GET", path("bank", bankMinio.name, ""), 200},
			{"bob", r.bob, "GET", path("bank", bankMinio.name, "download"), 403},
			{"bob", r.bob, "GET", path("bank", bankMinio.name, "presign"), 403},
			{"bob", r.bob, "GET", path("shop", "", ""), 403},
		} {
			code, body := r.do(t, tc.cfg, tc.method, tc.path, nil)
			if code != tc.code {
				t.Errorf("%s %s %s: %d %s, want %d", tc.who, tc.method, tc.path, code, body, tc.code)
			}
		}
	})

	t.Run("CraftedNamesStayInTheirNamespace", func(t *testing.T) {
		for _, p := range []string{
			path("shop", bankMinio.name, ""),
			path("shop", bankMinio.name, "download"),
			path("shop", dumps["bank-nas"].name, "download"),
			path("shop", "..%2Fbank%2F"+bankMinio.name, "download"),
			path("shop", "%2E%2E", "download"),
			path("shop", bankMinio.name+"%2F..%2F..", "download"),
			base + "/namespaces/shop%2F..%2Fbank/dumps/" + bankMinio.name + "/download",
			base + "/namespaces/shop/../bank/dumps/" + bankMinio.name + "/download",
		} {
			code, body := r.do(t, r.alice, "GET", p, nil)
			if code == 200 || code == 206 || bytes.Contains(body, []byte("hunter2")) {
				t.Errorf("alice GET %s: %d %q", p, code, body)
			}
		}
		code, body := r.do(t, r.alice, "GET", path("shop", bankMinio.name, ""), nil)
		if code != 404 || !strings.Contains(string(body), bankMinio.name) {
			t.Errorf("bank's name in shop: %d %s, want a 404 naming it", code, body)
		}
	})

	t.Run("Download", func(t *testing.T) {
		for _, d := range []*dump{shopMinio, shopNas} {
			resp := r.open(t, r.alice, "GET", path("shop", d.name, "download"), nil)
			got := readAll(t, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, d.stored) || resp.Header.Get("X-Dumpcatcher-Sha256") != hexsum(d.stored) ||
				resp.Header.Get("Content-Length") != fmt.Sprint(len(d.stored)) {
				t.Errorf("download %s: %d, %d bytes (want %d), headers %v", d.key, resp.StatusCode, len(got), len(d.stored), resp.Header)
			}
			resp = r.open(t, r.alice, "GET", path("shop", d.name, "download"), http.Header{"Range": {"bytes=1000-1999"}})
			got = readAll(t, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 206 || !bytes.Equal(got, d.stored[1000:2000]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(d.stored)) {
				t.Errorf("range of %s: %d, %d bytes, %v", d.key, resp.StatusCode, len(got), resp.Header)
			}
			resp = r.open(t, r.alice, "GET", path("shop", d.name, "download")+"?decompress=true", nil)
			got = readAll(t, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, d.raw) {
				t.Errorf("decompressed %s: %d, %d bytes, want %d", d.key, resp.StatusCode, len(got), len(d.raw))
			}
		}
	})

	t.Run("Presign", func(t *testing.T) {
		code, body := r.do(t, r.alice, "GET", path("shop", shopMinio.name, "presign"), nil)
		var p v1alpha1.PresignedURL
		if code != 200 || json.Unmarshal(body, &p) != nil || time.Until(p.Expires.Time) > 5*time.Minute+time.Second {
			t.Fatalf("presign: %d %s", code, body)
		}
		// The object is stored with Content-Encoding: gzip; compare the
		// stored bytes, without the transport's transparent decoding.
		resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Get(p.URL)
		must(t, err)
		got := readAll(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, shopMinio.stored) {
			t.Errorf("GET presigned URL: %d, %d bytes", resp.StatusCode, len(got))
		}
		code, body = r.do(t, r.alice, "GET", path("shop", shopNas.name, "presign"), nil)
		if code != 405 || !strings.Contains(string(body), "cannot presign") {
			t.Errorf("presign of a file:// dump: %d %s", code, body)
		}
	})

	t.Run("Kubectl", func(t *testing.T) {
		kubectl := filepath.Join(os.Getenv(miniotest.EnvAssets), "kubectl")
		if _, err := os.Stat(kubectl); err != nil {
			t.Skipf("no kubectl in %s", miniotest.EnvAssets)
		}
		run := func(cfg *rest.Config, args ...string) (string, error) {
			kc := filepath.Join(t.TempDir(), "kubeconfig")
			write(t, kc, kubeconfigFor(t, cfg))
			out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
			return string(out), err
		}
		out, err := run(r.alice, "get", "dumps", "-n", "shop", "-l", "dumpcatcher.io/reason=oom")
		if err != nil || !strings.Contains(out, "NAME") || !strings.Contains(out, "COMPLETE") || !strings.Contains(out, shopMinio.name) ||
			!strings.Contains(out, "web-1") || strings.Contains(out, shopNas.name) {
			t.Errorf("kubectl get dumps -l: %v\n%s", err, out)
		}
		t.Logf("kubectl get dumps -n shop -l dumpcatcher.io/reason=oom:\n%s", out)
		out, err = run(r.alice, "get", "dumps", "-n", "bank")
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("kubectl get dumps -n bank as alice: %v\n%s", err, out)
		}
		out, err = run(r.alice, "get", "--raw", path("shop", shopNas.name, "download"))
		if err != nil || out != string(shopNas.stored) {
			t.Errorf("kubectl get --raw download: %v, %d bytes", err, len(out))
		}
		// kubectl delete waits for the object to be gone (a get; no watch).
		p := bankMinio.key
		out, err = run(r.admin, "delete", "dump", "-n", "bank", bankMinio.name)
		if err != nil || !strings.Contains(out, "deleted") {
			t.Errorf("kubectl delete dump: %v\n%s", err, out)
		}
		if _, err := r.minio.Stat(ctx, p); err == nil {
			t.Error("kubectl delete left the object in the store")
		}
	})

	t.Run("Delete", func(t *testing.T) {
		p := path("shop", shopNas.name, "")
		if code, body := r.do(t, r.admin, "DELETE", p, nil); code != 200 {
			t.Fatalf("admin delete: %d %s", code, body)
		}
		if _, err := r.nas.Stat(ctx, shopNas.key); err == nil {
			t.Error("object still in the store")
		}
		if code, body := r.do(t, r.admin, "GET", p, nil); code != 404 {
			t.Errorf("get after delete: %d %s", code, body)
		}
		if code, body := r.do(t, r.admin, "DELETE", p, nil); code != 404 {
			t.Errorf("second delete: %d %s", code, body)
		}
	})
}
