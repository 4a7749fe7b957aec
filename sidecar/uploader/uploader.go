// Package uploader is the sidecar's main loop: it claims every finished
// dump the watcher reports into the spool, streams it (compressed on the
// fly) to the bucket, and removes it only after the store confirmed it.
// Storage faults keep dumps on disk and are retried with capped backoff; a
// state change of the storage is logged once, not every retry.
//
// The app container that writes the dumps is not trusted, and a dump that
// cannot be delivered for a reason of its own must not hold up the others:
//
//   - Links, FIFOs, sockets and devices are refused with one log line and
//     counted (dumpcatcher_dumps_failed_total{reason="not_regular"}); they
//     are never opened (see sidecar/dumpfile), so neither a link to the
//     uploader's credentials or to /dev/zero nor a FIFO can be uploaded or
//     block the uploader. A file renamed over a dump after the watcher
//     reported it is refused too (reason "replaced"); the new file is
//     reported on its own.
//   - A dump is read only from the descriptor the claim opened and checked
//     (device and inode as reported), or, after a restart, from one opened
//     again and checked against the identity recorded at the claim; never
//     more than the size fstat reported.
//   - A sparse file (far less space allocated than its size: a heap dump
//     never is) is set aside unread (reason "sparse"): its holes cost no
//     space, so they pass the emptyDir sizeLimit, and uploading them would
//     keep the worker busy for hours.
//   - File names and other metadata values are percent-encoded
//     (storage.EncodeMetadataValue) and the object key is sanitised
//     (sidecar/objectkey), so any legal name is delivered. A dump the store
//     still refuses for its key or metadata (reason "rejected") or that
//     cannot be read after maxFileErrors attempts (reason "unreadable") is
//     set aside as well.
//
// Set aside means moved with its record into <spool>/failed/ (left where it
// is when it is uploaded in place), logged once at error level and counted
// in dumpcatcher_dumps_failed_total{reason}; it is never retried, also not
// after a restart. Only errors of the store count as an outage, which is
// retried with backoff for as long as it lasts.
package uploader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/watch"
	"github.com/go-logr/logr"
)

// Identity is the pod the dumps come from (downward API).
type Identity struct {
	Namespace, Pod, PodUID, Node, Workload string
}

// Options configure an Uploader.
type Options struct {
	Bucket   storage.Bucket
	Spool    *spool.Spool
	DumpsDir string
	Template objectkey.Template
	Identity Identity
	// Compression: gzip, zstd or none.
	Compression string
	// Workers is how many dumps upload at once (default 1: the memory bound
	// of one upload holds for the whole sidecar).
	Workers int
	// RetryMin and RetryMax bound the backoff between attempts of one dump
	// (defaults 1s and 1m).
	RetryMin, RetryMax time.Duration
	// QuietPeriod is the watcher's: how long a file found half-written must
	// stay unchanged before it is uploaded as incomplete (default 2m).
	QuietPeriod time.Duration
	// Drain is how long uploads go on after Run's context is cancelled
	// (default 25s); Settle ends the drain early once nothing happened for
	// that long (default 2s).
	Drain, Settle time.Duration
	// Log receives the uploader's logs (the zero Logger discards them).
	Log     logr.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Uploader moves dumps from the shared volume to storage.
type Uploader struct {
	o Options

	mu        sync.Mutex
	queue     []item
	inFlight  map[string]spool.Entry
	files     map[string]*os.File    // open dumps by entry ID (see maxHeldFiles)
	unclaimed map[string]watch.Event // claims that failed, retried by the workers
	wake      chan struct{}
	lastWork  time.Time
	down      bool // storage state, for logging state changes once
}

// item is a queued dump; it is not tried again before notBefore.
type item struct {
	e         spool.Entry
	notBefore time.Time
}

// maxHeldFiles bounds the dumps kept open from their claim to their upload.
// Beyond it (thousands of files in a dump directory), a claimed dump is
// closed and opened again for its upload by spool.OpenData, which accepts
// only the device and inode recorded at the claim.
const maxHeldFiles = 64

// maxFileErrors is how many attempts may fail reading a dump (permission
// denied, I/O error, file shrinking) before it is set aside. With the
// default backoff (1 s doubling to 1 min) that is about 4 minutes.
const maxFileErrors = 10

// New checks the options and fills in defaults.
func New(o Options) (*Uploader, error) {
	if o.Bucket == nil || o.Spool == nil || o.DumpsDir == "" {
		return nil, errors.New("uploader: Bucket, Spool and DumpsDir are required")
	}
	if _, err := chooseEncoding(o.Compression, nil, ""); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.RetryMin, time.Second)
	def(&o.RetryMax, time.Minute)
	def(&o.Drain, 25*time.Second)
	def(&o.Settle, 2*time.Second)
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Uploader{o: o, inFlight: map[string]spool.Entry{}, files: map[string]*os.File{}, unclaimed: map[string]watch.Event{},
		wake: make(chan struct{}, 1)}, nil
}

