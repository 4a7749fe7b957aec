// Package watch finds finished heap dumps, JVM crash logs and core files in
// the dumps directory of the shared volume: <dumps>/<container>/<file>, one
// sub-directory per app container. It uses inotify directly (IN_CLOSE_WRITE is what tells a file
// the writer has closed from one still being written) and reports each
// finished file once.
//
// A file is reported when
//   - its writer closes it (IN_CLOSE_WRITE: the JVM finished its dump, or the
//     kernel closed the file of a writer that died),
//   - it is renamed into place (IN_MOVED_TO: `dumpcatcher dump` writes
//     ".name" and renames it),
//   - it is found by a scan (at start-up, or after an inotify queue overflow
//     or a new sub-directory) and its structure check says it is complete,
//   - or it has not changed for Options.QuietPeriod (a writer that hung, or
//     one that died before this process started watching): it is reported
//     with Complete false, because a partial dump is still evidence.
//
// Names starting with "." are temporary and ignored, and so are
// directories.
//
// What a file is decides its structure check (Event.Kind): a name
// hs_err_pid<pid>.log (contract.IsCrashLogName) is a JVM crash log
// (sidecar/hserr: complete when it ends with HotSpot's "END." line), a file
// starting with the ELF magic is a core file (sidecar/elfcore: complete when
// every segment lies within the file), anything else a heap dump
// (sidecar/hprof).
//
// The app container that writes the files is not trusted. Files are opened
// with sidecar/dumpfile (no link is followed, a FIFO or device never blocks)
// and checked from that descriptor, for at most the size fstat reported and
// for at most Options.InspectBudget (a gzip "bomb" decompresses to a
// thousand times its size; its check gives up, and it is reported with an
// error wrapping ErrInspectBudget).
// Anything else than a regular file (a symbolic link, FIFO, socket or device
// node) is reported too, with an Err wrapping dumpfile.ErrNotRegular, so
// that the uploader refuses it with one log line; it is never read.
package watch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
	"github.com/dumpcatcher/dumpcatcher/sidecar/elfcore"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hserr"
)

// DefaultQuietPeriod is how long an unfinished file must stay unchanged
// before it is reported anyway.
const DefaultQuietPeriod = 2 * time.Minute

// Why a file was considered finished (Event.Reason).
const (
	// ReasonCloseWrite: the writer closed the file (IN_CLOSE_WRITE).
	ReasonCloseWrite = "close_write"
	// ReasonMovedTo: the file was renamed into place (IN_MOVED_TO).
	ReasonMovedTo = "moved_to"
	// ReasonStartupComplete: found at start-up and complete.
	ReasonStartupComplete = "startup-complete"
	// ReasonRescanComplete: found complete by a scan after start-up (after an
	// inotify queue overflow, or in a sub-directory created or moved in).
	ReasonRescanComplete = "rescan-complete"
	// ReasonQuietPeriod: unchanged for Options.QuietPeriod without being
	// closed by a writer seen by this process.
	ReasonQuietPeriod = "quiet-period"
)

// Event reports a finished file.
type Event struct {
	// Path is the file's path: <dumps dir>/<Container>/<name>.
	Path string
	// Container is the name of the sub-directory, the app container's name.
	Container string
	// Existing says that the file was there when Run started.
	Existing bool
	// Kind is what the file was checked as (KindHeapDump, KindCrashLog or
	// KindCore).
	Kind Kind
	// Complete says that the structure check of Kind found the file whole.
	Complete bool
	// Reason says why the file is considered finished (Reason* constants).
	Reason string
	// Size, ModTime, Dev and Inode are the file's at the time of the
	// report, from fstat of the descriptor that was checked (lstat for what
	// is not a regular file, or could not be opened). Dev and Inode identify
	// the file: the uploader claims only that very file.
	Size    int64
	ModTime time.Time
	Dev     uint64
	Inode   uint64
	// Report is the structure check of a heap dump, CrashLog of a JVM crash
	// log, Core of a core file (the one of Kind; meaningful when Err is
	// nil).
	Report   hprof.Report
	CrashLog hserr.Report
	Core     elfcore.Report
	// Err says why the file could not be checked: not a regular file (wraps
	// dumpfile.ErrNotRegular; the file was not opened), not of its Kind
	// (wraps hprof.ErrNotHeapDump, hserr.ErrNotCrashLog or
	// elfcore.ErrNotCore), or unreadable. Complete is false then.
	Err error
}

