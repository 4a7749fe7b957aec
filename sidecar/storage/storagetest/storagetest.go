// Package storagetest is the conformance suite every storage.Bucket must
// pass, plus the generated streams it uses (also handy in other tests).
//
//	storagetest.Run(t, storagetest.Config{New: func(t *testing.T) storagetest.Target { ... }})
//
// Each subtest gets a fresh, empty Target. Subtests run one after the other
// so that Leftovers sees only the subtest's own failed Puts.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// Target is one backend under test.
type Target struct {
	Bucket storage.Bucket
	// Leftovers lists what failed Puts left behind in the backend
	// (temporary files, incomplete multipart uploads). Required.
	Leftovers func(t *testing.T) []string
}

// Config configures Run.
type Config struct {
	// New returns a fresh, empty target (for instance a new prefix).
	New func(t *testing.T) Target
	// PartSize is the backend's multipart part size, or 0. When set, the
	// suite puts objects of PartSize-1, PartSize, PartSize+1 and 2×PartSize
	// bytes and fails streams only after the first part.
	PartSize int64
	// LargeSize is the size of the large object, 40 MiB when zero.
	LargeSize int64
}

// Run runs the conformance suite.
func Run(t *testing.T, cfg Config) {
	if cfg.LargeSize == 0 {
		cfg.LargeSize = 40 << 20
	}
	s := suite{cfg: cfg}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, tg Target)
	}{
		{"RoundTrip", s.roundTrip},
		{"Metadata", s.metadata},
		{"ExpectedSHA256", s.expectedSHA256},
		{"InvalidMetadata", s.invalidMetadata},
		{"NotExist", s.notExist},
		{"Empty", s.empty},
		{"PartBoundaries", s.partBoundaries},
		{"Large", s.large},
		{"CancelMidPut", s.cancelMidPut},
		{"CancelledBeforePut", s.cancelledBeforePut},
		{"ReaderError", s.readerError},
		{"FailedPutKeepsOldObject", s.failedPutKeepsOld},
		{"Overwrite", s.overwrite},
		{"Neighbours", s.neighbours},
		{"InvalidKeys", s.invalidKeys},
		{"ContentEncodingNotDecoded", s.contentEncoding},
		{"ConcurrentPuts", s.concurrent},
		{"ConditionalWrites", s.conditional},
		{"ConditionalRace", s.conditionalRace},
		{"List", s.list},
		{"GetRange", s.getRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := cfg.New(t)
			if tg.Leftovers == nil {
				t.Fatal("Target.Leftovers is nil")
			}
			tc.fn(t, tg)
		})
	}
}

type suite struct{ cfg Config }