// Run uploads until ctx is cancelled (SIGTERM), then drains for up to
// Drain and returns. It logs every dump it could not deliver by then.
func (u *Uploader) Run(ctx context.Context) error {
	// work outlives ctx by the drain and is cancelled when the drain ends:
	// in-flight uploads are aborted then (their dumps stay in the spool for
	// a restarted sidecar).
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	pending, err := u.o.Spool.Recover()
	if err != nil {
		return err
	}
	for _, e := range pending {
		u.o.Log.Info("resuming a dump claimed before a restart", "file", e.File, "container", e.Container, "attempts", e.Attempts)
		u.enqueue(e)
	}
	w, err := watch.New(u.o.DumpsDir, watch.Options{Logger: u.o.Log.WithName("watch"), QuietPeriod: u.o.QuietPeriod})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchErr <- w.Run(work, u.found)
	}()
	for i := 0; i < u.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.worker(work)
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
		runErr = u.drain(watchErr)
	case err := <-watchErr:
		runErr = fmt.Errorf("watching %s: %w", u.o.DumpsDir, err)
	}
	cancelWork()
	wg.Wait()
	u.reportUndelivered()
	u.mu.Lock()
	for id, f := range u.files {
		f.Close()
		delete(u.files, id)
	}
	u.mu.Unlock()
	return runErr
}

// drain keeps claiming and uploading after Run's context is cancelled
// until nothing is left and nothing happened for Settle, or Drain is over.
func (u *Uploader) drain(watchErr <-chan error) error {
	deadline := time.NewTimer(u.o.Drain)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	u.o.Log.Info("stop requested: delivering what is left", "within", u.o.Drain)
	for {
		select {
		case <-deadline.C:
			return nil
		case err := <-watchErr:
			if err != nil {
				return err
			}
			return nil
		case <-tick.C:
			u.mu.Lock()
			idle := len(u.queue) == 0 && len(u.inFlight) == 0 && len(u.unclaimed) == 0 && u.o.Now().Sub(u.lastWork) >= u.o.Settle
			u.mu.Unlock()
			if idle {
				return nil
			}
		}
	}
}

func (u *Uploader) reportUndelivered() {
	u.mu.Lock()
	defer u.mu.Unlock()
	var left []string
	for _, it := range u.queue {
		left = append(left, u.o.Spool.DataPath(it.e))
	}
	for _, e := range u.inFlight {
		left = append(left, u.o.Spool.DataPath(e))
	}
	for path := range u.unclaimed {
		left = append(left, path)
	}
	if len(left) > 0 {
		u.o.Log.Error(nil, "stopping with dumps NOT delivered; they stay in the spool and are delivered if this container restarts, but are lost with the pod", "dumps", left)
	} else {
		u.o.Log.Info("stopped; every dump was delivered")
	}
}

// found is the watcher's callback: claim at once, upload later.
func (u *Uploader) found(ev watch.Event) {
	u.claim(ev, true)
}