// Kind is what a file in a dump directory is.
type Kind string

// Kinds of files (Event.Kind).
const (
	KindHeapDump Kind = "heap-dump"
	KindCrashLog Kind = "crash-log"
	KindCore     Kind = "core"
)

// kindOf tells what the file name with the first bytes head is.
func kindOf(name string, head []byte) Kind {
	switch {
	case contract.IsCrashLogName(name):
		return KindCrashLog
	case elfcore.IsELF(head):
		return KindCore
	}
	return KindHeapDump
}

// Options configure a Watcher.
type Options struct {
	// Logger receives the watcher's logs; the zero Logger discards them.
	Logger logr.Logger
	// QuietPeriod is how long an unfinished file must stay unchanged before
	// it is reported with Complete false; 0 means DefaultQuietPeriod.
	QuietPeriod time.Duration
	// Ready, when set, is called from Run once the watches are in place and
	// the files found at start-up were handled (for readiness probes and
	// tests).
	Ready func()
	// InspectBudget bounds the time the check of one file may take; 0
	// means a minute, or a second per 10 MB of the file when that is longer
	// (a raw dump is checked in milliseconds, a gzip one decompresses at
	// hundreds of MB/s).
	InspectBudget time.Duration
}

// ErrInspectBudget is wrapped by Event.Err when checking the file took
// longer than Options.InspectBudget; the file was not fully checked.
var ErrInspectBudget = errors.New("checking the file took too long")

// Watcher watches a dumps directory. Create it with New and start it with Run.
type Watcher struct {
	dir     string
	quiet   time.Duration
	budget  time.Duration
	log     logr.Logger
	ready   func()
	running atomic.Bool
}

// New returns a Watcher of dumpsDir, creating the directory (mode 0777, so
// that app containers running as any user can create their sub-directory)
// when it is missing.
func New(dumpsDir string, opts Options) (*Watcher, error) {
	if dumpsDir == "" {
		return nil, errors.New("watch: no dumps directory given")
	}
	if opts.QuietPeriod < 0 {
		return nil, fmt.Errorf("watch: negative quiet period %v", opts.QuietPeriod)
	}
	if opts.InspectBudget < 0 {
		return nil, fmt.Errorf("watch: negative inspect budget %v", opts.InspectBudget)
	}
	w := &Watcher{dir: filepath.Clean(dumpsDir), quiet: opts.QuietPeriod, budget: opts.InspectBudget, log: opts.Logger, ready: opts.Ready}
	if w.quiet == 0 {
		w.quiet = DefaultQuietPeriod
	}
	if err := ensureDir(w.dir, w.log); err != nil {
		return nil, err
	}
	return w, nil
}

// ensureDir creates dir with mode 0777 when it is missing. The mode is set
// with chmod because mkdir applies the umask.
func ensureDir(dir string, log logr.Logger) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("watch: the dumps directory %s is not a directory (mode %v): remove it or fix the volume layout", dir, fi.Mode())
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("watch: the dumps directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return fmt.Errorf("watch: create the missing dumps directory: %w (check that the shared volume is mounted writable)", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return fmt.Errorf("watch: make the dumps directory writable for all users: %w", err)
	}
	log.Info("created the missing dumps directory", "dir", dir)
	return nil
}

// Dir returns the watched directory.
func (w *Watcher) Dir() string { return w.dir }

const (
	rootMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
		unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR
	subMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
		unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK
	gone = unix.IN_IGNORED | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
)

