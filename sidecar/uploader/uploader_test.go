package uploader

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/memory"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/go-logr/logr/testr"
	"github.com/go-logr/zapr"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var identity = Identity{Namespace: "shop", Pod: "web-6d4cf56db6-x2k9p", PodUID: "0b1c2d3e-0000-4000-8000-000000000001", Node: "node-1", Workload: "deployment/web"}

// rig is an uploader over a temporary shared volume.
type rig struct {
	root, dumps string
	bucket      storage.Bucket
	stop        context.CancelFunc
	done        chan error
	metrics     *Metrics
	u           *Uploader
}

func startUploader(t *testing.T, bucket storage.Bucket, mod func(*Options)) *rig {
	t.Helper()
	root := t.TempDir()
	r := &rig{root: root, dumps: filepath.Join(root, "dumps"), bucket: bucket, done: make(chan error, 1)}
	r.start(t, mod)
	return r
}

func (r *rig) start(t *testing.T, mod func(*Options)) {
	t.Helper()
	log := testr.New(t)
	sp, err := spool.Open(filepath.Join(r.root, ".spool"), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Bucket: r.bucket, Spool: sp, DumpsDir: r.dumps, Template: objectkey.MustParse(objectkey.Default), Identity: identity,
		Compression: CompressionGzip, RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, QuietPeriod: time.Second,
		Drain: 10 * time.Second, Settle: 200 * time.Millisecond, Log: log}
	if mod != nil {
		mod(&o)
	}
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.metrics, r.u = o.Metrics, u
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan error, 1)
	go func() { r.done <- u.Run(ctx) }()
	for i := 0; i < 200; i++ { // the watcher creates the dumps directory
		if _, err := os.Stat(r.dumps); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("uploader did not create the dumps directory")
}

func (r *rig) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("uploader did not stop")
	}
}

