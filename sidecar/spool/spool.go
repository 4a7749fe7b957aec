// Package spool keeps claimed dumps until their upload is verified.
//
// Claiming moves a finished dump out of the JVM's dump directory at once, so
// that the next dump of the same JVM (same java_pid<pid>.hprof name after a
// container restart) is not refused, and keeps it in a hidden directory of
// the shared volume that app containers do not mount. Every step is ordered
// so that a crash at any point (the sidecar killed with SIGKILL, the node
// rebooting the container) loses nothing and duplicates nothing:
//
//  1. the record <id>.json is written (temp file, fsync, rename, fsync dir);
//  2. the dump is renamed to <id>.data (same file system: atomic);
//  3. after the verified upload, <id>.data is removed, then <id>.json.
//
// Recover finishes whatever a crash interrupted. The object key is stored in
// the record before the first upload attempt, so every retry and every
// restart writes the same object: at most one object per dump.
//
// The dump directories belong to untrusted app containers, which can rename
// anything over a dump at any moment. Claim therefore opens the dump first
// (sidecar/dumpfile: no link followed, no blocking on a FIFO, regular files
// only), checks that the descriptor is the very file the watcher reported
// (device and inode), and hands that open file to the uploader, which reads
// only from it. Whenever a dump has to be opened again (after a restart, or
// when it could not be opened at the claim), OpenData refuses anything but
// the device and inode recorded at the claim.
//
// A dump that can never be delivered for a reason of its own is set aside:
// SetAside moves it and its record into <spool>/failed/, where Recover does
// not look, so it is kept for inspection but never retried, across restarts
// too.
package spool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
	"github.com/go-logr/logr"
)

// Entry is one claimed dump.
type Entry struct {
	ID string `json:"id"`
	// Container wrote the dump (the name of its directory under dumps/).
	Container string `json:"container"`
	// Source is where the dump was found; File its base name.
	Source string `json:"source"`
	File   string `json:"file"`
	// Reason: oom, prestop or manual.
	Reason string `json:"reason"`
	// Complete is false for a file whose writer stopped before finishing.
	Complete bool `json:"complete"`
	// Size of the file when it was claimed.
	Size int64 `json:"size"`
	// ClaimedAt is when the uploader took the dump; it dates the object key.
	ClaimedAt time.Time `json:"claimedAt"`
	// InPlace is true when the dump could not be moved (no write access to
	// its directory): it is uploaded from where it is.
	InPlace bool `json:"inPlace,omitempty"`
	// Key is the object key, fixed before the first upload attempt.
	Key string `json:"key,omitempty"`
	// Attempts counts upload attempts.
	Attempts int `json:"attempts"`
	// Identity is the dump's device and inode at the claim: OpenData opens
	// nothing else. Zero in records of older versions.
	dumpfile.Identity
	// FileErrors counts the attempts that failed because the dump could not
	// be read.
	FileErrors int `json:"fileErrors,omitempty"`
	// SetAside says why the dump was set aside (records in failed/ only).
	SetAside string `json:"setAside,omitempty"`
}

// ErrVanished: the dump disappeared before it could be claimed.
var ErrVanished = errors.New("dump vanished before it was claimed")

// ErrReplaced: the file at the dump's path is not the one the watcher
// reported or the claim recorded (another file was renamed over it).
var ErrReplaced = errors.New("the file was replaced: it is not the one reported")

// FailedDir is the sub-directory of the spool where dumps are set aside.
const FailedDir = "failed"

// Spool is a directory of claimed dumps.
type Spool struct {
	dir string
	log logr.Logger
	now func() time.Time
	// beforeRename, when set (by tests), runs between Claim's open and its
	// rename: where an attacker can swap the file.
	beforeRename func()
}

// Open opens (creating) the spool directory dir.
func Open(dir string, log logr.Logger, now func() time.Time) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool directory %s: %w (the uploader needs write access to the shared volume)", dir, err)
	}
	if now == nil {
		now = time.Now
	}
	return &Spool{dir: dir, log: log, now: now}, nil
}

// Dir is the spool directory.
func (s *Spool) Dir() string { return s.dir }

func (s *Spool) record(id string) string { return filepath.Join(s.dir, id+".json") }

// FailedPath is where SetAside keeps the bytes of a dump not uploaded in
// place.
func (s *Spool) FailedPath(e Entry) string {
	return filepath.Join(s.dir, FailedDir, e.ID+".data")
}

// DataPath is where the entry's bytes are.
func (s *Spool) DataPath(e Entry) string {
	if e.InPlace {
		return e.Source
	}
	return filepath.Join(s.dir, e.ID+".data")
}

