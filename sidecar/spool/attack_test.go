package spool

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

// renameOver renames a new file made by mk over path, as an attacker in the
// app container can at any moment.
func renameOver(t *testing.T, path string, mk func(tmp string) error) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".swap")
	if err := mk(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func spoolFiles(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(s.Dir(), p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestClaimRefusesWhatWasSwappedIn: between the watcher's report of a dump
// and the claim, the app renames something else over it. A link (to the
// uploader's credentials) or a FIFO is refused without being opened or moved,
// and another regular file is refused as not the one reported; nothing
// enters the spool, and the claim returns at once.
func TestClaimRefusesWhatWasSwappedIn(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secretAccessKey")
	write(t, secret, "the-secret")
	tests := []struct {
		name string
		mk   func(tmp string) error
		want error
	}{
		{"link to the credentials", func(tmp string) error { return os.Symlink(secret, tmp) }, dumpfile.ErrNotRegular},
		{"link to /dev/zero", func(tmp string) error { return os.Symlink("/dev/zero", tmp) }, dumpfile.ErrNotRegular},
		{"FIFO", func(tmp string) error { return syscall.Mkfifo(tmp, 0o666) }, dumpfile.ErrNotRegular},
		{"another file", func(tmp string) error { return os.WriteFile(tmp, []byte("other"), 0o600) }, ErrReplaced},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dumps := setup(t)
			src := filepath.Join(dumps, "java_pid1.hprof")
			write(t, src, "dump")
			reported := identity(t, src)
			renameOver(t, src, tc.mk)
			start := time.Now()
			e, f, err := s.Claim(src, "app", true, reported)
			if f != nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("claimed %+v, reading %q", e, b)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Claim: %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Claim took %v", d)
			}
			if left := spoolFiles(t, s); len(left) != 0 {
				t.Errorf("the spool holds %v", left)
			}
			if _, err := os.Lstat(src); err != nil {
				t.Errorf("what was swapped in was moved: %v", err)
			}
		})
	}
}

// TestClaimDetectsASwapBeforeItsRename: the app renames a link over the dump
// after the claim opened it and before the claim's rename. The link is what
// the rename moves; the claim notices, sets it aside, and fails.
func TestClaimDetectsASwapBeforeItsRename(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secretAccessKey")
	write(t, secret, "the-secret")
	s, dumps := setup(t)
	src := filepath.Join(dumps, "java_pid1.hprof")
	write(t, src, "dump")
	s.beforeRename = func() { renameOver(t, src, func(tmp string) error { return os.Symlink(secret, tmp) }) }
	_, f, err := s.Claim(src, "app", true, identity(t, src))
	if f != nil || !errors.Is(err, ErrReplaced) {
		t.Fatalf("Claim: %v, %v; want ErrReplaced", f, err)
	}
	got, err := s.Recover()
	if err != nil || len(got) != 0 {
		t.Fatalf("Recover = %+v, %v", got, err)
	}
	failed, _ := filepath.Glob(filepath.Join(s.Dir(), FailedDir, "*.data"))
	if len(failed) != 1 {
		t.Fatalf("set aside: %v", failed)
	}
	if fi, err := os.Lstat(failed[0]); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("set aside %v, %v; want the link", fi, err)
	}
}

// TestOpenDataChecksTheClaimedFile: OpenData (after a restart) opens only
// the file recorded at the claim: not a link, FIFO or other file found under
// the entry's path, in place or in the spool.
func TestOpenDataChecksTheClaimedFile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secretAccessKey")
	write(t, secret, "the-secret")
	for _, inPlace := range []bool{false, true} {
		s, dumps := setup(t)
		src := filepath.Join(dumps, "java_pid1.hprof")
		write(t, src, "dump")
		e, f, err := s.Claim(src, "app", true, identity(t, src))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if inPlace { // as if the rename had failed
			if err := os.Rename(s.DataPath(e), src); err != nil {
				t.Fatal(err)
			}
			e.InPlace = true
		}
		f, _, err = s.OpenData(e)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		for _, tc := range []struct {
			mk   func(tmp string) error
			want error
		}{
			{func(tmp string) error { return os.Symlink(secret, tmp) }, dumpfile.ErrNotRegular},
			{func(tmp string) error { return syscall.Mkfifo(tmp, 0o666) }, dumpfile.ErrNotRegular},
			{func(tmp string) error { return os.WriteFile(tmp, []byte("other"), 0o600) }, ErrReplaced},
		} {
			path := s.DataPath(e)
			tmp := path + ".swap"
			if err := tc.mk(tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			if f, _, err := s.OpenData(e); !errors.Is(err, tc.want) {
				if f != nil {
					f.Close()
				}
				t.Errorf("in place %v: OpenData: %v, want %v", inPlace, err, tc.want)
			}
		}
		// A delivered in-place dump whose path now names another file:
		// Done leaves that file alone.
		if inPlace {
			if err := s.Done(e); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(src); err != nil {
				t.Errorf("Done removed a file that is not the dump: %v", err)
			}
		}
	}
}

// TestSetAsideSurvivesRestarts: a dump set aside is kept in failed/ with its
// reason and never returned by Recover again, also by a new Spool.
func TestSetAsideSurvivesRestarts(t *testing.T) {
	s, dumps := setup(t)
	src := filepath.Join(dumps, "java_pid1.hprof")
	write(t, src, "dump")
	e, f, err := s.Claim(src, "app", true, identity(t, src))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	where, err := s.SetAside(e, "sparse")
	if err != nil {
		t.Fatal(err)
	}
	if where != s.FailedPath(e) {
		t.Errorf("set aside at %s, want %s", where, s.FailedPath(e))
	}
	if b, err := os.ReadFile(where); err != nil || string(b) != "dump" {
		t.Errorf("set-aside bytes %q, %v", b, err)
	}
	s2, err := Open(s.Dir(), testr.New(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Recover(); err != nil || len(got) != 0 {
		t.Fatalf("Recover after a restart = %+v, %v", got, err)
	}
	want := []string{"failed/" + e.ID + ".data", "failed/" + e.ID + ".json"}
	if diff := cmp.Diff(want, spoolFiles(t, s)); diff != "" {
		t.Errorf("spool (-want +got):\n%s", diff)
	}
}