func minioBucket(t *testing.T, srv *miniotest.Server, credsDir string) storage.Bucket {
	t.Helper()
	d, err := contract.ParseDestination(srv.URL("cluster-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.Open(d, storage.Options{CredentialsDir: credsDir, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startMinIO(t *testing.T) (*miniotest.Server, storage.Bucket, string) {
	t.Helper()
	srv := miniotest.Start(t, miniotest.Options{})
	creds := t.TempDir()
	srv.WriteCredentials(t, creds)
	return srv, minioBucket(t, srv, creds), creds
}

type object struct {
	key  string
	meta map[string]string
	data []byte // decoded
}

// objects lists and decodes every object under the bucket's prefix.
func objects(t *testing.T, srv *miniotest.Server) []object {
	t.Helper()
	c := srv.Client(t)
	ctx := context.Background()
	var out []object
	for oi := range c.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "cluster-a/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		o, err := c.GetObject(ctx, srv.Bucket, oi.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := o.Stat()
		if err != nil {
			t.Fatal(err)
		}
		meta := map[string]string{}
		for k, v := range st.UserMetadata {
			meta[strings.ToLower(k)] = v
		}
		out = append(out, object{key: strings.TrimPrefix(oi.Key, "cluster-a/"), meta: meta, data: decode(t, o, meta["encoding"])})
		o.Close()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

func decode(t *testing.T, r io.Reader, enc string) []byte {
	t.Helper()
	var dr io.Reader = r
	switch enc {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		dr = zr
	case "zstd":
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		dr = zr
	}
	b, err := io.ReadAll(dr)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return b
}

func waitObjects(t *testing.T, srv *miniotest.Server, n int, within time.Duration) []object {
	t.Helper()
	return waitList(t, func() []object { return objects(t, srv) }, n, within, 100*time.Millisecond)
}

// memObjects lists and decodes every object of the in-memory bucket.
func memObjects(t *testing.T, b *memory.Bucket) []object {
	t.Helper()
	var out []object
	for _, o := range b.Objects() {
		out = append(out, object{key: o.Key, meta: o.Info.Metadata, data: decode(t, bytes.NewReader(o.Data), o.Info.Metadata["encoding"])})
	}
	return out
}

func waitMemObjects(t *testing.T, b *memory.Bucket, n int, within time.Duration) []object {
	t.Helper()
	return waitList(t, func() []object { return memObjects(t, b) }, n, within, 10*time.Millisecond)
}

// waitList waits until list, called every poll, returns n objects and
// returns them; fewer after within, or more, fail the test.
func waitList(t *testing.T, list func() []object, n int, within, poll time.Duration) []object {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		objs := list()
		if len(objs) >= n || time.Now().After(deadline) {
			if len(objs) != n {
				keys := []string{}
				for _, o := range objs {
					keys = append(keys, o.key)
				}
				t.Fatalf("want %d objects within %v, have %d: %v", n, within, len(objs), keys)
			}
			return objs
		}
		time.Sleep(poll)
	}
}

// waitCalls waits until b has seen at least n calls of op.
func waitCalls(t *testing.T, b *memory.Bucket, op memory.Op, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for b.Calls(op) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s calls within %v, want at least %d", b.Calls(op), op, within, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errOutage is what the in-memory bucket's hooks fail calls with, as a
// store that is down would.
var errOutage = errors.New("dial tcp 127.0.0.1:9000: connect: connection refused")

func spoolEmpty(t *testing.T, r *rig) {
	t.Helper()
	for i := 0; i < 100; i++ {
		left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*"))
		if len(left) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*"))
	t.Errorf("spool not empty after delivery: %v", left)
}

// linkWhenCreated hard-links the first file matching pattern as soon as it
// appears, so the test keeps the bytes the uploader later removes.
func linkWhenCreated(t *testing.T, pattern, keep string) func() {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if m, _ := filepath.Glob(pattern); len(m) > 0 {
				if os.Link(m[0], keep) == nil {
					return
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestRealJVMOOMDumpToMinIO: a JVM with JAVA_TOOL_OPTIONS exactly as the
// webhook sets it runs out of memory; its dump ends up in MinIO, decoding to
// the very bytes the JVM wrote, with the pod's metadata.
func TestRealJVMOOMDumpToMinIO(t *testing.T) {
	jvm := hproftest.NewJVM(t)
	srv, bucket, _ := startMinIO(t)
	r := startUploader(t, bucket, nil)
	dir := filepath.Join(r.dumps, "app")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(t.TempDir(), "kept.hprof")
	stopLink := linkWhenCreated(t, filepath.Join(dir, "java_pid*.hprof"), keep)
	cmd := jvm.Command("-Xmx32m")
	cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS="+contract.DumpOptions(dir))
	out, _ := cmd.CombinedOutput()
	stopLink()
	if !strings.Contains(string(out), "Heap dump file created") {
		t.Fatalf("no dump:\n%s", out)
	}
	objs := waitObjects(t, srv, 1, 30*time.Second)
	want, err := os.ReadFile(keep)
	if err != nil {
		t.Fatalf("the test could not keep the JVM's bytes: %v", err)
	}
	o := objs[0]
	if !bytes.Equal(o.data, want) {
		t.Fatalf("object %s decodes to %d bytes (sha256 %x), the JVM wrote %d (sha256 %x)", o.key, len(o.data), sha256.Sum256(o.data), len(want), sha256.Sum256(want))
	}
	rep, err := hprof.Inspect(bytes.NewReader(o.data), int64(len(o.data)))
	if err != nil || !rep.Complete {
		t.Errorf("uploaded dump is not a complete hprof: %+v %v", rep, err)
	}
	wantKeyPrefix := "shop/deployment-web/web-6d4cf56db6-x2k9p/app/"
	if !strings.HasPrefix(o.key, wantKeyPrefix) || !strings.HasSuffix(o.key, "-oom-java_pid"+fmt.Sprint(cmd.Process.Pid)+".hprof.gz") {
		t.Errorf("key %q, want %s<time>-oom-java_pid%d.hprof.gz", o.key, wantKeyPrefix, cmd.Process.Pid)
	}
	for k, v := range map[string]string{"namespace": "shop", "pod": identity.Pod, "pod-uid": identity.PodUID, "node": "node-1",
		"workload": "deployment/web", "container": "app", "reason": "oom", "complete": "true", "encoding": "gzip",
		"original-size": fmt.Sprint(len(want)), "file": filepath.Base(keepName(t, o.key))} {
		if o.meta[k] != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, o.meta[k], v, o.meta)
		}
	}
	if len(o.meta["sha256"]) != 64 {
		t.Errorf("no sha256 metadata: %v", o.meta)
	}
	spoolEmpty(t, r)
	r.shutdown(t)
}

// keepName is the dump's file name inside an object key.
func keepName(t *testing.T, key string) string {
	t.Helper()
	base := filepath.Base(key)
	i := strings.Index(base, "-oom-")
	if i < 0 {
		t.Fatalf("key %q has no -oom-", key)
	}
	return strings.TrimSuffix(base[i+len("-oom-"):], ".gz")
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeDump(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSameNameTwiceAndTenAtOnce: a second dump of the same name and ten at
// once are all delivered intact (uploader logic: the in-memory bucket).
func TestSameNameTwiceAndTenAtOnce(t *testing.T) {
	bucket := memory.New("dumps")
	r := startUploader(t, bucket, func(o *Options) { o.Compression = CompressionZstd; o.Workers = 2 })
	first, second := hproftest.Synthetic(3, 64<<10), hproftest.Synthetic(4, 64<<10)
	path := filepath.Join(r.dumps, "app", "java_pid1.hprof")
	writeDump(t, path, first)
	waitMemObjects(t, bucket, 1, 20*time.Second)
	writeDump(t, path, second) // the JVM after a restart: same pid, same name
	objs := waitMemObjects(t, bucket, 2, 20*time.Second)
	got := [][]byte{objs[0].data, objs[1].data}
	if !(bytes.Equal(got[0], first) && bytes.Equal(got[1], second) || bytes.Equal(got[1], first) && bytes.Equal(got[0], second)) {
		t.Fatalf("the two dumps of one name did not both arrive intact")
	}

	var wg sync.WaitGroup
	want := map[string][]byte{}
	for i := 0; i < 10; i++ {
		data := append(hproftest.Synthetic(2, 32<<10), randomBytes(t, 1000)...)
		p := filepath.Join(r.dumps, fmt.Sprintf("c%d", i), "java_pid7.hprof")
		want[fmt.Sprintf("c%d", i)] = data
		wg.Add(1)
		go func() { defer wg.Done(); writeDump(t, p, data) }()
	}
	wg.Wait()
	objs = waitMemObjects(t, bucket, 12, 30*time.Second)
	for _, o := range objs {
		if w, ok := want[o.meta["container"]]; ok {
			if !bytes.Equal(o.data, w) {
				t.Errorf("%s: content differs", o.key)
			}
			delete(want, o.meta["container"])
		}
	}
	if len(want) != 0 {
		t.Errorf("not delivered: %v", want)
	}
	spoolEmpty(t, r)
	r.shutdown(t)
}

// TestStorageOutageMidUpload stops MinIO while a dump is uploading and
// starts it again: the dump arrives once, complete, and no incomplete
// multipart upload is left behind.
func TestStorageOutageMidUpload(t *testing.T) {
	srv, bucket, _ := startMinIO(t)
	m := newMetrics(t)
	mid := &midStream{Bucket: bucket, after: 32 << 20, reached: make(chan struct{})}
	// Claimed when the writer closes the file: on a busy machine writing
	// 256 MiB can stall longer than the rig's 1 s quiet period.
	r := startUploader(t, mid, func(o *Options) { o.Compression = CompressionNone; o.Metrics = m; o.QuietPeriod = time.Minute })
	data := randomBytes(t, 256<<20) // about a second of upload here
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), data)
	// The outage starts once Put has read 32 MiB of the dump, not after a
	// fixed time: on a busy machine the upload may start late.
	select {
	case <-mid.reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the upload did not read 32 MiB of the dump within 60 s")
	}
	srv.Kill() // a crash: the parts in flight fail
	time.Sleep(2 * time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	objs := waitObjects(t, srv, 1, 60*time.Second)
	if !bytes.Equal(objs[0].data, data) {
		t.Fatalf("content differs after the outage")
	}
	if f := testutil.ToFloat64(m.failures); f == 0 {
		t.Error("no failed attempt: the outage did not hit the upload")
	}
	c := srv.Client(t)
	for up := range c.ListIncompleteUploads(context.Background(), srv.Bucket, "", true) {
		if up.Err == nil {
			t.Errorf("incomplete multipart upload left: %s", up.Key)
		}
	}
	spoolEmpty(t, r)
	r.shutdown(t)
}

// TestOutageThenRecovery: while every call to the store fails, the dump
// stays in the spool and is retried with backoff (failures counted,
// storage_up 0); once the store answers again it is delivered, once, and
// storage_up is 1. The retry logic of TestStorageOutageMidUpload and
// TestWrongCredentialsThenFixed without MinIO: a fault hook is the outage.
func TestOutageThenRecovery(t *testing.T) {
	bucket := memory.New("dumps")
	bucket.SetHook(memory.Fail(errOutage))
	m := newMetrics(t)
	r := startUploader(t, bucket, func(o *Options) { o.Metrics = m })
	data := hproftest.Synthetic(2, 1024)
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), data)
	waitCalls(t, bucket, memory.OpStat, 4, 20*time.Second) // each attempt starts with a Stat (uniqueKey)
	if f, up := testutil.ToFloat64(m.failures), testutil.ToFloat64(m.storageUp); f < 3 || up != 0 {
		t.Errorf("failures=%v storage_up=%v during the outage; want at least 3 and 0", f, up)
	}
	if objs := memObjects(t, bucket); len(objs) != 0 {
		t.Fatalf("delivered during the outage: %v", objs)
	}
	if left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*.data")); len(left) != 1 {
		t.Fatalf("the dump is not kept in the spool while storage fails: %v", left)
	}
	bucket.SetHook(nil)
	objs := waitMemObjects(t, bucket, 1, 20*time.Second)
	if !bytes.Equal(objs[0].data, data) {
		t.Fatal("content differs after the outage")
	}
	// The object is visible before Put returns and the uploader sees the
	// store is back.
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(m.storageUp) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("storage_up=%v 5s after recovery", testutil.ToFloat64(m.storageUp))
		}
	}
	spoolEmpty(t, r)
	r.shutdown(t)
	if objs := memObjects(t, bucket); len(objs) != 1 {
		t.Errorf("%d objects, want 1", len(objs))
	}
}

// TestFailureAtEndOfUploadIsRetried: the store fails an upload after it
// received the whole stream; the retry sends the dump again from the spool
// and it arrives once, intact.
func TestFailureAtEndOfUploadIsRetried(t *testing.T) {
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			bucket := memory.New("dumps")
			var failed atomic.Bool
			bucket.SetHook(func(_ context.Context, op memory.Op, _ string) error {
				if op == memory.OpPutCommit && failed.CompareAndSwap(false, true) {
					return errOutage
				}
				return nil
			})
			m := newMetrics(t)
			r := startUploader(t, bucket, func(o *Options) { o.Compression = comp; o.Metrics = m })
			data := append(hproftest.Synthetic(5, 1<<20), randomBytes(t, 4096)...)
			writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), data)
			objs := waitMemObjects(t, bucket, 1, 20*time.Second)
			if !bytes.Equal(objs[0].data, data) {
				t.Fatal("content differs after the retry")
			}
			if n := bucket.Calls(memory.OpPut); n != 2 {
				t.Errorf("%d Put calls, want 2 (the failed one and its retry)", n)
			}
			if f := testutil.ToFloat64(m.failures); f != 1 {
				t.Errorf("failures=%v, want 1", f)
			}
			spoolEmpty(t, r)
			r.shutdown(t)
		})
	}
}

