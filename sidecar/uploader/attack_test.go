package uploader

// Regression tests of issue 11: what an untrusted app container can leave in
// its dump directory (links, FIFOs, odd names, sparse files) must neither
// leak the uploader's files, nor block it, nor keep other dumps from being
// delivered.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/watch"
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// observed logs to the test and to an observer (info and up).
func observed(t *testing.T) (logr.Logger, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	return zapr.NewLogger(zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), core))), logs
}

// fileObjects lists and decodes the objects of a file:// bucket in dir.
func fileObjects(t *testing.T, bucket storage.Bucket, dir string) []object {
	t.Helper()
	var out []object
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasSuffix(p, ".meta.json") || strings.HasPrefix(d.Name(), ".tmp-") {
			return err
		}
		key, _ := filepath.Rel(dir, p)
		info, err := bucket.Stat(context.Background(), key)
		if err != nil {
			return err
		}
		rc, err := bucket.Get(context.Background(), key)
		if err != nil {
			return err
		}
		defer rc.Close()
		out = append(out, object{key: key, meta: info.Metadata, data: decode(t, rc, info.Metadata["encoding"])})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// staleEvent is the report the watcher made of the file at path, taken
// before the attacker swaps something else in: the window between the
// watcher's look at a file and the uploader's claim, held open.
func staleEvent(t *testing.T, path string) watch.Event {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return watch.Event{Path: path, Container: "app", Complete: true, Reason: watch.ReasonCloseWrite,
		Size: fi.Size(), ModTime: fi.ModTime(), Dev: st.Dev, Inode: st.Ino}
}

// swap renames a symbolic link to target over path, as an attacker in the
// app container can: rename(2) replaces the name atomically.
func swap(t *testing.T, path, target string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".swap")
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestSwappedLinkIsNotUploaded: a dump is reported, then a link to a file
// only the uploader may read (its credentials), or to /dev/zero, is renamed
// over it before the claim. Neither the credentials nor endless zeros reach
// the bucket; the link is refused with a log line.
func TestSwappedLinkIsNotUploaded(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secretAccessKey")
	if err := os.WriteFile(secret, []byte("the-secret-access-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{secret, "/dev/zero"} {
		t.Run(filepath.Base(target), func(t *testing.T) {
			out := t.TempDir()
			bucket := fileBucket(t, out)
			log, logs := observed(t)
			m := newMetrics(t)
			r := startUploader(t, bucket, func(o *Options) { o.Log = log; o.Drain = 2 * time.Second; o.Metrics = m })
			// Outside the watched directory, so that only the stale event
			// reports it.
			path := filepath.Join(r.root, "elsewhere", "app", "java_pid1.hprof")
			writeDump(t, path, hproftest.Synthetic(2, 100))
			ev := staleEvent(t, path)
			swap(t, path, target)
			r.u.found(ev)
			time.Sleep(3 * time.Second)
			for _, o := range fileObjects(t, bucket, out) {
				if bytes.Contains(o.data, []byte("the-secret-access-key")) {
					t.Fatalf("the credentials were uploaded as %s", o.key)
				}
				t.Errorf("uploaded %s (%d bytes)", o.key, len(o.data))
			}
			if n := logs.FilterMessageSnippet("not a regular file (a symbolic link)").Len(); n != 1 {
				t.Errorf("%d log lines refusing the link, want 1; logs: %v", n, messages(logs))
			}
			if n := testutil.ToFloat64(m.dumpsFailed.WithLabelValues(FailNotRegular)); n != 1 {
				t.Errorf("dumpcatcher_dumps_failed_total{reason=not_regular} = %v, want 1", n)
			}
			if left := globAll(filepath.Join(r.root, ".spool")); len(left) != 1 {
				t.Errorf("the spool holds %v", left[1:])
			}
			r.shutdown(t)
		})
	}
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
	}
	return out
}

// TestSwappedFIFODoesNotHangStop: a FIFO renamed over a reported dump
// must not block the uploader: it stops within a bound after the stop signal.
func TestSwappedFIFODoesNotHangStop(t *testing.T) {
	out := t.TempDir()
	bucket := fileBucket(t, out)
	log, logs := observed(t)
	r := startUploader(t, bucket, func(o *Options) { o.Log = log; o.Drain = 2 * time.Second })
	path := filepath.Join(r.root, "elsewhere", "app", "java_pid1.hprof")
	writeDump(t, path, hproftest.Synthetic(2, 100))
	ev := staleEvent(t, path)
	fifo := filepath.Join(filepath.Dir(path), ".fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	// And one in the watched directory, never written to.
	dir := filepath.Join(r.dumps, "app")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "java_pid2.hprof"), 0o666); err != nil {
		t.Fatal(err)
	}
	r.u.found(ev)
	time.Sleep(time.Second)
	r.stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock whatever opened a FIFO, so that the test can end.
		for _, p := range append(globAll(r.root), path) {
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeNamedPipe != 0 {
				if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
			}
		}
		<-r.done
		t.Fatalf("the uploader did not stop within 10 s of the stop signal (drain 2 s); logs: %v", messages(logs))
	}
	// One line for each FIFO.
	for _, p := range []string{path, filepath.Join(dir, "java_pid2.hprof")} {
		if n := logs.FilterMessageSnippet("not a regular file (a FIFO)").FilterField(zap.String("path", p)).Len(); n != 1 {
			t.Errorf("%d log lines refusing the FIFO %s, want 1; logs: %v", n, p, messages(logs))
		}
	}
}