// claim moves a reported dump into the spool and queues it. A claim that
// fails (disk full for the record, say) is kept and retried by the workers:
// the watcher reports a file only once. What is not a regular file, or not
// the file reported, is refused with one log line.
func (u *Uploader) claim(ev watch.Event, first bool) {
	e, f, err := u.o.Spool.Claim(ev.Path, ev.Container, ev.Complete, dumpfile.Identity{Dev: ev.Dev, Ino: ev.Inode})
	retry := err != nil && !errors.Is(err, spool.ErrVanished) && !errors.Is(err, dumpfile.ErrNotRegular) && !errors.Is(err, spool.ErrReplaced)
	u.mu.Lock()
	delete(u.unclaimed, ev.Path)
	if retry {
		u.unclaimed[ev.Path] = ev
	}
	if f != nil {
		if len(u.files) < maxHeldFiles {
			u.files[e.ID] = f
		} else {
			f.Close()
		}
	}
	u.lastWork = u.o.Now()
	u.mu.Unlock()
	var notRegular *dumpfile.NotRegularError
	switch {
	case errors.As(err, &notRegular):
		u.o.Metrics.dumpFailed(FailNotRegular)
		u.o.Log.Info("refusing a file in the dump directory: not a regular file (a "+notRegular.Kind+"); it is not read and left where it is",
			"path", ev.Path, "container", ev.Container, "kind", notRegular.Kind)
		return
	case errors.Is(err, spool.ErrReplaced):
		u.o.Metrics.dumpFailed(FailReplaced)
		u.o.Log.Info("refusing a dump that was replaced by another file after it was reported; the new file is reported on its own",
			"path", ev.Path, "container", ev.Container, "error", err)
		return
	case errors.Is(err, spool.ErrVanished):
		u.o.Log.Info("a dump vanished before it could be claimed", "path", ev.Path)
		return
	case err != nil:
		if first {
			u.o.Log.Error(err, "cannot claim a dump; it stays in place and the claim is retried", "path", ev.Path)
		}
		return
	}
	if !ev.Complete && ev.Err == nil && first {
		u.o.Log.Info("uploading an incomplete dump (its writer stopped before finishing)", "path", ev.Path, "why", ev.Reason)
	}
	u.o.Log.Info("claimed", "file", e.File, "container", e.Container, "reason", e.Reason, "size", e.Size)
	u.enqueue(e)
}

func (u *Uploader) enqueue(e spool.Entry) {
	u.mu.Lock()
	u.queue = append(u.queue, item{e: e})
	u.lastWork = u.o.Now()
	u.mu.Unlock()
	u.o.Metrics.setQueued(u.queued())
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *Uploader) queued() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.queue) + len(u.inFlight)
}

// next takes the first queued dump that is due. When none is, it says how
// long to wait (at most a second).
func (u *Uploader) next() (spool.Entry, time.Duration, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.o.Now()
	wait := time.Second
	for i, it := range u.queue {
		if d := it.notBefore.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		u.queue = append(u.queue[:i:i], u.queue[i+1:]...)
		u.inFlight[it.e.ID] = it.e
		return it.e, 0, true
	}
	return spool.Entry{}, wait, false
}

// finish ends a delivery attempt: a dump to try again goes to the back of
// the queue, due at notBefore; any other is done with, and its file closed.
func (u *Uploader) finish(e spool.Entry, requeue bool, notBefore time.Time) {
	u.mu.Lock()
	delete(u.inFlight, e.ID)
	if requeue {
		u.queue = append(u.queue, item{e: e, notBefore: notBefore})
	} else if f := u.files[e.ID]; f != nil {
		f.Close()
		delete(u.files, e.ID)
	}
	u.lastWork = u.o.Now()
	u.mu.Unlock()
	u.o.Metrics.setQueued(u.queued())
}

// retryClaims claims again what failed before.
func (u *Uploader) retryClaims() {
	u.mu.Lock()
	evs := make([]watch.Event, 0, len(u.unclaimed))
	for path, ev := range u.unclaimed {
		evs = append(evs, ev)
		delete(u.unclaimed, path) // claim puts it back if it fails again
	}
	u.mu.Unlock()
	for _, ev := range evs {
		u.claim(ev, false)
	}
}

func (u *Uploader) worker(ctx context.Context) {
	for {
		e, wait, ok := u.next()
		if !ok {
			u.retryClaims()
			select {
			case <-ctx.Done():
				return
			case <-u.wake:
				continue
			case <-time.After(wait):
				continue
			}
		}
		requeue, notBefore := u.deliverWithRetry(ctx, &e)
		u.finish(e, requeue, notBefore)
		if ctx.Err() != nil {
			return
		}
	}
}

