package watch_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
	"github.com/dumpcatcher/dumpcatcher/sidecar/elfcore"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hserr"
	"github.com/dumpcatcher/dumpcatcher/sidecar/watch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait for an expected event; the machine may be busy.
const wait = 15 * time.Second

// recorder collects the events of a running Watcher.
type recorder struct {
	mu     sync.Mutex
	events []watch.Event
	notify chan struct{}
	// gate, when set, holds every event until release is called.
	gate    chan struct{}
	release func()
}

func newRecorder(gated bool) *recorder {
	r := &recorder{notify: make(chan struct{}, 1), release: func() {}}
	if gated {
		r.gate = make(chan struct{})
		r.release = sync.OnceFunc(func() { close(r.gate) })
	}
	return r
}

func (r *recorder) found(ev watch.Event) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []watch.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]watch.Event(nil), r.events...)
}

// waitFor waits until n events were recorded and returns them.
func (r *recorder) waitFor(t *testing.T, n int) []watch.Event {
	t.Helper()
	return r.waitForWithin(t, n, wait)
}

// waitForWithin is waitFor with a budget of its own, for runs of thousands
// of files (slow under the race detector).
func (r *recorder) waitForWithin(t *testing.T, n int, wait time.Duration) []watch.Event {
	t.Helper()
	deadline := time.After(wait)
	for {
		if evs := r.snapshot(); len(evs) >= n {
			return evs
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("got %d events within %v, want %d: %s", len(r.snapshot()), wait, n, describe(r.snapshot()))
		}
	}
}

// quiet asserts that no more than n events arrive during d.
func (r *recorder) quiet(t *testing.T, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if evs := r.snapshot(); len(evs) != n {
		t.Fatalf("got %d events, want %d: %s", len(evs), n, describe(evs))
	}
}

func describe(evs []watch.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s container=%s reason=%s complete=%v existing=%v size=%d err=%v", ev.Path, ev.Container, ev.Reason, ev.Complete, ev.Existing, ev.Size, ev.Err)
	}
	return b.String()
}

// start runs a Watcher of dir until the test ends and waits until it is
// ready.
func start(t *testing.T, dir string, opts watch.Options) *recorder {
	t.Helper()
	return startWith(t, dir, opts, newRecorder(false))
}

func startWith(t *testing.T, dir string, opts watch.Options, rec *recorder) *recorder {
	t.Helper()
	if opts.Logger.GetSink() == nil {
		opts.Logger = testr.New(t)
	}
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	w, err := watch.New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, rec.found) }()
	t.Cleanup(func() {
		cancel()
		rec.release()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return after cancel")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(wait):
		t.Fatal("watcher not ready")
	}
	return rec
}

func mkdir(t *testing.T, parts ...string) string {
	t.Helper()
	dir := filepath.Join(parts...)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func dump() []byte { return hproftest.Synthetic(10, 10_000) }

// check compares an event; reason may list alternatives: "a|b".
func check(t *testing.T, ev watch.Event, path, container, reason string, complete, existing bool) {
	t.Helper()
	if ev.Path != path || ev.Container != container || !slices.Contains(strings.Split(reason, "|"), ev.Reason) || ev.Complete != complete || ev.Existing != existing {
		t.Fatalf("got%s\nwant %s container=%s reason=%s complete=%v existing=%v", describe([]watch.Event{ev}), path, container, reason, complete, existing)
	}
	if complete && (ev.Err != nil || !reportComplete(ev)) {
		t.Fatalf("complete event with err=%v kind=%s report=%+v crash log=%+v core=%+v", ev.Err, ev.Kind, ev.Report, ev.CrashLog, ev.Core)
	}
	if fi, err := os.Stat(path); err == nil && (ev.Size != fi.Size() || !ev.ModTime.Equal(fi.ModTime()) || ev.Inode == 0) {
		t.Fatalf("event size/mtime/inode %d/%v/%d, file %d/%v", ev.Size, ev.ModTime, ev.Inode, fi.Size(), fi.ModTime())
	}
}

// reportComplete is the Complete of the report of the event's kind.
func reportComplete(ev watch.Event) bool {
	switch ev.Kind {
	case watch.KindCrashLog:
		return ev.CrashLog.Complete
	case watch.KindCore:
		return ev.Core.Complete
	}
	return ev.Kind == watch.KindHeapDump && ev.Report.Complete
}

func TestCloseWriteReportedOnce(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
	path := filepath.Join(app, "java_pid1.hprof")
	writeFile(t, path, dump())
	evs := rec.waitFor(t, 1)
	check(t, evs[0], path, "app", watch.ReasonCloseWrite, true, false)
	// Opened for writing and closed again without a change: the same file.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	rec.quiet(t, 1, 600*time.Millisecond)
}

// chunkedWriter writes data to path in n chunks, pausing between them, and
// leaves the file open.
func chunkedWriter(t *testing.T, path string, data []byte, n int, pause time.Duration, wrote func(i int)) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	size := (len(data) + n - 1) / n
	for i := 0; i < n; i++ {
		if _, err := f.Write(data[i*size : min(len(data), (i+1)*size)]); err != nil {
			t.Fatal(err)
		}
		if wrote != nil {
			wrote(i)
		}
		time.Sleep(pause)
	}
	return f
}

