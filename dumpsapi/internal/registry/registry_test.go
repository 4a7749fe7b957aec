package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/dumpsapi/internal/dumpkey"
	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

const (
	keyShopOOM  = "shop/deployment-web/web-1/app/20261129T190405.123Z-oom-java_pid1.hprof.gz"
	keyShopStop = "shop/deployment-web/web-2/app/20261129T190406.000Z-prestop-java_pid1.hprof"
	keyBank     = "bank/deployment-core/core-1/app/20261129T190407.000Z-oom-java_pid1.hprof"
)

func fileStore(t *testing.T) *storage.Filesystem {
	t.Helper()
	d, err := contract.ParseDestination("file://" + t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := storage.NewFilesystem(d)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func setup(t *testing.T) (*Stores, *storage.Filesystem) {
	t.Helper()
	fs := fileStore(t)
	ctx := context.Background()
	put := func(key string, data []byte, md map[string]string, enc string) {
		if _, err := fs.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Metadata: md, ContentEncoding: enc}); err != nil {
			t.Fatal(err)
		}
	}
	put(keyShopOOM, gz(t, "heap of web-1"), map[string]string{"complete": "true", "encoding": "gzip", "original-size": "13", "workload": "deployment/web", "pod": "web-1", "container": "app", "reason": "oom", "file": "java_pid1.hprof.gz"}, "gzip")
	put(keyShopStop, []byte("0123456789"), map[string]string{"complete": "false", "encoding": "identity"}, "")
	put(keyBank, []byte("bank secrets"), nil, "")
	put("shop/.dumpcatcher/lock-web", []byte("lock"), nil, "")
	return &Stores{Destinations: []Destination{{Name: "default", Store: fs}}, Now: func() time.Time { return time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC) }}, fs
}

func nsCtx(ns string) context.Context {
	return genericapirequest.WithNamespace(context.Background(), ns)
}

func name(key string) string {
	ns, rel, _ := strings.Cut(key, "/")
	_ = ns
	return dumpkey.Name("", rel)
}

func names(t *testing.T, obj any) []string {
	t.Helper()
	var out []string
	for _, d := range obj.(*v1alpha1.DumpList).Items {
		out = append(out, d.Namespace+"/"+d.Name)
	}
	sort.Strings(out)
	return out
}

func TestList(t *testing.T) {
	stores, _ := setup(t)
	r := NewREST(stores)
	sel := func(s string) labels.Selector {
		l, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		name string
		ns   string
		opts *metainternalversion.ListOptions
		want []string
	}{
		{"namespace", "shop", nil, []string{"shop/" + name(keyShopOOM), "shop/" + name(keyShopStop)}},
		{"all namespaces", "", nil, []string{"bank/" + name(keyBank), "shop/" + name(keyShopOOM), "shop/" + name(keyShopStop)}},
		{"reason", "", &metainternalversion.ListOptions{LabelSelector: sel("dumpcatcher.io/reason=oom")}, []string{"bank/" + name(keyBank), "shop/" + name(keyShopOOM)}},
		{"pod and container", "shop", &metainternalversion.ListOptions{LabelSelector: sel("dumpcatcher.io/pod=web-2,dumpcatcher.io/container=app")}, []string{"shop/" + name(keyShopStop)}},
		{"workload", "", &metainternalversion.ListOptions{LabelSelector: sel("dumpcatcher.io/workload=deployment-core")}, []string{"bank/" + name(keyBank)}},
		{"field name", "", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name(keyShopOOM))}, []string{"shop/" + name(keyShopOOM)}},
		{"field namespace", "", &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.namespace", "bank")}, []string{"bank/" + name(keyBank)}},
		{"empty namespace", "empty", nil, nil},
	} {
		obj, err := r.List(nsCtx(tc.ns), tc.opts)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, names(t, obj)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	_, err := r.List(nsCtx("shop"), &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.x", "y")})
	if !apierrors.IsBadRequest(err) {
		t.Errorf("unsupported field selector: %v, want 400", err)
	}
}

func TestGetAndConfinement(t *testing.T) {
	stores, _ := setup(t)
	r := NewREST(stores)
	obj, err := r.Get(nsCtx("shop"), name(keyShopOOM), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := obj.(*v1alpha1.Dump)
	yes := true
	if d.Workload != "deployment/web" || d.Complete == nil || *d.Complete != *&yes || d.Encoding != "gzip" || d.OriginalSize != 13 || d.SHA256 == "" || !strings.HasSuffix(d.URL, keyShopOOM) || d.Destination != "default" {
		t.Errorf("Get = %+v", d)
	}
	// The bank dump's name, asked in shop (and crafted names): 404.
	for _, tc := range []struct{ ns, name string }{
		{"shop", name(keyBank)},
		{"shop", "../bank/" + name(keyBank)},
		{"shop", dumpkey.Name("", "../"+keyBank)},
		{"shop", dumpkey.Name("", "../../"+keyBank)},
		{"shop", dumpkey.Name("", ".dumpcatcher/lock-web")},
		{"bank", name(keyShopOOM)},
	} {
		_, err := r.Get(nsCtx(tc.ns), tc.name, nil)
		if !apierrors.IsNotFound(err) {
			t.Errorf("Get(%s, %q) = %v, want 404", tc.ns, tc.name, err)
		}
	}
	_, err = r.Get(nsCtx("shop"), "missing", nil)
	if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("Get(missing) = %v, want 404 naming it", err)
	}
}

type failingStore struct{ Store }

func (failingStore) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return errors.New("dial tcp 10.0.0.1:9000: connection refused")
}