// Run watches until ctx is done, calling found for every finished file. It
// first adds the watches, then scans the files already there, so that no file
// falls between the two. found is called from Run's goroutine, one event at
// a time: it should hand the event over (to a queue or a goroutine) rather
// than upload inline. Run returns nil when ctx is done, and an error when
// watching fails; it closes its inotify instance before returning. One Run
// at a time.
func (w *Watcher) Run(ctx context.Context, found func(Event)) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watch: Run is already running for " + w.dir)
	}
	defer w.running.Store(false)

	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return fmt.Errorf("watch %s: inotify_init: %w: too many inotify instances for this user; raise the sysctl fs.inotify.max_user_instances on the node (now %s)",
				w.dir, err, sysctl("max_user_instances"))
		}
		return fmt.Errorf("watch %s: inotify_init: %w", w.dir, err)
	}
	// The poller takes over the non-blocking descriptor: reads honour
	// deadlines, and Close releases it.
	file := os.NewFile(uintptr(fd), "inotify:"+w.dir)
	defer file.Close()

	l := &loop{
		w: w, fd: fd, found: found,
		subdirs:  map[int]string{},
		wds:      map[string]int{},
		pending:  map[string]*pending{},
		reported: map[string]fileKey{},
	}
	if err := l.watchRoot(); err != nil {
		return err
	}
	if err := l.scan(true); err != nil {
		return err
	}
	w.log.Info("watching for heap dumps", "dir", w.dir, "containers", len(l.wds),
		"unfinished", len(l.pending), "quietPeriod", w.quiet)
	if w.ready != nil {
		w.ready()
	}

	// Cancelling ctx wakes the blocked read. A deadline set below cannot hide
	// the cancellation: ctx.Err() is checked after every SetReadDeadline.
	stop := context.AfterFunc(ctx, func() { _ = file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, 64<<10)
	for {
		if err := file.SetReadDeadline(l.nextDeadline()); err != nil {
			return fmt.Errorf("watch %s: %w", w.dir, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		n, err := file.Read(buf)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("watch %s: read inotify events: %w", w.dir, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := l.handle(buf[:n]); err != nil {
			return err
		}
		l.expire()
	}
}

func sysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/fs/inotify/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// fileKey identifies one version of a file.
type fileKey struct {
	ino   uint64
	size  int64
	mtime int64
}

func keyOf(fi fs.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = st.Ino
	}
	return k
}

func keyOfInfo(i dumpfile.Info) fileKey {
	return fileKey{ino: i.Ino, size: i.Size, mtime: i.ModTime.UnixNano()}
}

// look is one check of the file at path: it opens it with dumpfile.Open,
// tells its Kind from the name and first bytes, and inspects its structure
// from that descriptor, within the inspect budget. What is not a regular
// file is not opened (its info comes from lstat, and the inspection error
// wraps dumpfile.ErrNotRegular), nor is a file that cannot be opened. ok is
// false when the file is gone.
func (w *Watcher) look(path string) (info dumpfile.Info, insp inspection, ok bool) {
	f, info, err := dumpfile.Open(path)
	if err != nil {
		linfo, lerr := dumpfile.Lstat(path)
		if lerr != nil {
			return dumpfile.Info{}, inspection{}, false
		}
		return linfo, inspection{kind: kindOf(filepath.Base(path), nil), err: err}, true
	}
	defer f.Close()
	budget := w.budget
	if budget == 0 {
		budget = max(time.Minute, time.Duration(info.Size/10e6)*time.Second)
	}
	r := deadlineReaderAt{f, time.Now().Add(budget), budget}
	head := make([]byte, min(info.Size, int64(len(elfcore.Magic))))
	if n, err := r.ReadAt(head, 0); n < len(head) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return info, inspection{kind: kindOf(filepath.Base(path), nil), err: fmt.Errorf("%s: %w", path, err)}, true
	}
	insp = inspection{kind: kindOf(filepath.Base(path), head)}
	switch insp.kind {
	case KindCrashLog:
		insp.crash, err = hserr.Inspect(r, info.Size)
	case KindCore:
		insp.core, err = elfcore.Inspect(r, info.Size)
	default:
		insp.rep, err = hprof.Inspect(r, info.Size)
	}
	if err != nil {
		insp.err = fmt.Errorf("%s: %w", path, err)
	}
	return info, insp, true
}

// deadlineReaderAt fails reads after its deadline.
type deadlineReaderAt struct {
	r        io.ReaderAt
	deadline time.Time
	budget   time.Duration
}

func (d deadlineReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, fmt.Errorf("%w (more than %v)", ErrInspectBudget, d.budget)
	}
	return d.r.ReadAt(p, off)
}

// pending is a file seen but not finished yet.
type pending struct {
	container  string
	existing   bool
	lastChange time.Time
}