func TestSlowWriterReportedOnlyAfterClose(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	rec := start(t, root, watch.Options{QuietPeriod: 10 * time.Second})
	path := filepath.Join(app, "slow.hprof")
	f := chunkedWriter(t, path, dump(), 10, 100*time.Millisecond, func(int) {
		if n := len(rec.snapshot()); n != 0 {
			t.Errorf("reported while being written: %s", describe(rec.snapshot()))
		}
	})
	rec.quiet(t, 0, 200*time.Millisecond)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	evs := rec.waitFor(t, 1)
	check(t, evs[0], path, "app", watch.ReasonCloseWrite, true, false)
	rec.quiet(t, 1, 300*time.Millisecond)
}

func TestRenameIntoPlaceAndDotFiles(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
	tmp := filepath.Join(app, ".dump-123.tmp")
	writeFile(t, tmp, dump())
	// A dot-file left unfinished and one still open: ignored, even after the
	// quiet period.
	writeFile(t, filepath.Join(app, ".partial"), dump()[:100])
	open := chunkedWriter(t, filepath.Join(app, ".open"), dump()[:100], 1, 0, nil)
	defer open.Close()
	rec.quiet(t, 0, 600*time.Millisecond)

	path := filepath.Join(app, "manual.hprof")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	evs := rec.waitFor(t, 1)
	check(t, evs[0], path, "app", watch.ReasonMovedTo, true, false)
	// Files directly in the dumps directory and sub-sub-directories belong
	// to no container.
	writeFile(t, filepath.Join(root, "stray.hprof"), dump())
	writeFile(t, filepath.Join(mkdir(t, app, "nested"), "n.hprof"), dump())
	rec.quiet(t, 1, 600*time.Millisecond)
}

func TestExistingCompleteFile(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	path := filepath.Join(app, "java_pid7.hprof")
	writeFile(t, path, dump())
	writeFile(t, filepath.Join(app, ".tmp"), dump())
	rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
	evs := rec.waitFor(t, 1)
	check(t, evs[0], path, "app", watch.ReasonStartupComplete, true, true)
	rec.quiet(t, 1, 600*time.Millisecond)
}

func TestExistingFileStillBeingWritten(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	path := filepath.Join(app, "java_pid8.hprof")
	data := dump()
	var rec *recorder
	var f *os.File
	f = chunkedWriter(t, path, data, 12, 60*time.Millisecond, func(i int) {
		switch {
		case i == 3: // the watcher starts in the middle of the dump
			rec = start(t, root, watch.Options{QuietPeriod: 10 * time.Second})
		case i > 3 && len(rec.snapshot()) != 0:
			t.Errorf("reported while being written: %s", describe(rec.snapshot()))
		}
	})
	rec.quiet(t, 0, 200*time.Millisecond)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	evs := rec.waitFor(t, 1)
	check(t, evs[0], path, "app", watch.ReasonCloseWrite, true, true)
	rec.quiet(t, 1, 300*time.Millisecond)
}

