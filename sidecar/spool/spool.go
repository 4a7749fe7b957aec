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
	"go.uber.org/zap"
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
}

// ErrVanished: the dump disappeared before it could be claimed.
var ErrVanished = errors.New("dump vanished before it was claimed")

// Spool is a directory of claimed dumps.
type Spool struct {
	dir string
	log *zap.Logger
	now func() time.Time
}

// Open opens (creating) the spool directory dir.
func Open(dir string, log *zap.Logger, now func() time.Time) (*Spool, error) {
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

// Claim takes the finished dump at path (in dumps/<container>/).
func (s *Spool) Claim(path, container string, complete bool, size int64) (Entry, error) {
	now := s.now()
	file := filepath.Base(path)
	e := Entry{ID: newID(now), Container: container, Source: path, File: file, Reason: contract.ReasonOf(file),
		Complete: complete, Size: size, ClaimedAt: now}
	if err := s.Save(e); err != nil {
		return Entry{}, err
	}
	err := os.Rename(path, s.DataPath(e))
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		s.removeRecord(e.ID)
		return Entry{}, fmt.Errorf("%s: %w", path, ErrVanished)
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EXDEV):
		// Upload from where it is; the JVM's path stays taken until then.
		s.log.Warn("cannot move the dump out of the JVM's directory; uploading it in place, and the JVM cannot write a dump of the same name until it is uploaded",
			zap.String("path", path), zap.Error(err))
		e.InPlace = true
		if err := s.Save(e); err != nil {
			return Entry{}, err
		}
	default:
		s.removeRecord(e.ID)
		return Entry{}, fmt.Errorf("claiming %s: %w", path, err)
	}
	if err := syncDir(s.dir); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Save writes the entry's record atomically.
func (s *Spool) Save(e Entry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := s.record(e.ID) + ".tmp"
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
	if err := os.Rename(tmp, s.record(e.ID)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.dir)
}

// Done removes a delivered dump: the bytes first, then the record.
func (s *Spool) Done(e Entry) error {
	if err := os.Remove(s.DataPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
		// rather than lose them.
		info, _ := d.Info()
		e := Entry{ID: id, Container: "unknown", File: id + ".hprof", Reason: contract.ReasonOOM, Size: sizeOf(info), ClaimedAt: s.now()}
		if err := s.Save(e); err != nil {
			return nil, err
		}
		s.log.Warn("adopted a spooled dump without a record", zap.String("path", s.DataPath(e)))
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
		s.log.Warn("ignoring a spool record that does not parse", zap.String("path", s.record(id)), zap.Error(err))
		return Entry{}, false, nil
	}
	if _, err := os.Stat(s.DataPath(e)); err == nil {
		return e, true, nil
	}
	if !e.InPlace {
		// Crashed between writing the record and moving the dump.
		if err := os.Rename(e.Source, s.DataPath(e)); err == nil {
			return e, true, syncDir(s.dir)
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
