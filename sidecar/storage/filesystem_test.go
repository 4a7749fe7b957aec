package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/storagetest"
)

func openFile(t *testing.T, dir string) storage.Bucket {
	t.Helper()
	d, err := contract.ParseDestination("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.Open(d, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tempFiles lists the temporary files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var left []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-dumpcatcher-") {
			left = append(left, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return left
}

func TestFilesystemConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Config{
		New: func(t *testing.T) storagetest.Target {
			dir := t.TempDir()
			return storagetest.Target{
				Bucket:    openFile(t, dir),
				Leftovers: func(t *testing.T) []string { return tempFiles(t, dir) },
			}
		},
	})
}

func TestFilesystemLayout(t *testing.T) {
	dir := t.TempDir()
	b := openFile(t, dir)
	info, err := b.Put(context.Background(), "ns/pod/a.hprof", strings.NewReader("dump"), storage.PutOptions{Metadata: map[string]string{"pod": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	if info.Checksum != "sha256:"+info.Metadata["sha256"] {
		t.Errorf("checksum %q", info.Checksum)
	}
	if got := b.URL("ns/pod/a.hprof"); got != "file://"+dir+"/ns/pod/a.hprof" {
		t.Errorf("URL = %q", got)
	}
	fi, err := os.Stat(filepath.Join(dir, "ns/pod/a.hprof"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (dumps hold secrets)", fi.Mode())
	}
	js, err := os.ReadFile(filepath.Join(dir, "ns/pod/a.hprof.meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Size     int64             `json:"size"`
		SHA256   string            `json:"sha256"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	if m.Size != 4 || m.SHA256 != info.Metadata["sha256"] || m.Metadata["pod"] != "p" {
		t.Errorf("metadata file %s", js)
	}
	// A file dropped in by other means is an object without metadata.
	if err := os.WriteFile(filepath.Join(dir, "manual"), []byte("xyz"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stat(context.Background(), "manual")
	if err != nil || st.Size != 3 || st.Checksum != "" {
		t.Errorf("Stat(manual) = %+v, %v", st, err)
	}
	// Reserved names are not keys.
	for _, k := range []string{"a.hprof.meta.json", "x/.tmp-dumpcatcher-1/y"} {
		if _, err := b.Put(context.Background(), k, strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", k, err)
		}
	}
}

func TestFilesystemSymlinkCannotEscape(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../"+filepath.Base(outside), filepath.Join(dir, "rel")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := openFile(t, dir)
	for _, k := range []string{"link/x", "rel/x", "link/sub/x"} {
		if _, err := b.Put(context.Background(), k, strings.NewReader("x"), storage.PutOptions{}); err == nil {
			t.Errorf("Put(%q) through a symlink out of the root succeeded", k)
		}
	}
	for _, k := range []string{"link/secret", "rel/secret"} {
		if _, err := b.Stat(context.Background(), k); err == nil {
			t.Errorf("Stat(%q) through a symlink out of the root succeeded", k)
		}
		if rc, err := b.Get(context.Background(), k); err == nil {
			rc.Close()
			t.Errorf("Get(%q) through a symlink out of the root succeeded", k)
		}
		if err := b.Delete(context.Background(), k); err == nil {
			if _, serr := os.Stat(filepath.Join(outside, "secret")); serr != nil {
				t.Errorf("Delete(%q) removed a file outside the root", k)
			}
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("files appeared outside the root: %v", entries)
	}
}

func TestFilesystemRootMustExist(t *testing.T) {
	d, err := contract.ParseDestination("file://" + filepath.Join(t.TempDir(), "not-mounted"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Open(d, storage.Options{}); err == nil || !strings.Contains(err.Error(), "mounted") {
		t.Fatalf("Open of a missing directory: %v, want an error asking whether the volume is mounted", err)
	}
}