func TestAbandonedFilesAfterQuietPeriod(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	data := dump()
	// A dump cut short by a JVM that died before the watcher started.
	cut := filepath.Join(app, "java_pid9.hprof")
	writeFile(t, cut, data[:len(data)/2])
	// Something that is no heap dump at all: reported too, never dropped.
	junk := filepath.Join(app, "notes.txt")
	writeFile(t, junk, []byte("not a dump"))
	const quiet = 300 * time.Millisecond
	started := time.Now()
	rec := start(t, root, watch.Options{QuietPeriod: quiet})

	// A writer that hangs with the file open after the watcher started.
	hung := filepath.Join(app, "hung.hprof")
	f := chunkedWriter(t, hung, data[:len(data)/3], 1, 0, nil)
	hungAt := time.Now()

	evs := rec.waitFor(t, 3)
	byPath := map[string]watch.Event{}
	for _, ev := range evs {
		byPath[ev.Path] = ev
	}
	check(t, byPath[cut], cut, "app", watch.ReasonQuietPeriod, false, true)
	if !byPath[cut].Report.Truncated || byPath[cut].Err != nil {
		t.Errorf("cut dump: report %+v err %v", byPath[cut].Report, byPath[cut].Err)
	}
	check(t, byPath[junk], junk, "app", watch.ReasonQuietPeriod, false, true)
	if !errors.Is(byPath[junk].Err, hprof.ErrNotHeapDump) {
		t.Errorf("junk: err %v", byPath[junk].Err)
	}
	check(t, byPath[hung], hung, "app", watch.ReasonQuietPeriod, false, false)
	if since := time.Since(started); since < quiet {
		t.Errorf("reported after %v, before the quiet period %v", since, quiet)
	}
	if since := time.Since(hungAt); since < quiet {
		t.Errorf("hung file reported after %v, before the quiet period %v", since, quiet)
	}
	// The hung writer finally closes without writing more: the same version
	// of the file, not reported again.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rec.quiet(t, 3, 3*quiet)
}

// closeOrScan: whether the watcher handles a new directory before or after
// a file is written into it, the file is reported once, by its close_write
// or by the scan of the new directory.
const closeOrScan = watch.ReasonCloseWrite + "|" + watch.ReasonRescanComplete

func TestSubdirectoriesCreatedRemovedRecreated(t *testing.T) {
	root := t.TempDir()
	rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
	web := mkdir(t, root, "web")
	p1 := filepath.Join(web, "a.hprof")
	writeFile(t, p1, dump())
	check(t, rec.waitFor(t, 1)[0], p1, "web", closeOrScan, true, false)

	// A directory created with a file already inside (mkdir + write race,
	// or a directory moved in): found by scanning it.
	staging := mkdir(t, t.TempDir(), "staging")
	writeFile(t, filepath.Join(staging, "b.hprof"), dump())
	if err := os.Rename(staging, filepath.Join(root, "batch")); err != nil {
		t.Fatal(err)
	}
	p2 := filepath.Join(root, "batch", "b.hprof")
	check(t, rec.waitFor(t, 2)[1], p2, "batch", watch.ReasonRescanComplete, true, false)

	// Removed and re-created: watched again, and the same name reported anew.
	if err := os.RemoveAll(web); err != nil {
		t.Fatal(err)
	}
	mkdir(t, web)
	writeFile(t, p1, dump())
	check(t, rec.waitFor(t, 3)[2], p1, "web", closeOrScan, true, false)

	// The dumps directory itself removed: re-created and watched.
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		if fi, err := os.Stat(root); err == nil && fi.IsDir() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dumps directory was not re-created")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Whether the watcher re-added its watch before or after this mkdir,
	// the file is found: by an event or by the scan after re-watching.
	p3 := filepath.Join(mkdir(t, root, "again"), "c.hprof")
	writeFile(t, p3, dump())
	check(t, rec.waitFor(t, 4)[3], p3, "again", closeOrScan, true, false)
	rec.quiet(t, 4, 500*time.Millisecond)
}