func TestStoreErrorIs503(t *testing.T) {
	stores, fs := setup(t)
	stores.Destinations = []Destination{{Name: "broken", Store: failingStore{fs}}}
	r := NewREST(stores)
	_, err := r.List(nsCtx("shop"), nil)
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), `dump store "broken" is unavailable`) {
		t.Errorf("List = %v, want 503 naming the store", err)
	}
	_, err = r.Get(nsCtx("shop"), name(keyShopOOM), nil)
	if !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Get = %v, want 503", err)
	}
	// A second, working destination still answers gets of its own dumps.
	stores.Destinations = append(stores.Destinations, Destination{Name: "nas", Store: fs})
	if _, err := r.Get(nsCtx("shop"), dumpkey.Name("nas", strings.TrimPrefix(keyShopOOM, "shop/")), nil); err != nil {
		t.Errorf("Get from the working destination: %v", err)
	}
}

func TestDelete(t *testing.T) {
	stores, fs := setup(t)
	r := NewREST(stores)
	if _, _, err := r.Delete(nsCtx("bank"), name(keyShopOOM), nil, nil); !apierrors.IsNotFound(err) {
		t.Errorf("Delete from another namespace = %v, want 404", err)
	}
	obj, done, err := r.Delete(nsCtx("shop"), name(keyShopOOM), nil, nil)
	if err != nil || !done || obj.(*v1alpha1.Dump).Name != name(keyShopOOM) {
		t.Fatalf("Delete = %v, %v, %v", obj, done, err)
	}
	if _, err := fs.Stat(context.Background(), keyShopOOM); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("object still there: %v", err)
	}
	if _, _, err := r.Delete(nsCtx("shop"), name(keyShopOOM), nil, nil); !apierrors.IsNotFound(err) {
		t.Errorf("second Delete = %v, want 404", err)
	}
	if _, err := fs.Stat(context.Background(), keyBank); err != nil {
		t.Errorf("other object gone: %v", err)
	}
}