// loop is the state of one Run.
type loop struct {
	w     *Watcher
	fd    int
	found func(Event)

	rootWd   int
	subdirs  map[int]string // watch descriptor -> container
	wds      map[string]int // container -> watch descriptor
	pending  map[string]*pending
	reported map[string]fileKey // path -> the version last reported
}

func (l *loop) watchRoot() error {
	wd, err := unix.InotifyAddWatch(l.fd, l.w.dir, rootMask)
	if err != nil {
		return l.watchError(l.w.dir, err)
	}
	l.rootWd = wd
	return nil
}

func (l *loop) watchError(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("watch %s: inotify_add_watch: %w: the inotify watch limit is reached; raise the sysctl fs.inotify.max_user_watches on the node (now %s)",
			path, err, sysctl("max_user_watches"))
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("watch %s: inotify_add_watch: %w: the uploader cannot read this directory; run it with a user or fsGroup that can", path, err)
	}
	return fmt.Errorf("watch %s: inotify_add_watch: %w", path, err)
}

// addSubdir watches the sub-directory of a container. A directory that is
// already gone again is not an error.
func (l *loop) addSubdir(name string) error {
	path := filepath.Join(l.w.dir, name)
	wd, err := unix.InotifyAddWatch(l.fd, path, subMask)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			l.w.log.V(1).Info("sub-directory vanished before it could be watched", "dir", path)
			return nil
		}
		return l.watchError(path, err)
	}
	if old, ok := l.wds[name]; ok && old != wd {
		delete(l.subdirs, old)
	}
	if _, ok := l.subdirs[wd]; !ok {
		l.w.log.V(1).Info("watching container directory", "dir", path)
	}
	l.subdirs[wd] = name
	l.wds[name] = wd
	return nil
}

// dropSubdir stops watching a container's sub-directory and forgets its files.
func (l *loop) dropSubdir(name string) {
	wd, ok := l.wds[name]
	if !ok {
		return
	}
	_, _ = unix.InotifyRmWatch(l.fd, uint32(wd)) // fails when already gone
	delete(l.wds, name)
	delete(l.subdirs, wd)
	l.forgetUnder(filepath.Join(l.w.dir, name))
	l.w.log.V(1).Info("container directory gone", "dir", filepath.Join(l.w.dir, name))
}

func (l *loop) forgetUnder(dir string) {
	prefix := dir + string(filepath.Separator)
	for p := range l.pending {
		if strings.HasPrefix(p, prefix) {
			delete(l.pending, p)
		}
	}
	for p := range l.reported {
		if strings.HasPrefix(p, prefix) {
			delete(l.reported, p)
		}
	}
}

// scan walks the dumps directory: it watches every sub-directory first, then
// reports the complete files not reported yet and tracks the others.
func (l *loop) scan(startup bool) error {
	entries, err := os.ReadDir(l.w.dir)
	if err != nil {
		return fmt.Errorf("watch: scan %s: %w", l.w.dir, err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			if err := l.addSubdir(e.Name()); err != nil {
				return err
			}
			dirs = append(dirs, e.Name())
		}
	}
	// Forget what vanished while events were lost.
	present := map[string]bool{}
	for _, d := range dirs {
		present[d] = true
	}
	for name := range l.wds {
		if !present[name] {
			l.dropSubdir(name)
		}
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		l.scanDir(d, startup, seen)
	}
	for p := range l.pending {
		if !seen[p] {
			delete(l.pending, p)
		}
	}
	for p := range l.reported {
		if !seen[p] {
			delete(l.reported, p)
		}
	}
	return nil
}

// scanDir reports or tracks the files of one container's sub-directory.
func (l *loop) scanDir(container string, startup bool, seen map[string]bool) {
	dir := filepath.Join(l.w.dir, container)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			l.w.log.Error(err, "cannot list a container's dump directory; its dumps are reported when written",
				"dir", dir)
		}
		return
	}
	reason := ReasonRescanComplete
	if startup {
		reason = ReasonStartupComplete
	}
	for _, e := range entries {
		if ignored(e.Name()) || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(path)
		if err != nil || fi.IsDir() {
			continue
		}
		if seen != nil {
			seen[path] = true
		}
		if k, ok := l.reported[path]; ok && k == keyOf(fi) {
			continue
		}
		info, insp, ok := l.w.look(path)
		if !ok {
			continue
		}
		if insp.complete() || errors.Is(insp.err, dumpfile.ErrNotRegular) {
			l.report(path, container, reason, startup, &looked{info, insp})
			continue
		}
		if _, ok := l.pending[path]; ok {
			continue // keep its quiet period running
		}
		why := insp.why()
		l.w.log.Info("found an unfinished file; waiting for its writer to close it or for the quiet period",
			"path", path, "size", fi.Size(), "state", why)
		l.track(path, container, startup)
	}
}

