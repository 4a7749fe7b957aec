package memory_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/memory"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Config{
		New: func(t *testing.T) storagetest.Target {
			b := memory.New("dumps")
			return storagetest.Target{Bucket: b, Leftovers: func(*testing.T) []string { return b.Leftovers() }}
		},
	})
}

var errOutage = errors.New("connection refused")

// TestHooks: each fault hook fails or stalls what it names, only that, and
// the bucket works again once it is removed; a failed Put publishes nothing.
func TestHooks(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		hook memory.Hook
		// failPut, failStat: whether Put and Stat fail with errOutage.
		failPut, failStat bool
	}{
		{"no hook", nil, false, false},
		{"every op", memory.Fail(errOutage), true, true},
		{"put only", memory.Fail(errOutage, memory.OpPut), true, false},
		{"at the end of a put", memory.Fail(errOutage, memory.OpPutCommit), true, false},
		{"stat only", memory.Fail(errOutage, memory.OpStat), false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := memory.New("dumps")
			if _, err := b.Put(ctx, "old", strings.NewReader("before"), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			b.SetHook(tc.hook)
			_, err := b.Put(ctx, "k", strings.NewReader("data"), storage.PutOptions{})
			if got := errors.Is(err, errOutage); got != tc.failPut || (err != nil && !got) {
				t.Errorf("Put: %v, want failure=%v", err, tc.failPut)
			}
			_, err = b.Stat(ctx, "old")
			if got := errors.Is(err, errOutage); got != tc.failStat || (err != nil && !got) {
				t.Errorf("Stat: %v, want failure=%v", err, tc.failStat)
			}
			b.SetHook(nil)
			var keys []string
			for _, o := range b.Objects() {
				keys = append(keys, o.Key)
			}
			want := "k old"
			if tc.failPut {
				want = "old"
			}
			if strings.Join(keys, " ") != want {
				t.Errorf("objects %q, want %q", keys, want)
			}
			if n := b.Calls(memory.OpPut); n != 2 {
				t.Errorf("%d Put calls counted, want 2", n)
			}
			if left := b.Leftovers(); len(left) != 0 {
				t.Errorf("leftovers %q", left)
			}
		})
	}
}

// TestStall: a stalled Put waits until released, or fails with its
// context's error.
func TestStall(t *testing.T) {
	b := memory.New("dumps")
	release := make(chan struct{})
	b.SetHook(memory.Stall(release, memory.OpPut))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled Put with a deadline: %v, want context.DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Put(context.Background(), "k", strings.NewReader("x"), storage.PutOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Put returned %v while stalled", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if objs := b.Objects(); len(objs) != 1 || !bytes.Equal(objs[0].Data, []byte("x")) {
		t.Fatalf("objects %+v", objs)
	}
}