// Stream returns size pseudo-random bytes determined by seed, generated on
// the fly (ChaCha8, about a GB/s): nothing is held in memory.
func Stream(seed uint64, size int64) io.Reader {
	var s [32]byte
	s[0], s[1], s[2], s[3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
	s[4], s[5], s[6], s[7] = byte(seed>>32), byte(seed>>40), byte(seed>>48), byte(seed>>56)
	return io.LimitReader(rand.NewChaCha8(s), size)
}

// StreamSHA256 is the hex SHA-256 of Stream(seed, size).
func StreamSHA256(seed uint64, size int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, Stream(seed, size)); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// HashReader returns the hex SHA-256 and length of everything r yields.
func HashReader(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// HookReader yields r and calls hook once, after at least after bytes were
// read.
type HookReader struct {
	R     io.Reader
	After int64
	Hook  func()

	n     int64
	fired bool
}

func (h *HookReader) Read(p []byte) (int, error) {
	n, err := h.R.Read(p)
	h.n += int64(n)
	if !h.fired && h.n >= h.After {
		h.fired = true
		h.Hook()
	}
	return n, err
}

// FailingReader yields r for after bytes and then fails with Err.
type FailingReader struct {
	R     io.Reader
	After int64
	Err   error

	n int64
}

func (f *FailingReader) Read(p []byte) (int, error) {
	if f.n >= f.After {
		return 0, f.Err
	}
	if rem := f.After - f.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := f.R.Read(p)
	f.n += int64(n)
	return n, err
}

func put(t *testing.T, b storage.Bucket, key string, r io.Reader, opts storage.PutOptions) storage.Info {
	t.Helper()
	info, err := b.Put(context.Background(), key, r, opts)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

func get(t *testing.T, b storage.Bucket, key string) []byte {
	t.Helper()
	rc, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return data
}

func getHash(t *testing.T, b storage.Bucket, key string) (string, int64) {
	t.Helper()
	rc, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	sum, n, err := HashReader(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return sum, n
}

func stat(t *testing.T, b storage.Bucket, key string) storage.Info {
	t.Helper()
	info, err := b.Stat(context.Background(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	return info
}

func assertNotExist(t *testing.T, b storage.Bucket, key string) {
	t.Helper()
	if info, err := b.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat(%q) = %+v, %v; want ErrNotExist", key, info, err)
	}
	if rc, err := b.Get(context.Background(), key); !errors.Is(err, storage.ErrNotExist) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("Get(%q) error = %v; want ErrNotExist", key, err)
	}
}

func assertClean(t *testing.T, tg Target) {
	t.Helper()
	if left := tg.Leftovers(t); len(left) > 0 {
		t.Fatalf("failed Puts left behind: %q", left)
	}
}

// checkPut checks what Put returned against what was sent.
func checkPut(t *testing.T, info storage.Info, key string, size int64, sum string) {
	t.Helper()
	if info.Key != key || info.Size != size || info.Checksum == "" || info.Metadata[storage.MetaSHA256] != sum || info.Verified == "" {
		t.Fatalf("Put returned %+v; want key %q, size %d, a checksum, sha256 %s and a verification note", info, key, size, sum)
	}
}

func (s suite) roundTrip(t *testing.T, tg Target) {
	b := tg.Bucket
	data := []byte("hello, heap dump\n")
	key := "ns/pod/20260102T030405Z-oom.hprof"
	info := put(t, b, key, bytes.NewReader(data), storage.PutOptions{})
	checkPut(t, info, key, int64(len(data)), sha(data))
	st := stat(t, b, key)
	if st.Key != key || st.Size != info.Size || st.Checksum != info.Checksum || st.Metadata[storage.MetaSHA256] != sha(data) {
		t.Fatalf("Stat = %+v; Put returned %+v", st, info)
	}
	if got := get(t, b, key); !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, want %q", got, data)
	}
	if u := b.URL(key); !strings.HasSuffix(u, "/"+key) || !strings.Contains(u, "://") {
		t.Fatalf("URL(%q) = %q", key, u)
	}
	if err := b.Delete(context.Background(), key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertNotExist(t, b, key)
	if err := b.Delete(context.Background(), key); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func (s suite) metadata(t *testing.T, tg Target) {
	b := tg.Bucket
	md := map[string]string{
		"pod":       "web-7d9c5-abcde",
		"namespace": "shop",
		"reason":    "oom",
		"workload":  "deployment/web",
		"expires":   "not-a-header", // must stay user metadata
		"x-y-1":     "a=b; c:d, \"e\"",
	}
	data := []byte("metadata round trip")
	opts := storage.PutOptions{Metadata: md, ContentType: "application/vnd.java.hprof", ContentEncoding: "gzip"}
	info := put(t, b, "m/obj", bytes.NewReader(data), opts)
	want := map[string]string{storage.MetaSHA256: sha(data)}
	for k, v := range md {
		want[k] = v
	}
	for _, got := range []storage.Info{info, stat(t, b, "m/obj")} {
		if fmt.Sprint(got.Metadata) != fmt.Sprint(want) {
			t.Errorf("metadata = %v\nwant %v", got.Metadata, want)
		}
		if got.ContentType != opts.ContentType || got.ContentEncoding != opts.ContentEncoding {
			t.Errorf("content type/encoding = %q/%q, want %q/%q", got.ContentType, got.ContentEncoding, opts.ContentType, opts.ContentEncoding)
		}
	}
	if len(md) != 6 {
		t.Errorf("Put modified the caller's metadata map: %v", md)
	}
}

func (s suite) expectedSHA256(t *testing.T, tg Target) {
	b := tg.Bucket
	size := 1000 + s.cfg.PartSize // multipart when the backend has parts
	sum := StreamSHA256(7, size)
	info := put(t, b, "e/good", Stream(7, size), storage.PutOptions{Metadata: map[string]string{storage.MetaSHA256: sum}})
	checkPut(t, info, "e/good", size, sum)
	if got := stat(t, b, "e/good").Metadata[storage.MetaSHA256]; got != sum {
		t.Fatalf("stored sha256 %q, want %q", got, sum)
	}

	wrong := strings.Repeat("0", 64)
	_, err := b.Put(context.Background(), "e/bad", Stream(7, size), storage.PutOptions{Metadata: map[string]string{storage.MetaSHA256: wrong}})
	var ve *storage.VerifyError
	if !errors.As(err, &ve) || ve.What != "sha256" {
		t.Fatalf("Put with a wrong expected sha256: error %v, want a *VerifyError about sha256", err)
	}
	assertNotExist(t, b, "e/bad")
	assertClean(t, tg)
}

func (s suite) invalidMetadata(t *testing.T, tg Target) {
	for _, md := range []map[string]string{
		{"Upper": "x"},
		{"under_score": "x"},
		{"": "x"},
		{"k": "non-ascii é"},
		{"k": "new\nline"},
		{"k": " padded "},
		{"sha256": "not-hex"},
		{"big": strings.Repeat("x", 3000)},
	} {
		_, err := tg.Bucket.Put(context.Background(), "im/obj", strings.NewReader("x"), storage.PutOptions{Metadata: md})
		if !errors.Is(err, storage.ErrInvalidMetadata) {
			t.Errorf("Put with metadata %q: error %v, want ErrInvalidMetadata", md, err)
		}
	}
	assertNotExist(t, tg.Bucket, "im/obj")
}

func (s suite) notExist(t *testing.T, tg Target) {
	assertNotExist(t, tg.Bucket, "no/such/key")
	if err := tg.Bucket.Delete(context.Background(), "no/such/key"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
}

func (s suite) empty(t *testing.T, tg Target) {
	info := put(t, tg.Bucket, "empty", strings.NewReader(""), storage.PutOptions{})
	checkPut(t, info, "empty", 0, sha(nil))
	if st := stat(t, tg.Bucket, "empty"); st.Size != 0 {
		t.Fatalf("Stat size %d, want 0", st.Size)
	}
	if got := get(t, tg.Bucket, "empty"); len(got) != 0 {
		t.Fatalf("Get returned %d bytes, want 0", len(got))
	}
}

func (s suite) putAndCheckStream(t *testing.T, b storage.Bucket, key string, seed uint64, size int64) {
	t.Helper()
	sum := StreamSHA256(seed, size)
	info := put(t, b, key, Stream(seed, size), storage.PutOptions{})
	checkPut(t, info, key, size, sum)
	if st := stat(t, b, key); st.Size != size || st.Checksum != info.Checksum {
		t.Fatalf("Stat = %+v; Put returned %+v", st, info)
	}
	if got, n := getHash(t, b, key); got != sum || n != size {
		t.Fatalf("Get returned %d bytes with sha256 %s; want %d bytes with %s", n, got, size, sum)
	}
}

func (s suite) partBoundaries(t *testing.T, tg Target) {
	p := s.cfg.PartSize
	if p == 0 {
		p = 1 << 20 // still worth checking for streaming backends
	}
	for i, size := range []int64{1, p - 1, p, p + 1, 2 * p} {
		s.putAndCheckStream(t, tg.Bucket, fmt.Sprintf("pb/%d", size), uint64(i+100), size)
	}
}

func (s suite) large(t *testing.T, tg Target) {
	s.putAndCheckStream(t, tg.Bucket, "large/dump.hprof", 1, s.cfg.LargeSize)
}

// failAfter is where the failure tests break the stream: past the first
// part when there are parts, so that a multipart upload is under way.
func (s suite) failAfter() int64 {
	if s.cfg.PartSize > 0 {
		return 2*s.cfg.PartSize + s.cfg.PartSize/2
	}
	return 3 << 20
}

func (s suite) cancelMidPut(t *testing.T, tg Target) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &HookReader{R: Stream(3, 4*s.failAfter()), After: s.failAfter(), Hook: cancel}
	_, err := tg.Bucket.Put(ctx, "cancel/obj", r, storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled mid-stream: error %v, want context.Canceled", err)
	}
	assertNotExist(t, tg.Bucket, "cancel/obj")
	assertClean(t, tg)
}

func (s suite) cancelledBeforePut(t *testing.T, tg Target) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tg.Bucket.Put(ctx, "cancel/before", strings.NewReader("x"), storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context: error %v, want context.Canceled", err)
	}
	assertNotExist(t, tg.Bucket, "cancel/before")
	assertClean(t, tg)
}

var errBoom = errors.New("boom: the dump file went away")

func (s suite) readerError(t *testing.T, tg Target) {
	for _, after := range []int64{0, 100, s.failAfter()} {
		r := &FailingReader{R: Stream(4, 4*s.failAfter()), After: after, Err: errBoom}
		_, err := tg.Bucket.Put(context.Background(), "rerr/obj", r, storage.PutOptions{})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Put of a stream failing after %d bytes: error %v, want the reader's error", after, err)
		}
		assertNotExist(t, tg.Bucket, "rerr/obj")
	}
	assertClean(t, tg)
}

func (s suite) failedPutKeepsOld(t *testing.T, tg Target) {
	b := tg.Bucket
	old := []byte("the first dump")
	put(t, b, "keep/obj", bytes.NewReader(old), storage.PutOptions{Metadata: map[string]string{"v": "1"}})
	r := &FailingReader{R: Stream(5, 4*s.failAfter()), After: s.failAfter(), Err: errBoom}
	if _, err := b.Put(context.Background(), "keep/obj", r, storage.PutOptions{Metadata: map[string]string{"v": "2"}}); !errors.Is(err, errBoom) {
		t.Fatalf("failing Put: error %v, want the reader's error", err)
	}
	if got := get(t, b, "keep/obj"); !bytes.Equal(got, old) {
		t.Fatalf("after a failed Put the object holds %d bytes, want the old %q", len(got), old)
	}
	if st := stat(t, b, "keep/obj"); st.Metadata["v"] != "1" || st.Size != int64(len(old)) {
		t.Fatalf("after a failed Put Stat = %+v, want the old object", st)
	}
	assertClean(t, tg)
}

func (s suite) overwrite(t *testing.T, tg Target) {
	b := tg.Bucket
	put(t, b, "ow/obj", strings.NewReader("first, longer content"), storage.PutOptions{Metadata: map[string]string{"v": "1"}})
	put(t, b, "ow/obj", strings.NewReader("second"), storage.PutOptions{Metadata: map[string]string{"v": "2"}})
	if got := get(t, b, "ow/obj"); string(got) != "second" {
		t.Fatalf("after overwrite Get = %q", got)
	}
	if st := stat(t, b, "ow/obj"); st.Metadata["v"] != "2" || st.Size != 6 {
		t.Fatalf("after overwrite Stat = %+v", st)
	}
}

func (s suite) neighbours(t *testing.T, tg Target) {
	b := tg.Bucket
	keys := []string{"n/a", "n/a2", "n/ab/c", "n/a.meta", "n/b/a", "a"}
	for _, k := range keys {
		put(t, b, k, strings.NewReader("content of "+k), storage.PutOptions{})
	}
	put(t, b, "n/a", strings.NewReader("replaced"), storage.PutOptions{})
	if err := b.Delete(context.Background(), "n/a2"); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		switch k {
		case "n/a":
			if got := get(t, b, k); string(got) != "replaced" {
				t.Errorf("%s = %q", k, got)
			}
		case "n/a2":
			assertNotExist(t, b, k)
		default:
			if got := get(t, b, k); string(got) != "content of "+k {
				t.Errorf("%s = %q, want its own content", k, got)
			}
		}
	}
	// A prefix of keys is not an object.
	assertNotExist(t, b, "n")
	assertNotExist(t, b, "n/ab")
}

func (s suite) invalidKeys(t *testing.T, tg Target) {
	b := tg.Bucket
	ctx := context.Background()
	for _, k := range []string{"", "/abs", "../up", "a/../../up", "a/..", "a//b", "./a", "a/./b", "dir/", "back\\slash", "nul\x00", "new\nline"} {
		if _, err := b.Put(ctx, k, strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q): error %v, want ErrInvalidKey", k, err)
		}
		if _, err := b.Stat(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q): error %v, want ErrInvalidKey", k, err)
		}
		if rc, err := b.Get(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Get(%q): error %v, want ErrInvalidKey", k, err)
		}
		if err := b.Delete(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q): error %v, want ErrInvalidKey", k, err)
		}
	}
	assertNotExist(t, b, "up")
}

