package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

	"k8s.io/client-go/rest"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
)

// TestRealAggregatorDownload downloads through a REAL kube-apiserver's
// aggregation layer (internal/testsupport/apiserver with Aggregation: an
// ExternalName Service to 127.0.0.1) from a STUB backend (httptest, not the
// dumps API server: it serves one Dump and its download with net/http's
// Range support). It shows what the plugin relies on: the aggregator
// forwards Range, answers 206 with Content-Range, passes the
// X-Dumpcatcher-Sha256 header, and the chunks join to the original bytes.
func TestRealAggregatorDownload(t *testing.T) {
	api := apiserver.Start(t, apiserver.Options{Aggregation: true})
	dir := t.TempDir()
	serving := certs.NewCA(t).Serving(t, apiserver.ServiceDNSName("dumps.dumpcatcher.io", "v1alpha1"), "127.0.0.1")

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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend.Listener = ln
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{serving.TLS(t)}}
	backend.StartTLS()
	defer backend.Close()

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, api.Kubeconfig(t, "admin", "system:masters"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	api.RegisterAPIService(t, "dumps.dumpcatcher.io", "v1alpha1", ln.Addr().String(), serving.CAPEM)

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
		hc, err := rest.HTTPClientFor(api.Config)
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
			resp, err := hc.Get(strings.TrimSuffix(api.Config.Host, "/") + "/apis/dumps.dumpcatcher.io/v1alpha1/namespaces/shop/dumps/slow/download")
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
