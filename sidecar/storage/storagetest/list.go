package storagetest

import (
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

func lister(t *testing.T, b storage.Bucket) storage.Lister {
	t.Helper()
	l, ok := b.(storage.Lister)
	if !ok {
		t.Skipf("%T does not implement storage.Lister", b)
	}
	return l
}

// listAll lists prefix into key -> ObjectInfo.
func listAll(t *testing.T, l storage.Lister, prefix string) map[string]storage.ObjectInfo {
	t.Helper()
	got := map[string]storage.ObjectInfo{}
	if err := l.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		if _, dup := got[oi.Key]; dup {
			t.Errorf("List(%q) returned %q twice", prefix, oi.Key)
		}
		got[oi.Key] = oi
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func keys(m map[string]storage.ObjectInfo) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// list: List returns exactly the objects under the prefix (not its
// neighbours "ns-other/..." nor "ns"), with their sizes, and the metadata
// Put stored when the listing returns metadata at all.
func (s suite) list(t *testing.T, tg Target) {
	l := lister(t, tg.Bucket)
	md := map[string]string{"pod": "web-1", "complete": "true"}
	put(t, tg.Bucket, "ns/w/p/c/one", strings.NewReader("one"), storage.PutOptions{Metadata: md, ContentEncoding: "gzip"})
	put(t, tg.Bucket, "ns/w/p/two", strings.NewReader("second"), storage.PutOptions{})
	put(t, tg.Bucket, "ns-other/w/p/c/three", strings.NewReader("x"), storage.PutOptions{})
	put(t, tg.Bucket, "nsfile", strings.NewReader("x"), storage.PutOptions{})

	got := listAll(t, l, "ns/")
	if diff := cmp.Diff([]string{"ns/w/p/c/one", "ns/w/p/two"}, keys(got)); diff != "" {
		t.Fatalf("List(ns/) keys (-want +got):\n%s", diff)
	}
	one := got["ns/w/p/c/one"]
	if one.Size != 3 || got["ns/w/p/two"].Size != 6 {
		t.Errorf("sizes: one %d, two %d; want 3, 6", one.Size, got["ns/w/p/two"].Size)
	}
	if one.LastModified.IsZero() {
		t.Error("LastModified is zero")
	}
	if one.Metadata != nil {
		for k, v := range md {
			if one.Metadata[k] != v {
				t.Errorf("listed metadata %q = %q, want %q (all: %v)", k, one.Metadata[k], v, one.Metadata)
			}
		}
		if one.Metadata[storage.MetaSHA256] != sha([]byte("one")) {
			t.Errorf("listed sha256 = %q, want %q", one.Metadata[storage.MetaSHA256], sha([]byte("one")))
		}
	}
	if n := len(listAll(t, l, "")); n != 4 {
		t.Errorf("List(\"\") found %d objects, want 4", n)
	}
	if n := len(listAll(t, l, "missing/")); n != 0 {
		t.Errorf("List(missing/) found %d objects", n)
	}
	if n := len(listAll(t, l, "ns/w/p/two/")); n != 0 {
		t.Errorf("List under an object found %d objects", n)
	}

	stop := errors.New("stop")
	calls := 0
	err := l.List(context.Background(), "ns/", func(storage.ObjectInfo) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with a failing fn: %v after %d calls, want stop after 1", err, calls)
	}
	for _, bad := range []string{"ns", "../", "ns//", "/ns/", "ns/../"} {
		if err := l.List(context.Background(), bad, func(storage.ObjectInfo) error { return nil }); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.List(ctx, "ns/", func(storage.ObjectInfo) error { return nil }); err == nil {
		t.Error("List with a cancelled context succeeded")
	}
}

// getRange: GetRange returns the asked bytes, to the end for a negative
// length, and ErrNotExist for a missing key.
func (s suite) getRange(t *testing.T, tg Target) {
	l := lister(t, tg.Bucket)
	const data = "0123456789"
	put(t, tg.Bucket, "r/obj", strings.NewReader(data), storage.PutOptions{})
	for _, tc := range []struct {
		off, n int64
		want   string
	}{
		{0, -1, data},
		{0, 10, data},
		{3, 4, "3456"},
		{9, 1, "9"},
		{5, -1, "56789"},
		{4, 0, ""},
		{8, 5, "89"},
	} {
		rc, err := l.GetRange(context.Background(), "r/obj", tc.off, tc.n)
		if err != nil {
			t.Errorf("GetRange(%d, %d): %v", tc.off, tc.n, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(b) != tc.want {
			t.Errorf("GetRange(%d, %d) = %q, %v; want %q", tc.off, tc.n, b, err, tc.want)
		}
	}
	if _, err := l.GetRange(context.Background(), "r/missing", 0, 1); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("GetRange of a missing key = %v, want ErrNotExist", err)
	}
	if _, err := l.GetRange(context.Background(), "r/obj", -1, 1); err == nil {
		t.Error("GetRange with a negative offset succeeded")
	}
	if _, err := l.GetRange(context.Background(), "../obj", 0, 1); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("GetRange(../obj) = %v, want ErrInvalidKey", err)
	}
}