func download(t *testing.T, stores *Stores, ns, n, query string, hdr http.Header) *http.Response {
	t.Helper()
	h, err := NewDownloadREST(stores).Connect(nsCtx(ns), n, nil, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	req := httptest.NewRequest("GET", "/download?"+query, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestDownload(t *testing.T) {
	stores, fs := setup(t)
	info, _ := fs.Stat(context.Background(), keyShopStop)
	for _, tc := range []struct {
		name, key, query, rng string
		code                  int
		body                  string
		hdr                   map[string]string
	}{
		{"whole", keyShopStop, "", "", 200, "0123456789", map[string]string{"Content-Length": "10", HeaderSHA256: info.Metadata["sha256"], "Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=java_pid1.hprof"}},
		{"range", keyShopStop, "", "bytes=2-5", 206, "2345", map[string]string{"Content-Range": "bytes 2-5/10", "Content-Length": "4"}},
		{"suffix range", keyShopStop, "", "bytes=-3", 206, "789", nil},
		{"open range", keyShopStop, "", "bytes=7-", 206, "789", nil},
		{"unsatisfiable", keyShopStop, "", "bytes=20-30", 416, "", nil},
		{"compressed as stored", keyShopOOM, "", "", 200, string(gz(t, "heap of web-1")), nil},
		{"decompressed", keyShopOOM, "decompress=true", "", 200, "heap of web-1", map[string]string{"Content-Length": "13", "Content-Disposition": "attachment; filename=java_pid1.hprof"}},
		{"decompress with range", keyShopOOM, "decompress=true", "bytes=0-1", 400, "", nil},
		{"decompress of identity", keyShopStop, "decompress=true", "bytes=0-1", 206, "01", nil},
	} {
		h := http.Header{}
		if tc.rng != "" {
			h.Set("Range", tc.rng)
		}
		resp := download(t, stores, "shop", name(tc.key), tc.query, h)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.code || tc.code < 300 && string(body) != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.code, tc.body)
		}
		for k, v := range tc.hdr {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q", tc.name, k, got, v)
			}
		}
	}
	if _, err := NewDownloadREST(stores).Connect(nsCtx("bank"), name(keyShopStop), nil, nil); !apierrors.IsNotFound(err) {
		t.Errorf("download from another namespace: %v, want 404", err)
	}
	// Deleted between Connect and the first read: a JSON 404, not a 500.
	h, err := NewDownloadREST(stores).Connect(nsCtx("shop"), name(keyShopStop), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Delete(context.Background(), keyShopStop); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/download", nil))
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"kind":"Status"`) {
		t.Errorf("download of a vanished object: %d %s", rec.Code, rec.Body)
	}
}

type fakePresigner struct{}

func (fakePresigner) PresignGet(_ context.Context, key string, expiry time.Duration) (*url.URL, error) {
	return &url.URL{Scheme: "https", Host: "s3.example", Path: "/b/" + key, RawQuery: "X-Amz-Expires=" + expiry.String()}, nil
}

func TestPresign(t *testing.T) {
	stores, _ := setup(t)
	p := NewPresignREST(stores)
	if _, err := p.Connect(nsCtx("shop"), name(keyShopStop), nil, nil); err == nil || !strings.Contains(err.Error(), "presign.enabled") {
		t.Errorf("presign turned off: %v", err)
	}
	stores.PresignExpiry = 10 * time.Minute
	if _, err := p.Connect(nsCtx("shop"), name(keyShopStop), nil, nil); err == nil || !strings.Contains(err.Error(), "cannot presign") {
		t.Errorf("presign on file://: %v", err)
	}
	stores.Destinations[0].Presigner = fakePresigner{}
	if _, err := p.Connect(nsCtx("bank"), name(keyShopStop), nil, nil); !apierrors.IsNotFound(err) {
		t.Errorf("presign from another namespace: %v", err)
	}
	h, err := p.Connect(nsCtx("shop"), name(keyShopStop), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/presign", nil))
	want := `{"url":"https://s3.example/b/` + keyShopStop + `?X-Amz-Expires=10m0s","expires":"2026-11-29T20:10:00Z"}`
	if rec.Body.String() != want {
		t.Errorf("presign body = %s, want %s", rec.Body, want)
	}
}

func TestTable(t *testing.T) {
	stores, _ := setup(t)
	r := NewREST(stores)
	obj, err := r.List(nsCtx("shop"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := r.ConvertToTable(context.Background(), obj, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range tbl.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if diff := cmp.Diff([]string{"Name", "Workload", "Pod", "Container", "Reason", "Size", "Complete", "Age"}, cols); diff != "" {
		t.Errorf("columns (-want +got):\n%s", diff)
	}
	var rows [][]any
	for _, row := range tbl.Rows {
		rows = append(rows, row.Cells)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][2].(string) < rows[j][2].(string) })
	want := [][]any{
		{name(keyShopOOM), "deployment/web", "web-1", "app", "oom", humanize.IBytes(uint64(len(gz(t, "heap of web-1")))), "true", "55m"},
		{name(keyShopStop), "deployment-web", "web-2", "app", "prestop", "10 B", "false", "55m"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	_ = metav1.Table{}
}
