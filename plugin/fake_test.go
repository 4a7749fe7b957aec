package plugin

// fakeAPI is a FAKE of the dumps API's paths (DUMPSAPI.md) and of the few
// core paths `dump` uses, on httptest: discovery, list (server-side Table or
// DumpList, label selectors), get, delete, download (HTTP Range through
// net/http's ServeContent), pods get. It stands in for the kube-apiserver
// plus the real dumpcatcher-api in this package's unit tests only; the
// real-part test runs the same commands against both (plugintest).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/scheme"
)

type fakeDump struct {
	ns, name string
	labels   map[string]string
	fields   map[string]any
	data     []byte // stored bytes
}

type fakeAPI struct {
	t            *testing.T
	mu           sync.Mutex
	dumps        []*fakeDump
	notInstalled bool
	forbidden    map[string]bool // namespaces
	storeDown    map[string]bool // namespaces: 503 Status from the dumps server
	aggDown      bool            // plain-text 503 (the aggregator)
	wrongSum     bool
	ranges       []string
	selectors    []string
	pods         map[string]string // ns/name -> status annotation
	srv          *httptest.Server
}

const prefix = "/apis/dumps.dumpcatcher.io/v1alpha1"

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, forbidden: map[string]bool{}, storeDown: map[string]bool{}, pods: map[string]string{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) add(ns, name string, data []byte, fields map[string]any) *fakeDump {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256(data)
	d := &fakeDump{ns: ns, name: name, data: data, labels: map[string]string{}, fields: map[string]any{
		"sha256": hex.EncodeToString(sum[:]), "size": len(data), "encoding": "none",
	}}
	for k, v := range fields {
		d.fields[k] = v
	}
	for l, k := range map[string]string{"dumpcatcher.io/workload": "workload", "dumpcatcher.io/pod": "pod", "dumpcatcher.io/container": "container", "dumpcatcher.io/reason": "reason"} {
		if v, ok := d.fields[k].(string); ok {
			d.labels[l] = v
		}
	}
	f.dumps = append(f.dumps, d)
	return d
}

func (d *fakeDump) object() map[string]any {
	o := map[string]any{
		"apiVersion": "dumps.dumpcatcher.io/v1alpha1", "kind": "Dump",
		"metadata": map[string]any{"name": d.name, "namespace": d.ns, "labels": d.labels, "creationTimestamp": "2026-11-29T10:00:00Z"},
	}
	for k, v := range d.fields {
		o[k] = v
	}
	return o
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure",
		Code: int32(code), Reason: metav1.StatusReason(reason), Message: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer t0ken" {
		status(w, 401, "Unauthorized", "Unauthorized")
		return
	}
	p := r.URL.Path
	if p == "/apis" {
		groups := []map[string]any{{"name": "apps", "versions": []map[string]any{{"groupVersion": "apps/v1", "version": "v1"}}}}
		if !f.notInstalled {
			groups = append(groups, map[string]any{"name": "dumps.dumpcatcher.io", "versions": []map[string]any{{"groupVersion": "dumps.dumpcatcher.io/v1alpha1", "version": "v1alpha1"}}})
		}
		writeJSON(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
		return
	}
	if p == "/api" {
		writeJSON(w, map[string]any{"kind": "APIVersions", "versions": []string{"v1"}})
		return
	}
	if p == "/api/v1/namespaces" {
		if f.forbidden["namespaces"] {
			status(w, 403, "Forbidden", "namespaces is forbidden")
			return
		}
		var items []map[string]any
		for _, n := range []string{"bank", "secret", "shop"} {
			items = append(items, map[string]any{"metadata": map[string]any{"name": n}})
		}
		writeJSON(w, map[string]any{"kind": "NamespaceList", "apiVersion": "v1", "metadata": map[string]any{}, "items": items})
		return
	}
	if p == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && r.Method == http.MethodPost {
		raw, _ := io.ReadAll(r.Body)
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
		rev, ok := obj.(*authorizationv1.SelfSubjectAccessReview)
		if err != nil || !ok || rev.Spec.ResourceAttributes == nil {
			status(w, 400, "BadRequest", fmt.Sprintf("not a SelfSubjectAccessReview: %v", err))
			return
		}
		ra := rev.Spec.ResourceAttributes
		rev.Status.Allowed = ra.Group == "dumps.dumpcatcher.io" && ra.Resource == "dumps" && ra.Verb == "list" && !f.forbidden[ra.Namespace]
		rev.APIVersion, rev.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(rev)
		return
	}
	if rest, ok := strings.CutPrefix(p, "/api/v1/namespaces/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) == 3 && parts[1] == "pods" {
			st, ok := f.pods[parts[0]+"/"+parts[2]]
			if !ok {
				status(w, 404, "NotFound", "pods not found")
				return
			}
			writeJSON(w, map[string]any{"kind": "Pod", "apiVersion": "v1",
				"metadata": map[string]any{"name": parts[2], "namespace": parts[0], "annotations": map[string]string{"dumpcatcher.io/status": st}},
				"status":   map[string]any{"phase": "Running"}})
			return
		}
	}
	rest, ok := strings.CutPrefix(p, prefix+"/")
	if !ok || f.notInstalled {
		status(w, 404, "NotFound", "the server could not find the requested resource")
		return
	}
	if f.aggDown {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	ns := ""
	if after, ok := strings.CutPrefix(rest, "namespaces/"); ok {
		ns, rest, _ = strings.Cut(after, "/")
	}
	if f.forbidden[ns] {
		status(w, 403, "Forbidden", fmt.Sprintf("dumps.dumps.dumpcatcher.io is forbidden in namespace %q", ns))
		return
	}
	if f.storeDown[ns] {
		status(w, 503, "ServiceUnavailable", "the store of destination default is unreachable")
		return
	}
	parts := strings.Split(rest, "/")
	if parts[0] != "dumps" {
		status(w, 404, "NotFound", "no such resource")
		return
	}
	if len(parts) == 1 {
		f.list(w, r, ns)
		return
	}
	var d *fakeDump
	for _, x := range f.dumps {
		if x.ns == ns && x.name == parts[1] {
			d = x
		}
	}
	if d == nil {
		status(w, 404, "NotFound", fmt.Sprintf("dumps.dumps.dumpcatcher.io %q not found", parts[1]))
		return
	}
	switch {
	case len(parts) == 2 && r.Method == http.MethodDelete:
		for i, x := range f.dumps {
			if x == d {
				f.dumps = append(f.dumps[:i], f.dumps[i+1:]...)
				break
			}
		}
		writeJSON(w, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Success"})
	case len(parts) == 2 && strings.Contains(r.Header.Get("Accept"), "as=Table"):
		writeJSON(w, f.table([]*fakeDump{d}))
	case len(parts) == 2:
		writeJSON(w, d.object())
	case len(parts) == 3 && parts[2] == "download":
		f.ranges = append(f.ranges, r.Header.Get("Range"))
		sum := d.fields["sha256"].(string)
		if f.wrongSum {
			sum = strings.Repeat("0", 64)
		}
		w.Header().Set("X-Dumpcatcher-Sha256", sum)
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(d.data))
	default:
		status(w, 404, "NotFound", "no such subresource")
	}
}

