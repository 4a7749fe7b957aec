// Package uploader is the sidecar's main loop: it claims every finished
// dump the watcher reports into the spool, streams it (compressed on the
// fly) to the bucket, and removes it only after the store confirmed it.
// Storage faults keep dumps on disk and are retried with capped backoff; a
// state change of the storage is logged once, not every retry.
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
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/watch"
	"go.uber.org/zap"
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
	// Drain is how long uploads go on after the stop signal (default 25s);
	// Settle ends the drain early once nothing happened for that long
	// (default 2s).
	Drain, Settle time.Duration
	Log           *zap.Logger
	Metrics       *Metrics
	Now           func() time.Time
}

// Uploader moves dumps from the shared volume to storage.
type Uploader struct {
	o Options

	mu        sync.Mutex
	queue     []spool.Entry
	inFlight  map[string]spool.Entry
	unclaimed map[string]watch.Event // claims that failed, retried by the workers
	wake      chan struct{}
	lastWork  time.Time
	down      bool // storage state, for logging state changes once
}

// New checks the options and fills in defaults.
func New(o Options) (*Uploader, error) {
	if o.Bucket == nil || o.Spool == nil || o.DumpsDir == "" || o.Log == nil {
		return nil, errors.New("uploader: Bucket, Spool, DumpsDir and Log are required")
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
	return &Uploader{o: o, inFlight: map[string]spool.Entry{}, unclaimed: map[string]watch.Event{}, wake: make(chan struct{}, 1)}, nil
}

// Run uploads until stop is closed (SIGTERM), then drains for up to Drain
// and returns. It logs every dump it could not deliver by then.
func (u *Uploader) Run(stop <-chan struct{}) error {
	// work is cancelled when the drain ends: in-flight uploads are aborted
	// (their dumps stay in the spool for a restarted sidecar).
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()

	pending, err := u.o.Spool.Recover()
	if err != nil {
		return err
	}
	for _, e := range pending {
		u.o.Log.Info("resuming a dump claimed before a restart", zap.String("file", e.File), zap.String("container", e.Container), zap.Int("attempts", e.Attempts))
		u.enqueue(e)
	}
	w, err := watch.New(u.o.DumpsDir, watch.Options{Logger: u.o.Log.Named("watch"), QuietPeriod: u.o.QuietPeriod})
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
	case <-stop:
		runErr = u.drain(watchErr)
	case err := <-watchErr:
		runErr = fmt.Errorf("watching %s: %w", u.o.DumpsDir, err)
	}
	cancelWork()
	wg.Wait()
	u.reportUndelivered()
	return runErr
}