func globAll(root string) []string {
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// oddNames are legal file names an app may give a dump.
var oddNames = []string{
	" ünïcode name .hprof",
	"tab\tnew\nline\x01.hprof",
	"trailing space.hprof ",
	"%41 percent.hprof",
	strings.Repeat("ü", 120) + ".hprof", // 245 bytes
}

// TestOddNamesDoNotWedgeUploads: dumps with names that are not valid as
// object metadata as they are (non-ASCII, control characters, leading or
// trailing spaces, very long) are delivered with the name encoded, and a
// later ordinary dump is delivered too.
func TestOddNamesDoNotWedgeUploads(t *testing.T) {
	out := t.TempDir()
	bucket := fileBucket(t, out)
	testOddNames(t, bucket, func() []object { return fileObjects(t, bucket, out) })
}

// TestOddNamesDoNotWedgeUploadsMinIO is TestOddNamesDoNotWedgeUploads
// against a real S3 store.
func TestOddNamesDoNotWedgeUploadsMinIO(t *testing.T) {
	srv, bucket, _ := startMinIO(t)
	testOddNames(t, bucket, func() []object { return objects(t, srv) })
}

func testOddNames(t *testing.T, bucket storage.Bucket, list func() []object) {
	log, logs := observed(t)
	r := startUploader(t, bucket, func(o *Options) { o.Log = log })
	want := map[string][]byte{}
	for i, name := range append(append([]string{}, oddNames...), "java_pid9.hprof") {
		data := hproftest.Synthetic(2, 100+i)
		want[name] = data
		writeDump(t, filepath.Join(r.dumps, "app", name), data)
		time.Sleep(50 * time.Millisecond) // in this order
	}
	deadline := time.Now().Add(30 * time.Second)
	var objs []object
	for {
		objs = list()
		if len(objs) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, data := range want {
		var found *object
		for i := range objs {
			if bytes.Equal(objs[i].data, data) {
				found = &objs[i]
			}
		}
		if found == nil {
			t.Errorf("dump %q not delivered intact (have %d objects: %v); logs: %v", name, len(objs), keysOf(objs), messages(logs))
			continue
		}
		// The name is percent-encoded, cut (ending in "...") when longer
		// than 512 bytes encoded.
		got, err := storage.DecodeMetadataValue(strings.TrimSuffix(found.meta["file"], "..."))
		if err != nil || !strings.HasPrefix(name, got) || len(found.meta["file"]) > 512 ||
			got != name && !strings.HasSuffix(found.meta["file"], "...") {
			t.Errorf("dump %q: metadata file %q (%q, %v)", name, found.meta["file"], got, err)
		}
		if err := storage.ValidateKey(found.key); err != nil {
			t.Errorf("key: %v", err)
		}
		if !strings.HasSuffix(found.key, ".hprof.gz") && !strings.HasSuffix(found.key, ".hprof_.gz") {
			t.Errorf("dump %q: key %q", name, found.key)
		}
	}
	r.shutdown(t)
}

func keysOf(objs []object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, fmt.Sprintf("%s %v", o.key, o.meta))
	}
	return out
}

