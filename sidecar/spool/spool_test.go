package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func setup(t *testing.T) (*Spool, string) {
	t.Helper()
	root := t.TempDir()
	dumps := filepath.Join(root, "dumps", "app")
	if err := os.MkdirAll(dumps, 0o777); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(root, ".spool"), testr.New(t), func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	return s, dumps
}

// setupTicking is setup with a clock that advances a millisecond per
// reading, so that entries claimed one after the other sort in that order.
func setupTicking(t *testing.T) (*Spool, string) {
	t.Helper()
	root := t.TempDir()
	dumps := filepath.Join(root, "dumps", "app")
	if err := os.MkdirAll(dumps, 0o777); err != nil {
		t.Fatal(err)
	}
	now := t0
	s, err := Open(filepath.Join(root, ".spool"), testr.New(t), func() time.Time { now = now.Add(time.Millisecond); return now })
	if err != nil {
		t.Fatal(err)
	}
	return s, dumps
}

// identity is the device and inode of path, as the watcher reports them.
func identity(t *testing.T, path string) dumpfile.Identity {
	t.Helper()
	info, err := dumpfile.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Identity
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestClaimMovesTheDumpAndRecordsIt(t *testing.T) {
	s, dumps := setupTicking(t)
	src := filepath.Join(dumps, "java_pid1.hprof")
	write(t, src, "dump-1")
	id := identity(t, src)
	e, f, err := s.Claim(src, "app", true, id)
	if err != nil {
		t.Fatal(err)
	}
	// The open dump comes with the entry: the uploader reads from it.
	if b, err := io.ReadAll(f); err != nil || string(b) != "dump-1" {
		t.Errorf("claimed file reads %q, %v", b, err)
	}
	f.Close()
	want := Entry{ID: e.ID, Container: "app", Source: src, File: "java_pid1.hprof", Reason: "oom", Complete: true, Size: 6, ClaimedAt: e.ClaimedAt, Identity: id}
	if !e.ClaimedAt.After(t0) {
		t.Errorf("ClaimedAt %v not from the spool's clock", e.ClaimedAt)
	}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Error(diff)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the JVM's path is still taken: %v", err)
	}
	if b, err := os.ReadFile(s.DataPath(e)); err != nil || string(b) != "dump-1" {
		t.Errorf("spooled bytes = %q, %v", b, err)
	}
	// The JVM can write the next dump under the same name; it gets its own entry.
	write(t, src, "dump-2")
	e2, _, err := s.Claim(src, "app", true, dumpfile.Identity{})
	if err != nil || e2.ID == e.ID {
		t.Fatalf("second claim: %+v %v", e2, err)
	}
	got, err := s.Recover()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Entry{e, e2}, got); diff != "" {
		t.Errorf("Recover (-want +got):\n%s", diff)
	}
	if err := s.Done(e); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Recover()
	if diff := cmp.Diff([]Entry{e2}, got); diff != "" {
		t.Errorf("after Done (-want +got):\n%s", diff)
	}
}

func TestClaimVanished(t *testing.T) {
	s, dumps := setup(t)
	_, _, err := s.Claim(filepath.Join(dumps, "gone.hprof"), "app", true, dumpfile.Identity{})
	if !errors.Is(err, ErrVanished) {
		t.Fatalf("err = %v, want ErrVanished", err)
	}
	if got, _ := s.Recover(); len(got) != 0 {
		t.Errorf("left entries: %+v", got)
	}
}

func TestClaimAcrossFileSystemsUploadsInPlace(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	s, _ := setup(t)
	dir, err := os.MkdirTemp("/dev/shm", "spooltest")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "java_pid1.hprof")
	write(t, src, "x")
	e, _, err := s.Claim(src, "app", true, dumpfile.Identity{})
	if err != nil {
		t.Fatal(err)
	}
	if !e.InPlace || s.DataPath(e) != src {
		t.Fatalf("entry %+v not in place", e)
	}
	if err := s.Done(e); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("delivered in-place dump not removed: %v", err)
	}
}

// TestRecoverAfterCrashes stops Claim and Done at each step, as a SIGKILL
// would, and checks that Recover loses and duplicates nothing.
func TestRecoverAfterCrashes(t *testing.T) {
	t.Run("record written, dump not yet moved", func(t *testing.T) {
		s, dumps := setup(t)
		src := filepath.Join(dumps, "java_pid1.hprof")
		write(t, src, "d")
		e := Entry{ID: "a", Container: "app", Source: src, File: "java_pid1.hprof", Reason: "oom", Complete: true, Size: 1, ClaimedAt: t0}
		if err := s.Save(e); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recover()
		if err != nil || len(got) != 1 || got[0].ID != "a" {
			t.Fatalf("Recover = %+v, %v", got, err)
		}
		if b, _ := os.ReadFile(s.DataPath(got[0])); string(b) != "d" {
			t.Errorf("dump not moved into the spool")
		}
	})
	t.Run("bytes removed, record left", func(t *testing.T) {
		s, dumps := setup(t)
		src := filepath.Join(dumps, "java_pid1.hprof")
		write(t, src, "d")
		e, _, err := s.Claim(src, "app", true, dumpfile.Identity{})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(s.DataPath(e))
		if got, err := s.Recover(); err != nil || len(got) != 0 {
			t.Fatalf("Recover = %+v, %v", got, err)
		}
		if _, err := os.Stat(s.record(e.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale record kept")
		}
	})
	t.Run("half-written record and bytes without a record", func(t *testing.T) {
		s, _ := setup(t)
		write(t, filepath.Join(s.Dir(), "b.json.tmp"), `{"id":`)
		write(t, filepath.Join(s.Dir(), "c.data"), "orphan")
		got, err := s.Recover()
		if err != nil {
			t.Fatal(err)
		}
		want := []Entry{{ID: "c", Container: "unknown", File: "c.hprof", Reason: "oom", Size: 6, ClaimedAt: t0}}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if _, err := os.Stat(filepath.Join(s.Dir(), "b.json.tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("temp record kept")
		}
	})
	t.Run("key saved before upload survives", func(t *testing.T) {
		s, dumps := setup(t)
		src := filepath.Join(dumps, "prestop-20261123T100000.000Z-pid1.hprof")
		write(t, src, "d")
		e, _, err := s.Claim(src, "app", true, dumpfile.Identity{})
		if err != nil {
			t.Fatal(err)
		}
		e.Key, e.Attempts = "ns/pod/app/x.hprof.gz", 1
		if err := s.Save(e); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recover()
		if err != nil || len(got) != 1 || got[0].Key != e.Key || got[0].Reason != "prestop" {
			t.Fatalf("Recover = %+v, %v", got, err)
		}
	})
}