// deliverWithRetry tries one dump until it is delivered, set aside, or the
// context ends; a storage outage is retried here with backoff (every dump
// would fail alike). A dump that could not be read goes back to the queue
// (requeue, due at notBefore), so that the others go on meanwhile.
func (u *Uploader) deliverWithRetry(ctx context.Context, e *spool.Entry) (requeue bool, notBefore time.Time) {
	backoff := u.o.RetryMin
	for {
		err := u.deliver(ctx, e)
		if err == nil {
			u.storageUp()
			return false, time.Time{}
		}
		if ctx.Err() != nil {
			return true, time.Time{}
		}
		var gone *goneError
		if errors.As(err, &gone) {
			u.o.Log.Error(err, "a claimed dump disappeared from the spool; nothing left to upload", "file", e.File)
			_ = u.o.Spool.Done(*e)
			return false, time.Time{}
		}
		if reason, ok := dumpFault(err); ok {
			u.setAside(*e, reason, err)
			return false, time.Time{}
		}
		var fileErr *fileError
		if errors.As(err, &fileErr) {
			u.o.Metrics.failed()
			e.FileErrors++
			if e.FileErrors >= maxFileErrors {
				u.setAside(*e, FailUnreadable, err)
				return false, time.Time{}
			}
			_ = u.o.Spool.Save(*e) // the count survives a restart
			if e.FileErrors == 1 {
				u.o.Log.Error(err, "cannot read a dump; it stays in the spool and is retried", "file", e.File,
					"tries", maxFileErrors)
			}
			return true, u.o.Now().Add(min(u.o.RetryMin<<min(e.FileErrors-1, 20), u.o.RetryMax))
		}
		u.storageDown(err)
		u.o.Metrics.failed()
		select {
		case <-ctx.Done():
			return true, time.Time{}
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, u.o.RetryMax)
	}
}

// setAside moves a dump that cannot be delivered for a reason of its own
// out of the way (spool.SetAside), once and for all.
func (u *Uploader) setAside(e spool.Entry, reason string, err error) {
	u.o.Metrics.dumpFailed(reason)
	where, serr := u.o.Spool.SetAside(e, reason)
	fields := []any{"file", e.File, "container", e.Container, "why", reason, "size", e.Size}
	if serr != nil {
		u.o.Log.Error(err, "a dump cannot be delivered, and could not be set aside either; it is tried again after a restart",
			append(fields, "setAside", serr)...)
		return
	}
	u.o.Log.Error(err, "setting a dump aside: it cannot be delivered and is not retried, also not after a restart",
		append(fields, "keptAt", where)...)
}

// dumpFault says whether err is the dump's own fault, which no retry can
// fix, and why.
func dumpFault(err error) (string, bool) {
	var de *dumpError
	switch {
	case errors.As(err, &de):
		return de.reason, true
	case errors.Is(err, storage.ErrInvalidKey) || errors.Is(err, storage.ErrInvalidMetadata):
		return FailRejected, true
	}
	return "", false
}

func (u *Uploader) storageDown(err error) {
	u.mu.Lock()
	was := u.down
	u.down = true
	u.mu.Unlock()
	u.o.Metrics.setUp(false)
	if !was {
		u.o.Log.Error(err, "storage unavailable: dumps stay on disk and are retried with backoff", "destination", u.o.Bucket.URL(""))
	}
}

func (u *Uploader) storageUp() {
	u.mu.Lock()
	was := u.down
	u.down = false
	u.mu.Unlock()
	u.o.Metrics.setUp(true)
	if was {
		u.o.Log.Info("storage reachable again", "destination", u.o.Bucket.URL(""))
	}
}

// fileError is a problem reading the local file, not with storage: retried
// (maxFileErrors times).
type fileError struct{ err error }

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// dumpError is the dump's own fault: it is set aside, never retried.
type dumpError struct {
	reason string // a Fail* constant
	err    error
}

func (e *dumpError) Error() string { return e.err.Error() }
func (e *dumpError) Unwrap() error { return e.err }

// goneError: the claimed dump is no longer there.
type goneError struct{ err error }

func (e *goneError) Error() string { return e.err.Error() }
func (e *goneError) Unwrap() error { return e.err }

// open returns the dump's open file: the one its claim opened, or one opened
// again (after a restart) by spool.OpenData, which checks that it is the
// file claimed. The Uploader keeps it until finish.
func (u *Uploader) open(e spool.Entry) (*os.File, dumpfile.Info, error) {
	u.mu.Lock()
	f := u.files[e.ID]
	u.mu.Unlock()
	if f != nil {
		info, err := dumpfile.Stat(f)
		if err != nil {
			return nil, dumpfile.Info{}, &fileError{err}
		}
		return f, info, nil
	}
	f, info, err := u.o.Spool.OpenData(e)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		return nil, dumpfile.Info{}, &goneError{err}
	case errors.Is(err, dumpfile.ErrNotRegular):
		return nil, dumpfile.Info{}, &dumpError{FailNotRegular, err}
	case errors.Is(err, spool.ErrReplaced):
		return nil, dumpfile.Info{}, &dumpError{FailReplaced, err}
	case errors.Is(err, fs.ErrPermission):
		return nil, dumpfile.Info{}, &fileError{fmt.Errorf("%w: the JVM writes dumps with mode 0600, so the uploader must run as the JVM's uid (set securityContext.runAsUser on the pod)", err)}
	default:
		return nil, dumpfile.Info{}, &fileError{err}
	}
	u.mu.Lock()
	u.files[e.ID] = f
	u.mu.Unlock()
	return f, info, nil
}