func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return now.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(b[:])
}

// Claim takes the finished dump at path (in dumps/<container>/) and returns
// its entry and the open dump to upload from. want is the identity the
// watcher reported (zero: not checked).
//
// The dump is opened before anything else (dumpfile.Open: a link, FIFO,
// socket or device is refused with an error wrapping dumpfile.ErrNotRegular,
// and left where it is), the descriptor must be want, the record is written,
// and the dump is renamed into the spool; what was renamed must still be the
// file opened, or it is set aside and Claim fails with ErrReplaced. The
// returned file is nil only when the uploader may not read the dump (EACCES:
// the JVM's uid differs): it is claimed all the same, checked with lstat,
// and OpenData opens it later with the identity recorded here.
//
// A dump whose directory the uploader cannot write to (or on another file
// system) stays where it is (Entry.InPlace) and is read from the returned
// descriptor.
func (s *Spool) Claim(path, container string, complete bool, want dumpfile.Identity) (Entry, *os.File, error) {
	f, info, err := dumpfile.Open(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		return Entry{}, nil, fmt.Errorf("%s: %w", path, ErrVanished)
	case errors.Is(err, fs.ErrPermission):
		// Unreadable for this uid: claim it without reading it.
		if info, err = dumpfile.Lstat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return Entry{}, nil, fmt.Errorf("%s: %w", path, ErrVanished)
			}
			return Entry{}, nil, err
		}
		if !info.Mode.IsRegular() {
			return Entry{}, nil, &dumpfile.NotRegularError{Path: path, Kind: dumpfile.Kind(info.Mode)}
		}
	default:
		return Entry{}, nil, err
	}
	fail := func(err error) (Entry, *os.File, error) {
		if f != nil {
			f.Close()
		}
		return Entry{}, nil, err
	}
	if !want.IsZero() && info.Identity != want {
		return fail(fmt.Errorf("%s: %w (reported %v, found %v)", path, ErrReplaced, want, info.Identity))
	}
	now := s.now()
	file := filepath.Base(path)
	e := Entry{ID: newID(now), Container: container, Source: path, File: file, Reason: contract.ReasonOf(file),
		Complete: complete, Size: info.Size, ClaimedAt: now, Identity: info.Identity}
	if err := s.Save(e); err != nil {
		return fail(err)
	}
	if s.beforeRename != nil {
		s.beforeRename()
	}
	err = os.Rename(path, s.DataPath(e))
	switch {
	case err == nil:
		// Something else may have been renamed over path between the open
		// and the rename: then that is what was moved.
		moved, lerr := dumpfile.Lstat(s.DataPath(e))
		if lerr != nil || moved.Identity != e.Identity {
			var serr error
			if lerr == nil {
				e.Identity = moved.Identity
				_, serr = s.SetAside(e, "replaced")
			}
			return fail(errors.Join(fmt.Errorf("%s: %w (opened %v, moved %v)", path, ErrReplaced, info.Identity, moved.Identity), lerr, serr))
		}
	case errors.Is(err, fs.ErrNotExist):
		s.removeRecord(e.ID)
		return fail(fmt.Errorf("%s: %w", path, ErrVanished))
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EXDEV):
		// Upload from where it is; the JVM's path stays taken until then.
		s.log.Info("cannot move the dump out of the JVM's directory; uploading it in place, and the JVM cannot write a dump of the same name until it is uploaded",
			"path", path, "error", err)
		e.InPlace = true
		if err := s.Save(e); err != nil {
			return fail(err)
		}
	default:
		s.removeRecord(e.ID)
		return fail(fmt.Errorf("claiming %s: %w", path, err))
	}
	if err := syncDir(s.dir); err != nil {
		return fail(err)
	}
	return e, f, nil
}

// OpenData opens the entry's dump again: after a restart, or when Claim
// could not open it. It is opened as dumpfile.Open does (a link, FIFO or
// device is refused with an error wrapping dumpfile.ErrNotRegular), and
// anything but the file recorded at the claim fails with ErrReplaced.
func (s *Spool) OpenData(e Entry) (*os.File, dumpfile.Info, error) {
	f, info, err := dumpfile.Open(s.DataPath(e))
	if err != nil {
		return nil, dumpfile.Info{}, err
	}
	if !e.Identity.IsZero() && info.Identity != e.Identity {
		f.Close()
		return nil, dumpfile.Info{}, fmt.Errorf("%s: %w (claimed %v, found %v)", s.DataPath(e), ErrReplaced, e.Identity, info.Identity)
	}
	return f, info, nil
}