// TestStalledStoreDoesNotHoldTheStop: a store that stops answering in the
// middle of an upload does not keep the uploader past its drain: the upload
// is aborted when the drain ends, the dump stays in the spool, and the next
// uploader delivers it.
func TestStalledStoreDoesNotHoldTheStop(t *testing.T) {
	bucket := memory.New("dumps")
	release := make(chan struct{})
	defer close(release)
	bucket.SetHook(memory.Stall(release, memory.OpPut))
	const drain = 500 * time.Millisecond
	r := startUploader(t, bucket, func(o *Options) { o.Drain = drain })
	data := hproftest.Synthetic(3, 4096)
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), data)
	waitCalls(t, bucket, memory.OpPut, 1, 20*time.Second)
	start := time.Now()
	r.shutdown(t)
	if took := time.Since(start); took > drain+5*time.Second {
		t.Errorf("stopping took %s with a stalled store, drain is %s", took, drain)
	}
	if left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*.data")); len(left) != 1 {
		t.Fatalf("spool after a stop with a stalled store: %v", left)
	}
	if objs := memObjects(t, bucket); len(objs) != 0 {
		t.Fatalf("delivered although the store stalled: %v", objs)
	}
	bucket.SetHook(nil)
	r.start(t, nil)
	objs := waitMemObjects(t, bucket, 1, 20*time.Second)
	if !bytes.Equal(objs[0].data, data) {
		t.Fatal("content differs")
	}
	spoolEmpty(t, r)
	r.shutdown(t)
}