// deliver uploads one dump once: a single pass over the file, compressed on
// the fly, verified by the store, then removed from the spool.
func (u *Uploader) deliver(ctx context.Context, e *spool.Entry) error {
	start := u.o.Now()
	path := u.o.Spool.DataPath(*e)
	f, fi, err := u.open(*e)
	if err != nil {
		return err
	}
	if dumpfile.Sparse(fi) {
		return &dumpError{FailSparse, fmt.Errorf("%s: %d bytes allocated for %d bytes: a sparse file, which a heap dump never is", path, fi.Allocated, fi.Size)}
	}
	// Only the size fstat reported is read, even if the file grows.
	size := fi.Size
	head := make([]byte, 2)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return &fileError{fmt.Errorf("reading %s: %w", path, err)}
	}
	enc, err := chooseEncoding(u.o.Compression, head[:n], e.File)
	if err != nil {
		return err
	}
	e.Attempts++
	if e.Key == "" {
		key, err := u.o.Template.Render(objectkey.Fields{
			Namespace: u.o.Identity.Namespace, Workload: u.o.Identity.Workload, Pod: u.o.Identity.Pod,
			Container: e.Container, Node: u.o.Identity.Node, Reason: e.Reason, File: contract.ShortName(e.File) + enc.suffix, Time: e.ClaimedAt,
		})
		if err != nil {
			return &dumpError{FailRejected, err}
		}
		if key, err = u.uniqueKey(ctx, key, e.ID); err != nil {
			return err
		}
		e.Key = key
	}
	// The key is on disk before any byte is sent: a retry or a restart
	// writes the same object, never a second one.
	if err := u.o.Spool.Save(*e); err != nil {
		return &fileError{err}
	}

	meta := map[string]string{
		"dump-id":       e.ID,
		"namespace":     u.o.Identity.Namespace,
		"pod":           u.o.Identity.Pod,
		"pod-uid":       u.o.Identity.PodUID,
		"node":          u.o.Identity.Node,
		"workload":      u.o.Identity.Workload,
		"container":     e.Container,
		"reason":        e.Reason,
		"file":          e.File,
		"complete":      strconv.FormatBool(e.Complete),
		"original-size": strconv.FormatInt(size, 10),
		"encoding":      enc.name,
	}
	for k, v := range meta {
		if v == "" {
			v = "unknown"
		}
		meta[k] = metaValue(v, maxMetaValue[k])
	}
	contentEncoding := enc.name
	if contentEncoding == "identity" {
		contentEncoding = ""
	}
	putOpts := storage.PutOptions{Metadata: meta, ContentEncoding: contentEncoding}
	var info storage.Info
	var origSum string
	if enc.wrap == nil {
		// Sent as it is: Put reads the file itself and its SHA-256 is the
		// original's (measured: a quarter less CPU than through a pipe).
		info, err = u.o.Bucket.Put(ctx, e.Key, &fileReader{io.NewSectionReader(f, 0, size), size, path}, putOpts)
		if err != nil {
			return err
		}
		origSum = info.Metadata[storage.MetaSHA256]
	} else {
		pr, pw := io.Pipe()
		orig := sha256.New()
		copied := make(chan error, 1)
		go func() {
			var err error
			var zw io.WriteCloser
			if zw, err = enc.wrap(pw); err == nil {
				_, err = io.Copy(zw, &fileReader{io.TeeReader(io.NewSectionReader(f, 0, size), orig), size, path})
				if cerr := zw.Close(); err == nil {
					err = cerr
				}
			}
			pw.CloseWithError(err)
			copied <- err
		}()
		info, err = u.o.Bucket.Put(ctx, e.Key, pr, putOpts)
		pr.CloseWithError(errUploadEnded) // unblocks the copier if Put stopped reading early
		readErr := <-copied
		switch {
		case readErr != nil && !errors.Is(readErr, errUploadEnded):
			return readErr // the local file failed: that is why Put failed too
		case err != nil:
			return err
		case readErr != nil:
			return readErr
		}
		origSum = hex.EncodeToString(orig.Sum(nil))
	}
	if err := u.o.Spool.Done(*e); err != nil {
		u.o.Log.Error(err, "delivered, but could not remove the local copy", "path", path)
	}
	took := u.o.Now().Sub(start)
	u.o.Metrics.delivered(size, info.Size)
	u.o.Log.Info("delivered",
		"url", u.o.Bucket.URL(e.Key), "container", e.Container, "reason", e.Reason,
		"originalSize", size, "storedSize", info.Size, "encoding", enc.name,
		"originalSha256", origSum, "verified", info.Verified,
		"attempts", e.Attempts, "took", took)
	return nil
}