// TestSparseFileIsSetAside: a file of 256 GiB of holes (it costs no space
// and so passes any emptyDir sizeLimit) does not keep the single worker busy:
// an ordinary dump written after it is delivered promptly, and the sparse
// file is set aside with a log line.
func TestSparseFileIsSetAside(t *testing.T) {
	out := t.TempDir()
	bucket := fileBucket(t, out)
	log, logs := observed(t)
	m := newMetrics(t)
	r := startUploader(t, bucket, func(o *Options) { o.Log = log; o.Drain = 2 * time.Second; o.Metrics = m })
	dir := filepath.Join(r.dumps, "app")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // watched, so that the rename is seen
	f, err := os.Create(filepath.Join(dir, ".sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(hproftest.Synthetic(1, 16)); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(filepath.Join(dir, ".sparse"), filepath.Join(dir, "java_pid1.hprof")); err != nil {
		t.Fatal(err)
	}
	// Claimed first.
	for deadline := time.Now().Add(10 * time.Second); logs.FilterMessage("claimed").FilterField(zap.String("file", "java_pid1.hprof")).Len() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the sparse file was not claimed within 10 s; logs: %v", messages(logs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	data := hproftest.Synthetic(2, 1000)
	start := time.Now()
	writeDump(t, filepath.Join(dir, "java_pid2.hprof"), data)
	for {
		objs := fileObjects(t, bucket, out)
		if len(objs) == 1 && bytes.Equal(objs[0].data, data) {
			break
		}
		if len(objs) > 1 {
			t.Fatalf("objects: %v", keysOf(objs))
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the ordinary dump was not delivered within 15 s of the sparse one; logs: %v", messages(logs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := logs.FilterMessageSnippet("setting a dump aside").FilterField(zap.String("why", FailSparse)).Len(); n != 1 {
		t.Errorf("%d log lines setting the sparse file aside, want 1; logs: %v", n, messages(logs))
	}
	if n := testutil.ToFloat64(m.dumpsFailed.WithLabelValues(FailSparse)); n != 1 {
		t.Errorf("dumpcatcher_dumps_failed_total{reason=sparse} = %v, want 1", n)
	}
	r.shutdown(t)
	// Kept in failed/, and not tried again by a restarted uploader.
	failed, _ := filepath.Glob(filepath.Join(r.root, ".spool", "failed", "*.data"))
	if len(failed) != 1 {
		t.Fatalf("failed/: %v", failed)
	}
	if fi, err := os.Stat(failed[0]); err != nil || fi.Size() != 256<<30 {
		t.Errorf("set aside: %v %v", fi, err)
	}
	r.start(t, func(o *Options) { o.Log = log; o.Metrics = newMetrics(t) })
	time.Sleep(time.Second)
	r.shutdown(t)
	if n := logs.FilterMessageSnippet("setting a dump aside").Len(); n != 1 {
		t.Errorf("%d log lines setting a dump aside after a restart, want 1", n)
	}
}

// rejecting is a bucket that refuses the metadata of dumps named reject,
// as a store with stricter rules than ours would.
type rejecting struct {
	storage.Bucket
	reject string
}

func (r rejecting) Put(ctx context.Context, key string, rd io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if opts.Metadata["file"] == r.reject {
		return storage.Info{}, fmt.Errorf("put %s: %w: the store says no", key, storage.ErrInvalidMetadata)
	}
	return r.Bucket.Put(ctx, key, rd, opts)
}

// TestRejectedDumpIsSetAsideNotAnOutage: a dump the store refuses for its
// own metadata is set aside at once with one log line and counted; it does
// not mark the storage down, and the next dump is delivered.
func TestRejectedDumpIsSetAsideNotAnOutage(t *testing.T) {
	out := t.TempDir()
	bucket := fileBucket(t, out)
	log, logs := observed(t)
	m := newMetrics(t)
	r := startUploader(t, rejecting{bucket, "java_pid1.hprof"}, func(o *Options) { o.Log = log; o.Metrics = m })
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid1.hprof"), hproftest.Synthetic(2, 100))
	time.Sleep(100 * time.Millisecond)
	data := hproftest.Synthetic(3, 100)
	writeDump(t, filepath.Join(r.dumps, "app", "java_pid2.hprof"), data)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if objs := fileObjects(t, bucket, out); len(objs) == 1 && bytes.Equal(objs[0].data, data) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second dump was not delivered within 10 s; logs: %v", messages(logs))
		}
	}
	r.shutdown(t)
	if n := logs.FilterMessageSnippet("setting a dump aside").FilterField(zap.String("why", FailRejected)).Len(); n != 1 {
		t.Errorf("%d log lines setting the rejected dump aside, want 1; logs: %v", n, messages(logs))
	}
	for name, want := range map[string]float64{"rejected": 1, "storage_up": 1, "attempt failures": 0} {
		var got float64
		switch name {
		case "rejected":
			got = testutil.ToFloat64(m.dumpsFailed.WithLabelValues(FailRejected))
		case "storage_up":
			got = testutil.ToFloat64(m.storageUp)
		default:
			got = testutil.ToFloat64(m.failures)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := logs.FilterMessageSnippet("storage unavailable").Len(); n != 0 {
		t.Errorf("the rejection was taken for an outage")
	}
	if failed, _ := filepath.Glob(filepath.Join(r.root, ".spool", "failed", "*.data")); len(failed) != 1 {
		t.Errorf("failed/: %v", failed)
	}
}