func (s suite) contentEncoding(t *testing.T, tg Target) {
	// Bytes that are (the start of) a gzip stream must come back verbatim,
	// never transparently decompressed.
	data := []byte{0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x01, 0x02, 0x03}
	put(t, tg.Bucket, "gz/obj.hprof.gz", bytes.NewReader(data), storage.PutOptions{ContentEncoding: "gzip", ContentType: "application/gzip"})
	if got := get(t, tg.Bucket, "gz/obj.hprof.gz"); !bytes.Equal(got, data) {
		t.Fatalf("Get = %x, want %x", got, data)
	}
}

func (s suite) concurrent(t *testing.T, tg Target) {
	size := s.cfg.PartSize + s.cfg.PartSize/2 + 1234
	if size < 1<<20 {
		size = 3<<20 + 1234
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("conc/%d", i)
			if _, err := tg.Bucket.Put(context.Background(), key, Stream(uint64(200+i), size), storage.PutOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range 3 {
		if got, n := getHash(t, tg.Bucket, fmt.Sprintf("conc/%d", i)); got != StreamSHA256(uint64(200+i), size) || n != size {
			t.Fatalf("conc/%d: %d bytes, sha256 %s", i, n, got)
		}
	}
}

func conditional(t *testing.T, b storage.Bucket) storage.Conditional {
	t.Helper()
	c, ok := b.(storage.Conditional)
	if !ok {
		t.Fatalf("%T does not implement storage.Conditional", b)
	}
	return c
}

func readVersion(t *testing.T, c storage.Conditional, key string) ([]byte, string) {
	t.Helper()
	data, v, err := c.ReadVersion(context.Background(), key)
	if err != nil {
		t.Fatalf("ReadVersion(%q): %v", key, err)
	}
	return data, v
}

func (s suite) conditional(t *testing.T, tg Target) {
	ctx := context.Background()
	c := conditional(t, tg.Bucket)
	key := "locks/ns/deployment/web"
	if _, _, err := c.ReadVersion(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("ReadVersion of a missing key: %v; want ErrNotExist", err)
	}
	if _, err := c.WriteIf(ctx, key, []byte("x"), "no-such-version"); !errors.Is(err, storage.ErrPrecondition) {
		t.Fatalf("WriteIf(version) of a missing key: %v; want ErrPrecondition", err)
	}
	v1, err := c.WriteIf(ctx, key, []byte("first"), "")
	if err != nil || v1 == "" {
		t.Fatalf("WriteIf(absent) = %q, %v", v1, err)
	}
	if _, err := c.WriteIf(ctx, key, []byte("second"), ""); !errors.Is(err, storage.ErrPrecondition) {
		t.Fatalf("WriteIf(absent) over an existing object: %v; want ErrPrecondition", err)
	}
	if data, v := readVersion(t, c, key); string(data) != "first" || v != v1 {
		t.Fatalf("after a refused write: %q at %q; want %q at %q", data, v, "first", v1)
	}
	v2, err := c.WriteIf(ctx, key, []byte("second"), v1)
	if err != nil || v2 == "" || v2 == v1 {
		t.Fatalf("WriteIf(v1) = %q, %v; want a new version", v2, err)
	}
	if _, err := c.WriteIf(ctx, key, []byte("stale"), v1); !errors.Is(err, storage.ErrPrecondition) {
		t.Fatalf("WriteIf(stale version): %v; want ErrPrecondition", err)
	}
	if data, v := readVersion(t, c, key); string(data) != "second" || v != v2 {
		t.Fatalf("read %q at %q; want %q at %q", data, v, "second", v2)
	}
	// The object is an ordinary one for the rest of the interface.
	if got := get(t, tg.Bucket, key); string(got) != "second" {
		t.Fatalf("Get = %q", got)
	}
	if err := tg.Bucket.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteIf(ctx, key, []byte("third"), v2); !errors.Is(err, storage.ErrPrecondition) {
		t.Fatalf("WriteIf(version) after Delete: %v; want ErrPrecondition", err)
	}
	if _, err := c.WriteIf(ctx, key, []byte("third"), ""); err != nil {
		t.Fatalf("WriteIf(absent) after Delete: %v", err)
	}
	big := bytes.Repeat([]byte{'x'}, storage.MaxConditionalSize+1)
	if _, err := c.WriteIf(ctx, "locks/big", big, ""); err == nil || errors.Is(err, storage.ErrPrecondition) {
		t.Fatalf("WriteIf of %d bytes: %v; want a size error", len(big), err)
	}
	if _, err := c.WriteIf(ctx, "../escape", []byte("x"), ""); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("WriteIf of an invalid key: %v; want ErrInvalidKey", err)
	}
	assertClean(t, tg)
}

// conditionalRace: of writers racing with the same condition exactly one
// wins, for creation and for replacement. Each write's data is unique: on S3
// the version is a content hash, and the previous winner writing its own
// bytes again would leave the version unchanged for a second winner (see
// Conditional.WriteIf).
func (s suite) conditionalRace(t *testing.T, tg Target) {
	ctx := context.Background()
	c := conditional(t, tg.Bucket)
	const writers = 8
	round := 0
	race := func(version string) (winner string) {
		t.Helper()
		var wg sync.WaitGroup
		wins := make(chan string, writers)
		errs := make(chan error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				me := fmt.Sprintf("round-%d-writer-%d", round, i)
				_, err := c.WriteIf(ctx, "race/lock", []byte(me), version)
				switch {
				case err == nil:
					wins <- me
				case !errors.Is(err, storage.ErrPrecondition):
					errs <- err
				}
			}()
		}
		wg.Wait()
		round++
		close(wins)
		close(errs)
		for err := range errs {
			t.Fatalf("a losing WriteIf failed with something other than ErrPrecondition: %v", err)
		}
		var all []string
		for w := range wins {
			all = append(all, w)
		}
		if len(all) != 1 {
			t.Fatalf("%d writers won the race (version %q): %q; want exactly one", len(all), version, all)
		}
		if data, _ := readVersion(t, c, "race/lock"); string(data) != all[0] {
			t.Fatalf("object holds %q, winner was %q", data, all[0])
		}
		return all[0]
	}
	race("")
	_, v := readVersion(t, c, "race/lock")
	race(v)
	assertClean(t, tg)
}