// fileBucket is the file:// destination of directory dir.
func fileBucket(t *testing.T, dir string) storage.Bucket {
	t.Helper()
	d, err := contract.ParseDestination("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := storage.Open(d, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return bucket
}

// midStream is a bucket whose Put closes reached once it has read after
// bytes of what it uploads.
type midStream struct {
	storage.Bucket
	after   int64
	once    sync.Once
	reached chan struct{}
}

func (m *midStream) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	return m.Bucket.Put(ctx, key, &countingReader{r: r, m: m}, opts)
}

type countingReader struct {
	r io.Reader
	n int64
	m *midStream
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n += int64(n); c.n >= c.m.after {
		c.m.once.Do(func() { close(c.m.reached) })
	}
	return n, err
}

// TestWrongCredentialsThenFixed: uploads fail while the mounted Secret holds
// a wrong key and succeed, without a restart, once it is rewritten.
func TestWrongCredentialsThenFixed(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	creds := t.TempDir()
	miniotest.WriteKeys(t, creds, "accessKeyID", srv.AccessKey, "secretAccessKey", "wrong-secret-value")
	m := newMetrics(t)
	core, logs := observer.New(zap.InfoLevel)
	r := startUploader(t, minioBucket(t, srv, creds), func(o *Options) { o.Metrics = m; o.Log = zapr.NewLogger(zap.New(core)) })
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), hproftest.Synthetic(2, 1024))
	time.Sleep(1500 * time.Millisecond)
	if f, up := testutil.ToFloat64(m.failures), testutil.ToFloat64(m.storageUp); f == 0 || up != 0 {
		t.Errorf("failures=%v storage_up=%v with a wrong key", f, up)
	}
	if objs := objects(t, srv); len(objs) != 0 {
		t.Fatalf("uploaded with a wrong key: %v", objs)
	}
	if left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*.data")); len(left) != 1 {
		t.Fatalf("the dump is not kept in the spool while storage refuses it: %v", left)
	}
	srv.WriteCredentials(t, creds)
	waitObjects(t, srv, 1, 20*time.Second)
	if up := testutil.ToFloat64(m.storageUp); up != 1 {
		t.Errorf("storage_up=%v after recovery", up)
	}
	// One line per state change, however many retries failed.
	if f := testutil.ToFloat64(m.failures); f < 3 {
		t.Errorf("only %v failed attempts: the test needs several retries", f)
	}
	down := logs.FilterMessageSnippet("storage unavailable").Len()
	back := logs.FilterMessageSnippet("storage reachable again").Len()
	if down != 1 || back != 1 {
		t.Errorf("logged %d 'unavailable' and %d 'reachable again' lines, want 1 each", down, back)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "wrong-secret-value") || strings.Contains(fmt.Sprint(f.Interface), "wrong-secret-value") {
				t.Errorf("the secret appears in a log line: %s", e.Message)
			}
		}
	}
	spoolEmpty(t, r)
	r.shutdown(t)
}