func ignored(name string) bool { return name == "" || strings.HasPrefix(name, ".") }

// track remembers a file being written, restarting its quiet period.
func (l *loop) track(path, container string, existing bool) {
	p := l.pending[path]
	if p == nil {
		p = &pending{container: container}
		l.pending[path] = p
	}
	p.existing = p.existing || existing
	p.lastChange = time.Now()
}

// inspection is the structure check of one file, of its kind.
type inspection struct {
	kind  Kind
	rep   hprof.Report
	crash hserr.Report
	core  elfcore.Report
	err   error
}

// complete says that the check of the file's kind found it whole.
func (i inspection) complete() bool {
	if i.err != nil {
		return false
	}
	switch i.kind {
	case KindCrashLog:
		return i.crash.Complete
	case KindCore:
		return i.core.Complete
	}
	return i.rep.Complete
}

// why says why the file is not complete.
func (i inspection) why() string {
	switch {
	case i.err != nil:
		return i.err.Error()
	case i.kind == KindCrashLog:
		return i.crash.Reason
	case i.kind == KindCore:
		return i.core.Reason
	}
	return i.rep.Reason
}

// what names the kind in logs.
func (k Kind) what() string {
	switch k {
	case KindCrashLog:
		return "JVM crash log"
	case KindCore:
		return "core file"
	}
	return "heap dump"
}

// looked is the result of look.
type looked struct {
	info dumpfile.Info
	insp inspection
}

// report calls found for path unless this version of the file was reported
// already. pre is the result of a check already made, or nil.
func (l *loop) report(path, container, reason string, existing bool, pre *looked) {
	if p := l.pending[path]; p != nil {
		existing = existing || p.existing
		delete(l.pending, path)
	}
	if pre == nil {
		info, insp, ok := l.w.look(path)
		if !ok {
			delete(l.reported, path)
			return
		}
		pre = &looked{info, insp}
	}
	if pre.info.Mode.IsDir() {
		return
	}
	key := keyOfInfo(pre.info)
	if k, ok := l.reported[path]; ok && k == key {
		l.w.log.V(1).Info("already reported", "path", path, "reason", reason)
		return
	}
	l.reported[path] = key
	ev := Event{
		Path: path, Container: container, Existing: existing,
		Kind: pre.insp.kind, Complete: pre.insp.complete(), Reason: reason,
		Size: pre.info.Size, ModTime: pre.info.ModTime, Dev: pre.info.Dev, Inode: pre.info.Ino,
		Report: pre.insp.rep, CrashLog: pre.insp.crash, Core: pre.insp.core, Err: pre.insp.err,
	}
	fields := []any{"path", path, "container", container, "reason", reason,
		"kind", ev.Kind, "complete", ev.Complete, "existing", existing, "size", ev.Size}
	switch {
	case errors.Is(pre.insp.err, dumpfile.ErrNotRegular):
		// The uploader refuses it with a log line of its own.
		l.w.log.V(1).Info("found something that is not a regular file", append(fields, "error", pre.insp.err)...)
	case pre.insp.err != nil:
		l.w.log.Info("finished file is not a readable "+pre.insp.kind.what(), append(fields, "error", pre.insp.err)...)
	case !ev.Complete:
		l.w.log.Info("finished file is an incomplete "+pre.insp.kind.what(), append(fields, "why", pre.insp.why())...)
	default:
		l.w.log.Info(pre.insp.kind.what()+" finished", fields...)
	}
	l.found(ev)
}