func (f *fakeAPI) list(w http.ResponseWriter, r *http.Request, ns string) {
	sel := r.URL.Query().Get("labelSelector")
	f.selectors = append(f.selectors, sel)
	s, err := labels.Parse(sel)
	if err != nil {
		status(w, 400, "BadRequest", err.Error())
		return
	}
	var items []*fakeDump
	for _, d := range f.dumps {
		if (ns == "" || d.ns == ns) && s.Matches(labels.Set(d.labels)) {
			items = append(items, d)
		}
	}
	if strings.Contains(r.Header.Get("Accept"), "as=Table") {
		writeJSON(w, f.table(items))
		return
	}
	var objs []map[string]any
	for _, d := range items {
		objs = append(objs, d.object())
	}
	writeJSON(w, map[string]any{"apiVersion": "dumps.dumpcatcher.io/v1alpha1", "kind": "DumpList", "metadata": map[string]any{}, "items": objs})
}

func (f *fakeAPI) table(items []*fakeDump) map[string]any {
	cols := []map[string]any{}
	for _, c := range []string{"Name", "Workload", "Pod", "Container", "Reason", "Size", "Complete", "Age"} {
		cols = append(cols, map[string]any{"name": c, "type": "string"})
	}
	cols = append(cols, map[string]any{"name": "Node", "type": "string", "priority": 1})
	rows := []map[string]any{}
	for _, d := range items {
		rows = append(rows, map[string]any{
			"cells":  []any{d.name, d.fields["workload"], d.fields["pod"], d.fields["container"], d.fields["reason"], fmt.Sprintf("%dB", len(d.data)), "true", "5m", d.fields["node"]},
			"object": map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": map[string]any{"name": d.name, "namespace": d.ns}},
		})
	}
	return map[string]any{"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": map[string]any{}, "columnDefinitions": cols, "rows": rows}
}

// kubeconfig writes a kubeconfig for the fake server (TLS: clientcmd sends
// credentials only over TLS).
func (f *fakeAPI) kubeconfig() string {
	path := filepath.Join(f.t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: dev
  user: {token: t0ken}
contexts:
- name: fake
  context: {cluster: fake, user: dev, namespace: shop}
current-context: fake
`, f.srv.URL)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}