func TestManyFilesAtOnce(t *testing.T) {
	root := t.TempDir()
	dirs := []string{mkdir(t, root, "a"), mkdir(t, root, "b")}
	rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
	var wg sync.WaitGroup
	want := map[string]bool{}
	for i := range 10 {
		path := filepath.Join(dirs[i%2], fmt.Sprintf("java_pid%d.hprof", i))
		want[path] = true
		wg.Go(func() { writeFile(t, path, dump()) })
	}
	wg.Wait()
	evs := rec.waitFor(t, 10)
	for _, ev := range evs {
		if !want[ev.Path] || !ev.Complete || ev.Reason != watch.ReasonCloseWrite {
			t.Errorf("unexpected or repeated event%s", describe([]watch.Event{ev}))
		}
		delete(want, ev.Path)
	}
	rec.quiet(t, 10, 600*time.Millisecond)
}

func TestQueueOverflowRescans(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip(err)
	}
	queue, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// Each file makes three events (create, modify, close_write).
	files := queue/3 + 1000
	if files > 30_000 {
		t.Skipf("max_queued_events %d is too large to overflow quickly", queue)
	}
	root := t.TempDir()
	app := mkdir(t, root, "app")
	rec := startWith(t, root, watch.Options{QuietPeriod: time.Hour, Logger: logr.Discard()}, newRecorder(true))
	data := hproftest.Synthetic(1, 10)
	// The first file's event blocks the watcher while the others overflow
	// its queue.
	for i := range files {
		writeFile(t, filepath.Join(app, fmt.Sprintf("f%05d.hprof", i)), data)
	}
	rec.release()
	evs := rec.waitForWithin(t, files, 90*time.Second)
	rec.quiet(t, files, 500*time.Millisecond)
	seen := map[string]bool{}
	reasons := map[string]int{}
	for _, ev := range evs {
		if seen[ev.Path] {
			t.Fatalf("reported twice: %s", ev.Path)
		}
		seen[ev.Path] = true
		reasons[ev.Reason]++
	}
	if reasons[watch.ReasonRescanComplete] == 0 {
		t.Errorf("no rescan after %d files: %v", files, reasons)
	}
	t.Logf("%d files: %v", files, reasons)
}

func TestRealJVMDump(t *testing.T) {
	jvm := hproftest.NewJVM(t)
	for _, tt := range []struct {
		name string
		args []string
	}{{"raw", nil}, {"gzip", []string{"-XX:HeapDumpGzipLevel=1"}}} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			app := mkdir(t, root, "app")
			rec := start(t, root, watch.Options{QuietPeriod: 200 * time.Millisecond})
			path := jvm.OOMDump(t, app, tt.args...)
			evs := rec.waitFor(t, 1)
			check(t, evs[0], path, "app", watch.ReasonCloseWrite, true, false)
			t.Logf("%s: %d bytes, %d records", path, evs[0].Size, evs[0].Report.Records)
			rec.quiet(t, 1, 600*time.Millisecond)
		})
	}
}

func TestMissingDumpsDirCreated(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "dumpcatcher", "dumps")
	w, err := watch.New(dir, watch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(w.Dir())
	if err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("dumps directory: %v %v", fi, err)
	}
}

func TestErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, nil)
	if _, err := watch.New(file, watch.Options{}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("New on a file: %v", err)
	}
	if _, err := watch.New("", watch.Options{}); err == nil {
		t.Error("New without a directory")
	}
	if _, err := watch.New(t.TempDir(), watch.Options{QuietPeriod: -1}); err == nil {
		t.Error("negative quiet period accepted")
	}
	// Two Runs at once.
	root := t.TempDir()
	ready := make(chan struct{})
	w, err := watch.New(root, watch.Options{Ready: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(watch.Event) {}) }()
	<-ready
	if err := w.Run(ctx, func(watch.Event) {}); err == nil {
		t.Error("a second concurrent Run started")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRunClosesItsDescriptor(t *testing.T) {
	fds := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip(err)
		}
		return len(entries)
	}
	before := fds()
	root := t.TempDir()
	for range 20 {
		w, err := watch.New(root, watch.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx, func(watch.Event) {}) }()
		time.Sleep(time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// A context already cancelled: Run returns at once.
	w, _ := watch.New(root, watch.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx, func(watch.Event) {}); err != nil {
		t.Fatal(err)
	}
	if after := fds(); after > before {
		t.Fatalf("%d descriptors before, %d after", before, after)
	}
}

