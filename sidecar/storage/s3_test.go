package storage_test

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/storagetest"
)

// openS3 opens the bucket of prefix on srv (or on endpoint when not empty,
// e.g. a proxy in front of srv).
func openS3(t *testing.T, srv *miniotest.Server, endpoint, prefix string, opts storage.Options) storage.Bucket {
	t.Helper()
	raw := srv.URL(prefix)
	if endpoint != "" {
		raw = strings.Replace(raw, url.QueryEscape(srv.Endpoint), url.QueryEscape(endpoint), 1)
	}
	d, err := contract.ParseDestination(raw)
	if err != nil {
		t.Fatal(err)
	}
	if opts.CredentialsDir == "" && opts.Credentials == nil {
		opts.CredentialsDir = t.TempDir()
		srv.WriteCredentials(t, opts.CredentialsDir)
	}
	b, err := storage.Open(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func incompleteUploads(t *testing.T, srv *miniotest.Server, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var left []string
	for u := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, prefix, true) {
		if u.Err != nil {
			t.Fatalf("listing incomplete uploads: %v", u.Err)
		}
		left = append(left, "incomplete upload "+u.Key+" "+u.UploadID)
	}
	return left
}

// uniquePrefix is a prefix of its own for each (sub)test.
func uniquePrefix(t *testing.T) string {
	return strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
}

func TestS3Conformance(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	storagetest.Run(t, storagetest.Config{
		PartSize: storage.MinPartSize,
		New: func(t *testing.T) storagetest.Target {
			prefix := uniquePrefix(t)
			return storagetest.Target{
				Bucket:    openS3(t, srv, "", prefix, storage.Options{PartSize: storage.MinPartSize}),
				Leftovers: func(t *testing.T) []string { return incompleteUploads(t, srv, prefix+"/") },
			}
		},
	})
}

// TestS3MultipartETag checks the verification rule with the default part
// size: the ETag of a 40 MiB object is the MD5 of its three part MD5s.
func TestS3MultipartETag(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	b := openS3(t, srv, "", "etag", storage.Options{})
	const size = 40 << 20
	var partSums []byte
	r := storagetest.Stream(9, size)
	for {
		h := md5.New()
		n, err := io.CopyN(h, r, storage.DefaultPartSize)
		if n > 0 {
			partSums = h.Sum(partSums)
		}
		if err == io.EOF {
			break
		}
	}
	want := fmt.Sprintf("%x-%d", md5.Sum(partSums), len(partSums)/md5.Size)
	info, err := b.Put(context.Background(), "dump.hprof", storagetest.Stream(9, size), storage.PutOptions{Metadata: map[string]string{"pod": "web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Trim(info.Checksum, `"`) != want || !strings.HasSuffix(want, "-3") {
		t.Errorf("ETag %s, want %s", info.Checksum, want)
	}
	if !strings.Contains(info.Verified, "ETag (MD5 of 3 part MD5s)") || !strings.Contains(info.Verified, "sha256 stored as object tag") {
		t.Errorf("Verified = %q", info.Verified)
	}
	st, err := b.Stat(context.Background(), "dump.hprof")
	if err != nil {
		t.Fatal(err)
	}
	if st.Metadata["sha256"] != storagetest.StreamSHA256(9, size) || st.Metadata["pod"] != "web-1" || st.Checksum != info.Checksum {
		t.Errorf("Stat = %+v, Put = %+v", st, info)
	}
	t.Logf("Verified: %s", info.Verified)
}

const wrongSecret = "Wr0ng-S3cret-must-not-leak-0c9f"

func TestS3WrongCredentialsErrorIsClearAndSecretFree(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	for _, tc := range []struct{ name, access, secret string }{
		{"wrong secret", srv.AccessKey, wrongSecret},
		{"unknown access key", "no-such-user", wrongSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			miniotest.WriteKeys(t, dir, "accessKeyID", tc.access, "secretAccessKey", tc.secret)
			b := openS3(t, srv, "", "creds", storage.Options{CredentialsDir: dir})
			_, err := b.Put(context.Background(), "k", strings.NewReader("data"), storage.PutOptions{})
			if err == nil {
				t.Fatal("Put with wrong credentials succeeded")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, want := range []string{srv.Endpoint, "s3://" + srv.Bucket + "/creds/k"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			for _, secret := range []string{wrongSecret, srv.SecretKey} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q contains a secret", msg)
				}
			}
			// Must not look like "no such object" to the uploader.
			if _, err := b.Stat(context.Background(), "k"); err == nil || errors.Is(err, storage.ErrNotExist) || strings.Contains(err.Error(), wrongSecret) {
				t.Errorf("Stat with wrong credentials: %v; want an error other than ErrNotExist", err)
			}
		})
	}
}

func TestS3CredentialRotation(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	dir := t.TempDir()
	miniotest.WriteKeys(t, dir, "accessKeyID", srv.AccessKey, "secretAccessKey", wrongSecret)
	b := openS3(t, srv, "", "rotation", storage.Options{CredentialsDir: dir})
	if _, err := b.Put(context.Background(), "k", strings.NewReader("one"), storage.PutOptions{}); err == nil {
		t.Fatal("Put with wrong keys succeeded")
	}
	srv.WriteCredentials(t, dir) // the kubelet updates the Secret volume
	if _, err := b.Put(context.Background(), "k", strings.NewReader("two"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put after rotating to the right keys: %v", err)
	}
	// And back: rotated-away keys are not cached.
	miniotest.WriteKeys(t, dir, "secretAccessKey", wrongSecret)
	if _, err := b.Put(context.Background(), "k", strings.NewReader("three"), storage.PutOptions{}); err == nil {
		t.Fatal("Put after rotating to wrong keys succeeded")
	}
}

func TestS3CredentialFileNames(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	t.Run("AWS-style names", func(t *testing.T) {
		dir := t.TempDir()
		miniotest.WriteKeys(t, dir, "AWS_ACCESS_KEY_ID", srv.AccessKey, "AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		b := openS3(t, srv, "", "aws-names", storage.Options{CredentialsDir: dir})
		if _, err := b.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing files", func(t *testing.T) {
		dir := t.TempDir()
		miniotest.WriteKeys(t, dir, "secretAccessKey", srv.SecretKey)
		b := openS3(t, srv, "", "missing", storage.Options{CredentialsDir: dir})
		_, err := b.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{})
		if err == nil || !strings.Contains(err.Error(), "accessKeyID") || strings.Contains(err.Error(), srv.SecretKey) {
			t.Fatalf("Put without an access key file: %v", err)
		}
	})
}

func TestS3DefaultCredentialChain(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	// No credentials anywhere; the container-credentials endpoint (a local
	// stand-in, so the test never probes the network) refuses too.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no role", http.StatusNotFound)
	}))
	defer refuse.Close()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", refuse.URL+"/creds")
	b := openS3(t, srv, "", "chain", storage.Options{Credentials: storage.DefaultCredentials()})
	_, err := b.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "no S3 credentials") {
		t.Fatalf("Put without any credentials: %v; want a 'no S3 credentials' error", err)
	}
	t.Logf("error: %v", err)

	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	b = openS3(t, srv, "", "chain", storage.Options{Credentials: storage.DefaultCredentials()})
	if _, err := b.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put with keys in the environment: %v", err)
	}
}

func TestS3TLSWithCustomCA(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{TLS: true})
	b := openS3(t, srv, "", "tls", storage.Options{CAFile: srv.CAFile})
	storagetestPutGet(t, b, 6<<20)

	// minio-go retries certificate errors (it misses them wrapped in
	// *tls.CertificateVerificationError); one attempt keeps the test short.
	untrusting := openS3(t, srv, "", "tls", storage.Options{MaxRetries: 1})
	_, err := untrusting.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Put without the CA: %v; want a certificate error", err)
	}
}

func storagetestPutGet(t *testing.T, b storage.Bucket, size int64) {
	t.Helper()
	if _, err := b.Put(context.Background(), "obj", storagetest.Stream(1, size), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, err := b.Get(context.Background(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sum, n, err := storagetest.HashReader(rc)
	if err != nil || n != size || sum != storagetest.StreamSHA256(1, size) {
		t.Fatalf("Get: %d bytes, %v", n, err)
	}
}

func TestS3OptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		url  string
		opts storage.Options
		want string
	}{
		{"s3://b-1/p?endpoint=http://127.0.0.1:9", storage.Options{CAFile: "/x.pem"}, "not https"},
		{"s3://b-1/p?endpoint=https://127.0.0.1:9", storage.Options{CAFile: "/no/such/ca.pem"}, "CA file"},
		{"s3://b-1/p", storage.Options{PartSize: 1 << 20}, "part size"},
		{"s3://b-1/p", storage.Options{PartsInFlight: -1}, "in flight"},
	} {
		d, err := contract.ParseDestination(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := storage.Open(d, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s, %+v) = %v, want an error about %q", tc.url, tc.opts, err, tc.want)
		}
	}
	// ParseDestination refuses an endpoint with a path; NewS3 still checks.
	if _, err := storage.Open(contract.Destination{Scheme: "s3", Bucket: "b-1", Endpoint: "http://127.0.0.1:9/path"}, storage.Options{}); err == nil || !strings.Contains(err.Error(), "path") {
		t.Errorf("Open with an endpoint path = %v, want an error about the path", err)
	}
	d, _ := contract.ParseDestination("s3://b-1/pre/fix")
	b, err := storage.Open(d, storage.Options{Credentials: nil, CredentialsDir: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.URL("ns/k"); got != "s3://b-1/pre/fix/ns/k" {
		t.Errorf("URL = %q", got)
	}
}

// proxy is a reverse proxy in front of MinIO that lets a test watch and
// tamper with requests and responses. The Host header is kept, so request
// signatures stay valid.
type proxy struct {
	*httptest.Server
	// intercept may answer a request itself (return true).
	intercept func(w http.ResponseWriter, r *http.Request) bool
	// modify may change a response.
	modify func(r *http.Response) error

	mu             sync.Mutex
	inFlight, peak int
}

func newProxy(t *testing.T, srv *miniotest.Server) *proxy {
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: func(r *http.Response) error {
			if p.modify != nil {
				return p.modify(r)
			}
			return nil
		},
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.intercept != nil && p.intercept(w, r) {
			return
		}
		isPart := r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != ""
		if isPart {
			p.mu.Lock()
			p.inFlight++
			p.peak = max(p.peak, p.inFlight)
			p.mu.Unlock()
			defer func() {
				p.mu.Lock()
				p.inFlight--
				p.mu.Unlock()
			}()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestS3PartsRetriedAndBounded: a part that fails with 503 is retried, and
// no more than PartsInFlight parts are uploaded at once.
func TestS3PartsRetriedAndBounded(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	p := newProxy(t, srv)
	var failed atomic.Int32
	p.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		part := r.URL.Query().Get("partNumber")
		if r.Method == http.MethodPut && part != "" {
			// Slow parts, so Put always has the next part ready and
			// waits for a free buffer.
			time.Sleep(50 * time.Millisecond)
		}
		if r.Method == http.MethodPut && part == "2" && failed.Add(1) <= 2 {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>`)
			return true
		}
		return false
	}
	b := openS3(t, srv, p.URL, "retry", storage.Options{PartSize: storage.MinPartSize, PartsInFlight: 2})
	const size = 8*storage.MinPartSize + 77
	info, err := b.Put(context.Background(), "obj", storagetest.Stream(11, size), storage.PutOptions{})
	if err != nil {
		t.Fatalf("Put with a flaky part: %v", err)
	}
	if info.Size != size || failed.Load() < 3 {
		t.Fatalf("size %d, part 2 attempts %d; want %d bytes and 3 attempts", info.Size, failed.Load(), size)
	}
	// The bound is what matters; whether two parts overlap at all depends on
	// scheduling (a loaded machine may send them one after the other).
	if p.peak > 2 || p.peak < 1 {
		t.Fatalf("%d parts in flight at once at most, want 1 or 2 (PartsInFlight 2)", p.peak)
	}
	t.Logf("peak parts in flight: %d; part 2 attempts: %d", p.peak, failed.Load())
}

// TestS3ETagMismatch: when the store reports another ETag than the MD5s of
// what was sent, Put fails with a *VerifyError and removes the object.
func TestS3ETagMismatch(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	p := newProxy(t, srv)
	p.modify = func(r *http.Response) error {
		if r.Request.Method == http.MethodHead && r.StatusCode == http.StatusOK {
			r.Header.Set("ETag", `"0123456789abcdef0123456789abcdef-2"`)
		}
		return nil
	}
	for _, size := range []int64{100, 2*storage.MinPartSize + 1} {
		b := openS3(t, srv, p.URL, "mismatch", storage.Options{PartSize: storage.MinPartSize})
		_, err := b.Put(context.Background(), "obj", storagetest.Stream(12, size), storage.PutOptions{})
		var ve *storage.VerifyError
		if !errors.As(err, &ve) || ve.What != "etag" {
			t.Fatalf("size %d: error %v, want a *VerifyError about the ETag", size, err)
		}
		t.Logf("error: %v", err)
		if _, err := srv.Client(t).StatObject(context.Background(), srv.Bucket, "mismatch/obj", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != minio.NoSuchKey {
			t.Fatalf("size %d: the unverified object is still there (stat: %v)", size, err)
		}
	}
}

// TestS3ETagNotMD5: with SSE-KMS the ETag is not an MD5; Put succeeds on the
// size check and says so.
func TestS3ETagNotMD5(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	p := newProxy(t, srv)
	p.modify = func(r *http.Response) error {
		if r.Request.Method == http.MethodHead && r.StatusCode == http.StatusOK {
			r.Header.Set("ETag", `"ffffffffffffffffffffffffffffffff"`)
			r.Header.Set("X-Amz-Server-Side-Encryption", "aws:kms")
		}
		return nil
	}
	b := openS3(t, srv, p.URL, "kms", storage.Options{})
	info, err := b.Put(context.Background(), "obj", strings.NewReader("kms data"), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Verified, "size only") || !strings.Contains(info.Verified, "SSE-KMS") {
		t.Fatalf("Verified = %q, want it to say that only the size was checked because of SSE-KMS", info.Verified)
	}
}

// TestS3BoundedMemory puts a 1 GiB generated stream and watches the heap.
func TestS3BoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB upload; skipped with -short")
	}
	srv := miniotest.Start(t, miniotest.Options{})
	b := openS3(t, srv, "", "memory", storage.Options{})
	const size = 1 << 30
	const limit = 64 << 20

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, allocBase := ms.HeapInuse, ms.TotalAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	info, err := b.Put(context.Background(), "big.hprof", storagetest.Stream(13, size), storage.PutOptions{})
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != size {
		t.Fatalf("size %d", info.Size)
	}
	growth := int64(peak.Load()) - int64(base)
	runtime.ReadMemStats(&ms)
	t.Logf("1 GiB in %v (%.0f MiB/s); HeapInuse %d MiB at start, peak growth %d MiB; allocated %d MiB in %d GCs; %s",
		elapsed.Round(time.Millisecond), float64(size)/(1<<20)/elapsed.Seconds(), base>>20, growth>>20,
		(ms.TotalAlloc-allocBase)>>20, ms.NumGC, info.Verified)
	if growth > limit {
		t.Fatalf("HeapInuse grew by %d MiB during the Put, want under %d MiB", growth>>20, limit>>20)
	}
}