func newMetrics(t *testing.T) *Metrics {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRestartResumes: an uploader stopped before it could deliver (storage
// down, drain over) leaves the dump in the spool; the next one delivers it,
// once. The outage is the in-memory bucket failing every call.
func TestRestartResumes(t *testing.T) {
	bucket := memory.New("dumps")
	bucket.SetHook(memory.Fail(errOutage))
	r := startUploader(t, bucket, func(o *Options) { o.Drain = 500 * time.Millisecond })
	data := hproftest.Synthetic(3, 4096)
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), data)
	waitCalls(t, bucket, memory.OpStat, 1, 20*time.Second) // an attempt was made
	r.shutdown(t)
	if left, _ := filepath.Glob(filepath.Join(r.root, ".spool", "*.data")); len(left) != 1 {
		t.Fatalf("spool after a stop with storage down: %v", left)
	}
	bucket.SetHook(nil)
	r.start(t, nil)
	objs := waitMemObjects(t, bucket, 1, 20*time.Second)
	if !bytes.Equal(objs[0].data, data) {
		t.Fatal("content differs")
	}
	spoolEmpty(t, r)
	r.shutdown(t)
	if objs := memObjects(t, bucket); len(objs) != 1 {
		t.Errorf("%d objects after the restart, want 1", len(objs))
	}
}