// TestWhatIsNotARegularFile: links, FIFOs and sockets an app leaves in its
// dump directory, at start-up and while watching, are reported once with an
// error wrapping dumpfile.ErrNotRegular and never opened: a FIFO nobody
// writes to does not block the watcher, which still stops at once.
func TestWhatIsNotARegularFile(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, dump())
	if err := os.Symlink(secret, filepath.Join(app, "old-link.hprof")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(app, "old-fifo.hprof"), 0o666); err != nil {
		t.Fatal(err)
	}
	rec := start(t, root, watch.Options{QuietPeriod: 300 * time.Millisecond})
	// A link renamed over a finished dump, a FIFO, a socket.
	path := filepath.Join(app, "java_pid1.hprof")
	writeFile(t, path, dump())
	rec.waitFor(t, 3)
	if err := os.Symlink("/dev/zero", filepath.Join(app, ".swap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(app, ".swap"), path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(app, "new-fifo.hprof"), 0o666); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(app, "socket.hprof")}); err != nil {
		t.Fatal(err)
	}
	evs := rec.waitFor(t, 6)
	rec.quiet(t, 6, time.Second)
	kinds := map[string]string{}
	for _, ev := range evs {
		var nr *dumpfile.NotRegularError
		switch {
		case ev.Path == path && ev.Err == nil && ev.Complete:
			kinds["dump"] = "regular file"
			continue
		case !errors.As(ev.Err, &nr) || ev.Complete || ev.Inode == 0 || ev.Dev == 0:
			t.Errorf("event %s", describe([]watch.Event{ev}))
			continue
		}
		kinds[strings.TrimSuffix(filepath.Base(ev.Path), ".hprof")] = nr.Kind
	}
	want := map[string]string{"dump": "regular file", "old-link": "symbolic link", "old-fifo": "FIFO",
		"java_pid1": "symbolic link", "new-fifo": "FIFO", "socket": "socket"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// gzipBomb is a gzip heap dump of about 64 MiB that decompresses to 64 GiB:
// a valid HPROF header, then heap dump segments of zeros.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var head bytes.Buffer
	z := gzip.NewWriter(&head)
	z.Write(hproftest.Synthetic(1, 16)[:31]) // the header
	z.Write([]byte{hprof.TagHeapDumpSegment, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	z.Close()
	var zeros bytes.Buffer
	z, _ = gzip.NewWriterLevel(&zeros, gzip.BestCompression)
	if _, err := z.Write(make([]byte, 16<<20)); err != nil {
		t.Fatal(err)
	}
	z.Close()
	return append(head.Bytes(), bytes.Repeat(zeros.Bytes(), 4096)...)
}

// TestInspectionIsBounded: a gzip "bomb" (64 MiB decompressing to 64 GiB)
// does not hold up the watcher: its check gives up after the budget, it is
// reported unchecked, and a dump written after it is reported promptly.
func TestInspectionIsBounded(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	bomb := gzipBomb(t)
	rec := start(t, root, watch.Options{QuietPeriod: time.Minute, InspectBudget: 200 * time.Millisecond})
	writeFile(t, filepath.Join(app, "bomb.hprof"), bomb)
	writeFile(t, filepath.Join(app, "java_pid1.hprof"), dump())
	start := time.Now()
	// Checking all of it takes about 10 s here.
	evs := rec.waitForWithin(t, 2, 8*time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two events took %v", d)
	}
	check(t, evs[0], filepath.Join(app, "bomb.hprof"), "app", watch.ReasonCloseWrite, false, false)
	if !errors.Is(evs[0].Err, watch.ErrInspectBudget) {
		t.Errorf("bomb: %v, want ErrInspectBudget", evs[0].Err)
	}
	check(t, evs[1], filepath.Join(app, "java_pid1.hprof"), "app", watch.ReasonCloseWrite, true, false)
}

// crashLog is a HotSpot crash log, whole or (cut) without its last line.
func crashLog(whole bool) []byte {
	b := []byte(hserr.Header + ":\n#\n#  SIGSEGV (0xb) at pc=0x0, pid=1, tid=2\n" + strings.Repeat("registers and stacks\n", 200))
	if whole {
		b = append(b, "\nEND.\n"...)
	}
	return b
}

// core is an ELF64 core with one PT_NOTE and one PT_LOAD segment of 4 KiB
// each, whole or without the last 100 bytes.
func core(whole bool) []byte {
	h := elf.Header64{Type: uint16(elf.ET_CORE), Machine: uint16(elf.EM_X86_64), Version: 1,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 2}
	copy(h.Ident[:], elfcore.Magic)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, h)
	_ = binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_NOTE), Off: 176, Filesz: 4096})
	_ = binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 176 + 4096, Filesz: 4096})
	b.Write(make([]byte, 2*4096))
	if !whole {
		b.Truncate(b.Len() - 100)
	}
	return b.Bytes()
}

