package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
)

func listKeys(t *testing.T, l storage.Lister, prefix string) map[string]storage.ObjectInfo {
	t.Helper()
	got := map[string]storage.ObjectInfo{}
	if err := l.List(context.Background(), prefix, func(oi storage.ObjectInfo) error { got[oi.Key] = oi; return nil }); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

// TestFilesystemListNoLinks: symbolic links (to files or directories, in
// the tree or as the prefix itself) are not followed nor listed, so a
// namespace directory that is a link to another namespace's lists nothing.
func TestFilesystemListNoLinks(t *testing.T) {
	dir := t.TempDir()
	b := openFile(t, dir).(storage.Lister)
	ctx := context.Background()
	for _, k := range []string{"a/w/p/c/dump", "secret/w/p/c/dump"} {
		if _, err := b.(storage.Bucket).Put(ctx, k, strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"a/w/p/c/tofile":  filepath.Join(outside, "f"),
		"a/w/todir":       outside,
		"a/w/tosecret":    filepath.Join(dir, "secret"),
		"linked":          filepath.Join(dir, "secret"),
		"a/w/p/c/relfile": "../../../../secret/w/p/c/dump",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	got := listKeys(t, b, "a/")
	if len(got) != 1 || got["a/w/p/c/dump"].Size != 1 {
		t.Errorf("List(a/) = %v, want only a/w/p/c/dump", got)
	}
	if got := listKeys(t, b, "linked/"); len(got) != 0 {
		t.Errorf("List(linked/) through a link = %v, want nothing", got)
	}
	if got := listKeys(t, b, "a/w/tosecret/"); len(got) != 0 {
		t.Errorf("List(a/w/tosecret/) through a link = %v, want nothing", got)
	}
}

// TestS3ListReturnsMetadataFromMinIO: MinIO's listing extension fills
// Metadata, so a list shows "complete" without a HEAD per object.
func TestS3ListReturnsMetadataFromMinIO(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	b := openS3(t, srv, "", "listmeta", storage.Options{}).(*storage.S3)
	if _, err := b.Put(context.Background(), "ns/k", strings.NewReader("abc"), storage.PutOptions{
		Metadata: map[string]string{"complete": "false", "file": "a%20b"}, ContentEncoding: "zstd",
	}); err != nil {
		t.Fatal(err)
	}
	oi := listKeys(t, b, "ns/")["ns/k"]
	if oi.Metadata["complete"] != "false" || oi.Metadata["file"] != "a%20b" || oi.Metadata["sha256"] == "" {
		t.Errorf("listed metadata = %v, want complete=false, file=a%%20b and a sha256", oi.Metadata)
	}
	if oi.ContentEncoding != "zstd" {
		t.Errorf("listed content encoding = %q, want zstd", oi.ContentEncoding)
	}
}

// TestS3ListStopsItsGoroutine: List returning early (fn's error) ends
// minio-go's listing goroutine.
func TestS3ListStopsItsGoroutine(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	b := openS3(t, srv, "", "liststop", storage.Options{}).(*storage.S3)
	for i := range 1200 { // more than one page of 1000
		if _, err := b.Put(context.Background(), fmt.Sprintf("ns/k%04d", i), strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := goleak.IgnoreCurrent()
	stop := errors.New("stop")
	if err := b.List(context.Background(), "ns/", func(storage.ObjectInfo) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("List = %v, want stop", err)
	}
	goleak.VerifyNone(t, before)
}