// fileReader reads the left bytes of the local dump (a section of the
// size fstat reported at the start of the attempt). It marks read errors
// as such, so that they are not taken for a storage outage, and so is a
// file that ends early (it shrank while it was read).
type fileReader struct {
	r    io.Reader
	left int64
	path string
}

func (f *fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.left -= int64(n)
	switch {
	case err == io.EOF && f.left > 0:
		err = &fileError{fmt.Errorf("reading %s: the file shrank by %d bytes while it was uploaded", f.path, f.left)}
	case err != nil && err != io.EOF:
		err = &fileError{fmt.Errorf("reading %s: %w", f.path, err)}
	}
	return n, err
}

// maxMetaValue bounds the encoded metadata values the app chooses: the file
// name (up to 255 bytes, up to three times as long encoded) and the
// container directory, so that all metadata stays within the 2 KiB of S3
// whatever the app names its files. Other values are not bounded.
var maxMetaValue = map[string]int{"file": 512, "container": 128}

// metaValue percent-encodes v as a metadata value
// (storage.EncodeMetadataValue: ordinary names are unchanged, anything else
// decodes with any URL library). When max > 0 and the encoding is longer, it
// is cut to max bytes, never inside a %XX, and ends in "...".
func metaValue(v string, max int) string {
	enc := storage.EncodeMetadataValue(v)
	if max <= 0 || len(enc) <= max {
		return enc
	}
	cut := max - len("...")
	switch {
	case enc[cut-1] == '%':
		cut--
	case enc[cut-2] == '%':
		cut -= 2
	}
	return enc[:cut] + "..."
}

// errUploadEnded stops the copier when Put returned before reading it all.
var errUploadEnded = errors.New("upload ended before the whole file was read")

// uniqueKey returns key, or key with the dump id added when another dump
// already owns key (two dumps of one name in the same millisecond, or a
// template without enough fields): a dump never overwrites another.
func (u *Uploader) uniqueKey(ctx context.Context, key, id string) (string, error) {
	info, err := u.o.Bucket.Stat(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return key, nil
	case err != nil:
		return "", err
	case info.Metadata["dump-id"] == id:
		return key, nil
	}
	dir, file := filepath.Split(key)
	return dir + id + "-" + file, nil
}

// keyPatternTime stands in for the claim time in KeyPattern: no dump is
// claimed at this instant.
var keyPatternTime = time.Date(1901, 2, 3, 4, 5, 6, 789e6, time.UTC)

// KeyPattern is the object URL a dump of container named file will get,
// with {time} and {date} (the moment the uploader picks the dump up) shown
// as <time> and <date>. A key that another dump already owns gets the dump
// id in front of the file name; KeyPattern cannot know that in advance.
func (u *Uploader) KeyPattern(container, file string) (string, error) {
	enc, err := chooseEncoding(u.o.Compression, nil, file)
	if err != nil {
		return "", err
	}
	key, err := u.o.Template.Render(objectkey.Fields{
		Namespace: u.o.Identity.Namespace, Workload: u.o.Identity.Workload, Pod: u.o.Identity.Pod,
		Container: container, Node: u.o.Identity.Node, Reason: contract.ReasonOf(file), File: contract.ShortName(file) + enc.suffix,
		Time: keyPatternTime,
	})
	if err != nil {
		return "", err
	}
	url := u.o.Bucket.URL(key)
	url = strings.ReplaceAll(url, keyPatternTime.Format(objectkey.TimeLayout), "<time>")
	return strings.ReplaceAll(url, keyPatternTime.Format("2006-01-02"), "<date>"), nil
}
