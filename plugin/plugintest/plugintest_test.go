package plugintest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// TestRun runs the helper against a FAKE list path (httptest), to show
// that a kubeconfig is all it needs.
func TestRun(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/dumps.dumpcatcher.io/v1alpha1/namespaces/bank/dumps" || r.Header.Get("Authorization") != "Bearer t0ken" {
			t.Logf("unexpected %s %s auth %q", r.Method, r.URL, r.Header.Get("Authorization"))
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"dumps.dumpcatcher.io/v1alpha1","kind":"DumpList","metadata":{},"items":[{"apiVersion":"dumps.dumpcatcher.io/v1alpha1","kind":"Dump","metadata":{"name":"d1","namespace":"bank"}}]}`)
	}))
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: bank}}]
current-context: c
`, srv.URL)), 0o600)
	out, _, err := Run(context.Background(), kc, "list", "-o", "name")
	if err != nil || out != "dump.dumps.dumpcatcher.io/d1\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
}