// TestClaimFailureIsRetried: the spool cannot take a record (here: the
// spool directory is replaced by a file; in life: a full disk); the dump
// stays in place, and once the spool works again it is claimed and delivered.
func TestClaimFailureIsRetried(t *testing.T) {
	bucket := memory.New("dumps")
	r := startUploader(t, bucket, nil)
	sp := filepath.Join(r.root, ".spool")
	if err := os.Rename(sp, sp+".away"); err != nil {
		t.Fatal(err)
	}
	writeDump(t, sp, nil) // a file where the directory was
	path := filepath.Join(r.dumps, "app", "java_pid1.hprof")
	data := hproftest.Synthetic(2, 2048)
	writeDump(t, path, data)
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the dump left its place although it could not be claimed: %v", err)
	}
	if objs := memObjects(t, bucket); len(objs) != 0 {
		t.Fatal("uploaded without a claim")
	}
	if err := os.Remove(sp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(sp+".away", sp); err != nil {
		t.Fatal(err)
	}
	objs := waitMemObjects(t, bucket, 1, 20*time.Second)
	if !bytes.Equal(objs[0].data, data) {
		t.Fatal("content differs")
	}
	r.shutdown(t)
}

// TestKeyPattern: the URL the dump command prints for an on-demand dump
// matches the key the dump is then delivered under, for each compression.
func TestKeyPattern(t *testing.T) {
	for _, comp := range Compressions() {
		t.Run(comp, func(t *testing.T) {
			out := t.TempDir()
			bucket := fileBucket(t, out)
			r := startUploader(t, bucket, func(o *Options) { o.Compression = comp })
			defer r.shutdown(t)
			const file = "manual-20261123T101112.345Z-pid7.hprof"
			pattern, err := r.u.KeyPattern("app", file)
			if err != nil {
				t.Fatal(err)
			}
			suffix := map[string]string{CompressionGzip: ".gz", CompressionZstd: ".zst", CompressionNone: ""}[comp]
			if want := "file://" + out + "/shop/deployment-web/web-6d4cf56db6-x2k9p/app/<time>-manual-pid7.hprof" + suffix; pattern != want {
				t.Fatalf("KeyPattern = %q, want %q", pattern, want)
			}
			dir := filepath.Join(r.dumps, "app")
			if err := os.MkdirAll(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ".tmp"), hproftest.Synthetic(2, 64), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, ".tmp"), filepath.Join(dir, file)); err != nil {
				t.Fatal(err)
			}
			re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), "<time>", `\d{8}T\d{6}\.\d{3}Z`) + "$")
			deadline := time.Now().Add(30 * time.Second)
			for {
				var got []string
				_ = filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
					// Not the backend's temporary files of a Put under way.
					if err == nil && fi.Mode().IsRegular() && !strings.HasSuffix(p, ".meta.json") && !strings.HasPrefix(fi.Name(), ".tmp-dumpcatcher-") {
						got = append(got, bucket.URL(strings.TrimPrefix(p, out+"/")))
					}
					return nil
				})
				if len(got) == 1 {
					if !re.MatchString(got[0]) {
						t.Fatalf("delivered as %s; the pattern said %s", got[0], pattern)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("objects %q after 30s", got)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