// drain keeps claiming and uploading after the stop signal until nothing is
// left and nothing happened for Settle, or Drain is over.
func (u *Uploader) drain(watchErr <-chan error) error {
	deadline := time.NewTimer(u.o.Drain)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	u.o.Log.Info("stop requested: delivering what is left", zap.Duration("within", u.o.Drain))
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
	for _, e := range u.queue {
		left = append(left, u.o.Spool.DataPath(e))
	}
	for _, e := range u.inFlight {
		left = append(left, u.o.Spool.DataPath(e))
	}
	for path := range u.unclaimed {
		left = append(left, path)
	}
	if len(left) > 0 {
		u.o.Log.Error("stopping with dumps NOT delivered; they stay in the spool and are delivered if this container restarts, but are lost with the pod", zap.Strings("dumps", left))
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
// the watcher reports a file only once.
func (u *Uploader) claim(ev watch.Event, first bool) {
	e, err := u.o.Spool.Claim(ev.Path, ev.Container, ev.Complete, ev.Size)
	u.mu.Lock()
	delete(u.unclaimed, ev.Path)
	if err != nil && !errors.Is(err, spool.ErrVanished) {
		u.unclaimed[ev.Path] = ev
	}
	u.lastWork = u.o.Now()
	u.mu.Unlock()
	switch {
	case errors.Is(err, spool.ErrVanished):
		u.o.Log.Warn("a dump vanished before it could be claimed", zap.String("path", ev.Path))
		return
	case err != nil:
		if first {
			u.o.Log.Error("cannot claim a dump; it stays in place and the claim is retried", zap.String("path", ev.Path), zap.Error(err))
		}
		return
	}
	if !ev.Complete && ev.Err == nil && first {
		u.o.Log.Warn("uploading an incomplete dump (its writer stopped before finishing)", zap.String("path", ev.Path), zap.String("why", ev.Reason))
	}
	u.o.Log.Info("claimed", zap.String("file", e.File), zap.String("container", e.Container), zap.String("reason", e.Reason), zap.Int64("size", e.Size))
	u.enqueue(e)
}

func (u *Uploader) enqueue(e spool.Entry) {
	u.mu.Lock()
	u.queue = append(u.queue, e)
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

func (u *Uploader) next() (spool.Entry, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.queue) == 0 {
		return spool.Entry{}, false
	}
	e := u.queue[0]
	u.queue = u.queue[1:]
	u.inFlight[e.ID] = e
	return e, true
}

func (u *Uploader) finish(e spool.Entry, requeue bool) {
	u.mu.Lock()
	delete(u.inFlight, e.ID)
	if requeue {
		u.queue = append(u.queue, e)
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
		e, ok := u.next()
		if !ok {
			u.retryClaims()
			select {
			case <-ctx.Done():
				return
			case <-u.wake:
				continue
			case <-time.After(time.Second):
				continue
			}
		}
		requeue := u.deliverWithRetry(ctx, e)
		u.finish(e, requeue)
		if ctx.Err() != nil {
			return
		}
	}
}

// deliverWithRetry tries one dump until it is delivered, dropped or the
// context ends; it reports whether the dump is still to deliver.
func (u *Uploader) deliverWithRetry(ctx context.Context, e spool.Entry) bool {
	backoff := u.o.RetryMin
	fileErrLogged := false
	for {
		err := u.deliver(ctx, &e)
		if err == nil {
			u.storageUp()
			return false
		}
		if ctx.Err() != nil {
			return true
		}
		if errors.Is(err, fs.ErrNotExist) {
			u.o.Log.Error("a claimed dump disappeared from the spool; nothing left to upload", zap.String("file", e.File), zap.Error(err))
			_ = u.o.Spool.Done(e)
			return false
		}
		var fileErr *fileError
		if errors.As(err, &fileErr) {
			if !fileErrLogged {
				u.o.Log.Error("cannot read a dump; it stays in the spool and is retried", zap.String("file", e.File), zap.Error(err))
				fileErrLogged = true
			}
		} else {
			u.storageDown(err)
		}
		u.o.Metrics.failed()
		select {
		case <-ctx.Done():
			return true
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, u.o.RetryMax)
	}
}

func (u *Uploader) storageDown(err error) {
	u.mu.Lock()
	was := u.down
	u.down = true
	u.mu.Unlock()
	u.o.Metrics.setUp(false)
	if !was {
		u.o.Log.Error("storage unavailable: dumps stay on disk and are retried with backoff", zap.String("destination", u.o.Bucket.URL("")), zap.Error(err))
	}
}

func (u *Uploader) storageUp() {
	u.mu.Lock()
	was := u.down
	u.down = false
	u.mu.Unlock()
	u.o.Metrics.setUp(true)
	if was {
		u.o.Log.Info("storage reachable again", zap.String("destination", u.o.Bucket.URL("")))
	}
}

// fileError is a problem with the local file, not with storage.
type fileError struct{ err error }

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// deliver uploads one dump once: a single pass over the file, compressed on
// the fly, verified by the store, then removed from the spool.
func (u *Uploader) deliver(ctx context.Context, e *spool.Entry) error {
	start := u.o.Now()
	path := u.o.Spool.DataPath(*e)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if errors.Is(err, fs.ErrPermission) {
			err = fmt.Errorf("%w: the JVM writes dumps with mode 0600, so the uploader must run as the JVM's uid (set securityContext.runAsUser on the pod)", err)
		}
		return &fileError{err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &fileError{err}
	}
	head := make([]byte, 2)
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return &fileError{err}
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
			return err
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
		"original-size": strconv.FormatInt(fi.Size(), 10),
		"encoding":      enc.name,
	}
	for k, v := range meta {
		if v == "" {
			meta[k] = "unknown"
		}
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
		info, err = u.o.Bucket.Put(ctx, e.Key, fileReader{f, path}, putOpts)
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
				_, err = io.Copy(zw, fileReader{io.TeeReader(f, orig), path})
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
		u.o.Log.Error("delivered, but could not remove the local copy", zap.String("path", path), zap.Error(err))
	}
	took := u.o.Now().Sub(start)
	u.o.Metrics.delivered(fi.Size(), info.Size)
	u.o.Log.Info("delivered",
		zap.String("url", u.o.Bucket.URL(e.Key)), zap.String("container", e.Container), zap.String("reason", e.Reason),
		zap.Int64("originalSize", fi.Size()), zap.Int64("storedSize", info.Size), zap.String("encoding", enc.name),
		zap.String("originalSha256", origSum), zap.String("verified", info.Verified),
		zap.Int("attempts", e.Attempts), zap.Duration("took", took))
	return nil
}

// fileReader marks read errors of the local dump as such, so that they are
// not taken for a storage outage.
type fileReader struct {
	r    io.Reader
	path string
}

func (f fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF {
		err = &fileError{fmt.Errorf("reading %s: %w", f.path, err)}
	}
	return n, err
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