// nextDeadline is when the earliest quiet period ends; zero when none runs.
func (l *loop) nextDeadline() time.Time {
	var next time.Time
	for _, p := range l.pending {
		if t := p.lastChange.Add(l.w.quiet); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// expire reports the unfinished files that stayed unchanged for the quiet
// period. The file's mtime counts as a change too, so writes whose events
// were lost still postpone the report.
func (l *loop) expire() {
	now := time.Now()
	for path, p := range l.pending {
		if now.Sub(p.lastChange) < l.w.quiet {
			continue
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.IsDir() {
			delete(l.pending, path)
			continue
		}
		if mt := fi.ModTime(); fi.Mode().IsRegular() && mt.After(p.lastChange) && !mt.After(now) && now.Sub(mt) < l.w.quiet {
			p.lastChange = mt
			continue
		}
		l.report(path, p.container, ReasonQuietPeriod, false, nil)
	}
}

// handle processes a buffer of inotify events.
func (l *loop) handle(buf []byte) error {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int(int32(binary.NativeEndian.Uint32(buf[0:])))
		mask := binary.NativeEndian.Uint32(buf[4:])
		nameLen := int(binary.NativeEndian.Uint32(buf[12:]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(buf) {
			return fmt.Errorf("watch %s: short inotify event (%d of %d bytes)", l.w.dir, len(buf), end)
		}
		name := buf[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		buf = buf[end:]
		if err := l.event(wd, mask, string(name)); err != nil {
			return err
		}
	}
	return nil
}

func (l *loop) event(wd int, mask uint32, name string) error {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		l.w.log.Info("inotify queue overflowed; rescanning (raise the sysctl fs.inotify.max_queued_events if this repeats)",
			"dir", l.w.dir, "max_queued_events", sysctl("max_queued_events"))
		return l.scan(false)
	}
	if wd == l.rootWd {
		return l.rootEvent(mask, name)
	}
	container, ok := l.subdirs[wd]
	if !ok {
		return nil // a watch removed already
	}
	dir := filepath.Join(l.w.dir, container)
	if mask&gone != 0 {
		if l.wds[container] == wd {
			delete(l.wds, container)
			l.forgetUnder(dir)
		}
		delete(l.subdirs, wd)
		if mask&unix.IN_IGNORED == 0 {
			_, _ = unix.InotifyRmWatch(l.fd, uint32(wd))
		}
		return nil
	}
	if mask&unix.IN_ISDIR != 0 || ignored(name) {
		return nil
	}
	path := filepath.Join(dir, name)
	// Events may be stale: a scan can have handled the file already, or the
	// name may point to a newer file. So a re-created file is recognised by
	// its version (inode, size, mtime), not by IN_CREATE, and a removal only
	// forgets a name that is really gone.
	switch {
	case mask&(unix.IN_CREATE|unix.IN_MODIFY) != 0:
		l.track(path, container, false)
	case mask&unix.IN_CLOSE_WRITE != 0:
		l.report(path, container, ReasonCloseWrite, false, nil)
	case mask&unix.IN_MOVED_TO != 0:
		l.report(path, container, ReasonMovedTo, false, nil)
	case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			delete(l.pending, path)
			delete(l.reported, path)
		}
	}
	return nil
}

func (l *loop) rootEvent(mask uint32, name string) error {
	if mask&gone != 0 {
		return l.rootGone()
	}
	if mask&unix.IN_ISDIR == 0 || ignored(name) {
		return nil // files directly in the dumps directory belong to no container
	}
	switch {
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
		if err := l.addSubdir(name); err != nil {
			return err
		}
		l.scanDir(name, false, nil)
	case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		// A stale event: a directory of that name exists again and is
		// watched (or about to be, by its own IN_CREATE).
		if fi, err := os.Lstat(filepath.Join(l.w.dir, name)); err == nil && fi.IsDir() {
			return nil
		}
		l.dropSubdir(name)
	}
	return nil
}

// rootGone recreates and rewatches a dumps directory that was removed or
// moved away.
func (l *loop) rootGone() error {
	l.w.log.Info("the dumps directory was removed or moved; recreating it", "dir", l.w.dir)
	_, _ = unix.InotifyRmWatch(l.fd, uint32(l.rootWd))
	l.rootWd = -1
	for name := range l.wds {
		l.dropSubdir(name)
	}
	if err := ensureDir(l.w.dir, l.w.log); err != nil {
		return err
	}
	if err := l.watchRoot(); err != nil {
		return err
	}
	return l.scan(false)
}