// TestCrashLogsAndCores: hs_err logs and ELF cores are checked as what
// they are: found whole at start-up they are reported at once (a heap dump
// check used to call them "not a heap dump" and wait for the quiet period);
// cut ones wait for their writer or the quiet period; written after the
// start, they are reported on close.
func TestCrashLogsAndCores(t *testing.T) {
	root := t.TempDir()
	app := mkdir(t, root, "app")
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	logWhole := filepath.Join(app, contract.CrashLogName(11))
	logCut := filepath.Join(app, contract.CrashLogName(12))
	coreWhole := filepath.Join(app, contract.CoreFileName(at, "app", 13))
	coreCut := filepath.Join(app, contract.CoreFileName(at, "app", 14))
	coreOtherName := filepath.Join(app, "core.15")
	writeFile(t, logWhole, crashLog(true))
	writeFile(t, logCut, crashLog(false))
	writeFile(t, coreWhole, core(true))
	writeFile(t, coreCut, core(false))
	writeFile(t, coreOtherName, core(true))
	const quiet = 500 * time.Millisecond
	started := time.Now()
	rec := start(t, root, watch.Options{QuietPeriod: quiet})
	evs := rec.waitFor(t, 3)
	if time.Since(started) > quiet {
		t.Fatalf("whole files at start-up reported after the quiet period: %s", describe(evs))
	}
	byPath := map[string]watch.Event{}
	for _, ev := range evs {
		byPath[ev.Path] = ev
	}
	for path, kind := range map[string]watch.Kind{logWhole: watch.KindCrashLog, coreWhole: watch.KindCore, coreOtherName: watch.KindCore} {
		check(t, byPath[path], path, "app", watch.ReasonStartupComplete, true, true)
		if byPath[path].Kind != kind {
			t.Errorf("%s: kind %s, want %s", path, byPath[path].Kind, kind)
		}
	}
	evs = rec.waitFor(t, 5)
	for _, ev := range evs[3:] {
		byPath[ev.Path] = ev
	}
	check(t, byPath[logCut], logCut, "app", watch.ReasonQuietPeriod, false, true)
	if ev := byPath[logCut]; ev.Kind != watch.KindCrashLog || !ev.CrashLog.Truncated || ev.Err != nil {
		t.Errorf("cut log: %+v", ev)
	}
	check(t, byPath[coreCut], coreCut, "app", watch.ReasonQuietPeriod, false, true)
	if ev := byPath[coreCut]; ev.Kind != watch.KindCore || !ev.Core.Truncated || ev.Err != nil {
		t.Errorf("cut core: %+v", ev)
	}

	// Written after the start: the log is reported when HotSpot closes it,
	// complete, not while it is written.
	fresh := filepath.Join(app, contract.CrashLogName(16))
	data := crashLog(true)
	f := chunkedWriter(t, fresh, data, 3, 50*time.Millisecond, nil)
	rec.quiet(t, 5, 100*time.Millisecond)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	evs = rec.waitFor(t, 6)
	check(t, evs[5], fresh, "app", watch.ReasonCloseWrite, true, false)
	if evs[5].Kind != watch.KindCrashLog {
		t.Errorf("fresh log: kind %s", evs[5].Kind)
	}
	rec.quiet(t, 6, 2*quiet)
}
