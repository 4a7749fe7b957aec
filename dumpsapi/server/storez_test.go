package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/internal/registry"
	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

type downStore struct{ registry.Store }

func (downStore) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return errors.New("dial tcp 10.0.0.9:9000: connect: connection refused")
}

func TestStorez(t *testing.T) {
	d, err := contract.ParseDestination("file://" + t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := storage.NewFilesystem(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Put(context.Background(), "ns/a", http.NoBody, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dests []registry.Destination
		code  int
		body  string
	}{
		{"up", []registry.Destination{{Name: "nas", Store: fs}}, 200, "[+]store nas ok\n"},
		{"one down", []registry.Destination{{Name: "nas", Store: fs}, {Name: "default", Store: downStore{fs}}}, 503,
			"[+]store nas ok\n[-]store default failed: dial tcp 10.0.0.9:9000: connect: connection refused\n"},
	} {
		rec := httptest.NewRecorder()
		storez(&registry.Stores{Destinations: tc.dests}).ServeHTTP(rec, httptest.NewRequest("GET", "/storez", nil))
		if rec.Code != tc.code || rec.Body.String() != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, rec.Code, rec.Body, tc.code, tc.body)
		}
	}
}