// SetAside moves a dump that will never be delivered into failed/ with its
// record (SetAside records why), so that Recover does not return it again.
// A dump uploaded in place stays where it is (the uploader may not move it);
// only its record moves. It returns where the bytes are now.
func (s *Spool) SetAside(e Entry, why string) (string, error) {
	dir := filepath.Join(s.dir, FailedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("setting a dump aside: %w", err)
	}
	e.SetAside = why
	// The record in failed/ first; a crash before the old record is
	// removed only means the dump is tried once more after the restart.
	if err := writeRecord(dir, e); err != nil {
		return "", fmt.Errorf("setting a dump aside: %w", err)
	}
	where := s.DataPath(e)
	if !e.InPlace {
		err := os.Rename(s.DataPath(e), s.FailedPath(e))
		switch {
		case err == nil:
			where = s.FailedPath(e)
		case errors.Is(err, fs.ErrNotExist):
			where = ""
		default:
			return "", fmt.Errorf("setting a dump aside: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return "", err
		}
	}
	return where, s.removeRecord(e.ID)
}

// Save writes the entry's record atomically.
func (s *Spool) Save(e Entry) error { return writeRecord(s.dir, e) }

// writeRecord writes <dir>/<id>.json atomically.
func writeRecord(dir string, e Entry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	final := filepath.Join(dir, e.ID+".json")
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing spool record: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing spool record %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing spool record %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// Done removes a delivered dump: the bytes first, then the record. A dump
// delivered in place is removed only while its path still names the file
// claimed (another file renamed over it is not the uploader's).
func (s *Spool) Done(e Entry) error {
	remove := true
	if e.InPlace && !e.Identity.IsZero() {
		info, err := dumpfile.Lstat(s.DataPath(e))
		remove = err == nil && info.Identity == e.Identity
	}
	if !remove {
		s.log.Info("a dump delivered in place was replaced by another file; leaving that file alone",
			"path", s.DataPath(e))
	} else if err := os.Remove(s.DataPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing delivered dump %s: %w", s.DataPath(e), err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return s.removeRecord(e.ID)
}

func (s *Spool) removeRecord(id string) error {
	if err := os.Remove(s.record(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(s.dir)
}

// Recover finishes what a crash interrupted and returns the dumps still to
// deliver, oldest first.
func (s *Spool) Recover() ([]Entry, error) {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading spool %s: %w", s.dir, err)
	}
	var out []Entry
	records := map[string]bool{}
	for _, d := range names {
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			os.Remove(filepath.Join(s.dir, name)) // an unfinished record write
		case strings.HasSuffix(name, ".json"):
			id := strings.TrimSuffix(name, ".json")
			records[id] = true
			e, ok, err := s.recoverOne(id)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, e)
			}
		}
	}
	for _, d := range names {
		id, ok := strings.CutSuffix(d.Name(), ".data")
		if !ok || records[id] {
			continue
		}
		// Bytes without a record cannot come from Claim's order; keep them
		// rather than lose them. OpenData refuses them unless they are a
		// regular file.
		info, _ := d.Info()
		e := Entry{ID: id, Container: "unknown", File: id + ".hprof", Reason: contract.ReasonOOM, Size: sizeOf(info), ClaimedAt: s.now()}
		if err := s.Save(e); err != nil {
			return nil, err
		}
		s.log.Info("adopted a spooled dump without a record", "path", s.DataPath(e))
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Spool) recoverOne(id string) (Entry, bool, error) {
	data, err := os.ReadFile(s.record(id))
	if err != nil {
		return Entry{}, false, err
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil || e.ID != id {
		// A record is written whole (rename); a bad one is not ours.
		kv := []any{"path", s.record(id)}
		if err != nil {
			kv = append(kv, "error", err)
		}
		s.log.Info("ignoring a spool record that does not parse", kv...)
		return Entry{}, false, nil
	}
	if _, err := os.Lstat(s.DataPath(e)); err == nil {
		return e, true, nil
	}
	if !e.InPlace {
		// Crashed between writing the record and moving the dump: move it,
		// if the name still holds the file claimed (a file renamed over it
		// since is reported by the watcher on its own).
		if info, err := dumpfile.Lstat(e.Source); err == nil && (e.Identity.IsZero() || info.Identity == e.Identity) {
			if err := os.Rename(e.Source, s.DataPath(e)); err == nil {
				return e, true, syncDir(s.dir)
			}
		}
	}
	// Crashed after removing the delivered bytes, or the dump is gone.
	return Entry{}, false, s.removeRecord(id)
}

func sizeOf(fi fs.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
