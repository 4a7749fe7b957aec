package dumplock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"go.uber.org/goleak"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
)

func TestMain(m *testing.M) {
	if socket := os.Getenv(hostileEnv); socket != "" {
		hostile(socket)
		return
	}
	goleak.VerifyTestMain(m)
}

// clock is a settable time for expiry tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func fileStore(t *testing.T) *storage.Filesystem {
	t.Helper()
	d, err := contract.ParseDestination("file://" + t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := storage.NewFilesystem(d)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// s3Store is a prefix of a real MinIO.
func s3Store(t *testing.T) storage.Conditional {
	t.Helper()
	srv := miniotest.Start(t, miniotest.Options{})
	d, err := contract.ParseDestination(srv.URL("dumps"))
	if err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	srv.WriteCredentials(t, creds)
	b, err := storage.Open(d, storage.Options{CredentialsDir: creds, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b.(storage.Conditional)
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		ns, wl, want string
		ok           bool
	}{
		{"shop", "deployment/orders", ".dumpcatcher/locks/shop/deployment/orders.json", true},
		{"shop", "pod/orders-1", ".dumpcatcher/locks/shop/pod/orders-1.json", true},
		{"", "deployment/orders", "", false},
		{"shop", "orders", "", false},
		{"shop", "deployment/", "", false},
		{"shop", "deployment/a/b", "", false},
		{"..", "deployment/a", "", false},
	} {
		got, err := Key(tc.ns, tc.wl)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Key(%q, %q) = %q, %v; want %q (ok %v)", tc.ns, tc.wl, got, err, tc.want, tc.ok)
		}
		if err == nil {
			if verr := storage.ValidateKey(got); verr != nil {
				t.Errorf("Key(%q, %q) = %q is not a valid object key: %v", tc.ns, tc.wl, got, verr)
			}
		}
	}
}

// TestLocks runs the lock's life against both backends: one holder at a
// time, expiry of a holder that never released, release, garbage.
func TestLocks(t *testing.T) {
	for name, open := range map[string]func(*testing.T) storage.Conditional{
		"file": func(t *testing.T) storage.Conditional { return fileStore(t) },
		"s3":   s3Store,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			store := open(t)
			clk := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
			l := Locks{Store: store, Now: clk.Now}
			const key = ".dumpcatcher/locks/shop/deployment/orders.json"

			a, err := l.Acquire(ctx, key, "shop/orders-a", 30*time.Second)
			if err != nil {
				t.Fatalf("first Acquire: %v", err)
			}
			if want := clk.Now().Add(30 * time.Second); !a.Expires().Equal(want) {
				t.Fatalf("expires %v, want %v", a.Expires(), want)
			}
			_, err = l.Acquire(ctx, key, "shop/orders-b", 30*time.Second)
			var taken *TakenError
			if !errors.As(err, &taken) || taken.Holder != "shop/orders-a" || !taken.Expires.Equal(a.Expires()) {
				t.Fatalf("second Acquire while held: %v; want TakenError by shop/orders-a until %v", err, a.Expires())
			}

			// a dies without releasing: its lock expires.
			clk.Add(29 * time.Second)
			if _, err := l.Acquire(ctx, key, "shop/orders-b", 30*time.Second); !errors.As(err, &taken) {
				t.Fatalf("Acquire 1 s before expiry: %v; want TakenError", err)
			}
			clk.Add(time.Second)
			b, err := l.Acquire(ctx, key, "shop/orders-b", 30*time.Second)
			if err != nil {
				t.Fatalf("Acquire after expiry: %v", err)
			}
			// a's late release must not free b's lock.
			if err := a.Release(ctx); err != nil {
				t.Fatalf("stale Release: %v", err)
			}
			if _, err := l.Acquire(ctx, key, "shop/orders-c", 30*time.Second); !errors.As(err, &taken) || taken.Holder != "shop/orders-b" {
				t.Fatalf("Acquire after a stale release: %v; want TakenError by shop/orders-b", err)
			}
			// b releases: c gets it at once.
			if err := b.Release(ctx); err != nil {
				t.Fatal(err)
			}
			c, err := l.Acquire(ctx, key, "shop/orders-c", 30*time.Second)
			if err != nil {
				t.Fatalf("Acquire after release: %v", err)
			}
			data, _, err := store.ReadVersion(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var rec Record
			if err := json.Unmarshal(data, &rec); err != nil || rec.Holder != "shop/orders-c" || rec.Released || !rec.Expires.Equal(c.Expires()) {
				t.Fatalf("lock object %s (%v); want held by shop/orders-c until %v", data, err, c.Expires())
			}

			// Something that is not a lock record is taken over.
			const junk = ".dumpcatcher/locks/shop/deployment/junk.json"
			if _, err := store.WriteIf(ctx, junk, []byte("not json"), ""); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Acquire(ctx, junk, "shop/orders-a", time.Second); err != nil {
				t.Fatalf("Acquire over garbage: %v", err)
			}
			if _, err := l.Acquire(ctx, key, "x", 0); err == nil {
				t.Fatal("Acquire with ttl 0 succeeded")
			}
		})
	}
}

// TestAcquireRace: of pods racing for a free lock, and then for an expired
// one, exactly one wins each time.
func TestAcquireRace(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	l := Locks{Store: fileStore(t), Now: clk.Now}
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	race := func() {
		t.Helper()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				me := fmt.Sprintf("shop/orders-%d", i)
				_, err := l.Acquire(ctx, key, me, 10*time.Second)
				var taken *TakenError
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, me)
					mu.Unlock()
				case !errors.As(err, &taken):
					t.Errorf("%s: %v", me, err)
				}
			}()
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("winners %q; want exactly one", winners)
		}
	}
	race()
	clk.Add(11 * time.Second)
	race()
}

// pod is one pod's lock server on a socket of its own.
type pod struct {
	socket string
	stop   func()
}

func startPod(t *testing.T, l Locks, key, holder string) *pod {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "dumpcatcher.sock")
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Locks: l, Key: key, Holder: holder, Log: testr.New(t)}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	p := &pod{socket: socket}
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(p.stop)
	return p
}

func request(t *testing.T, socket string, ttl time.Duration) (func(), error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	release, _, err := Request(ctx, socket, ttl)
	return release, err
}

// TestSocket runs two pods of one workload through their sidecars' sockets
// against a real MinIO: one dumps, the other skips; the lock is released
// when the holder's connection closes, whether it closes on purpose or
// because the dump command died (the kernel closes it then).
func TestSocket(t *testing.T) {
	store := s3Store(t)
	l := Locks{Store: store}
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	a := startPod(t, l, key, "shop/orders-a")
	b := startPod(t, l, key, "shop/orders-b")

	relA, err := request(t, a.socket, time.Minute)
	if err != nil {
		t.Fatalf("pod a: %v", err)
	}
	// A second container of pod a shares the lease.
	relA2, err := request(t, a.socket, time.Minute)
	if err != nil {
		t.Fatalf("pod a, second container: %v", err)
	}
	_, err = request(t, b.socket, time.Minute)
	var taken *TakenError
	if !errors.As(err, &taken) || taken.Holder != "shop/orders-a" {
		t.Fatalf("pod b while a dumps: %v; want TakenError by shop/orders-a", err)
	}
	relA()
	if _, err := request(t, b.socket, time.Minute); !errors.As(err, &taken) {
		t.Fatalf("pod b while a's second container dumps: %v; want TakenError", err)
	}
	relA2()
	relB := waitLock(t, b.socket)
	// While b holds it, a stopped sidecar (pod a going away) changes nothing.
	a.stop()
	if _, err := request(t, a.socket, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("request to a stopped sidecar: %v; want ErrUnavailable", err)
	}
	relB()

	// A sidecar that is stopped while its pod holds the lock releases it.
	c := startPod(t, l, key, "shop/orders-c")
	waitLock(t, c.socket)
	c.stop()
	d := startPod(t, l, key, "shop/orders-d")
	waitLock(t, d.socket)()
}

// waitLock requests the lock until the previous holder's release has
// arrived (it is asynchronous to the client's close).
func waitLock(t *testing.T, socket string) func() {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rel, err := request(t, socket, time.Minute)
		if err == nil {
			return rel
		}
		var taken *TakenError
		if !errors.As(err, &taken) || time.Now().After(deadline) {
			t.Fatalf("lock not free after the holder let go: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSocketKilledHolder: a holder that died without releasing (its sidecar
// killed with the pod) blocks the lock only until it expires.
func TestSocketKilledHolder(t *testing.T) {
	l := Locks{Store: fileStore(t)}
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	if _, err := l.Acquire(context.Background(), key, "shop/orders-dead", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b := startPod(t, l, key, "shop/orders-b")
	var taken *TakenError
	if _, err := request(t, b.socket, time.Minute); !errors.As(err, &taken) || taken.Holder != "shop/orders-dead" {
		t.Fatalf("while the dead holder's lock lasts: %v; want TakenError", err)
	}
	time.Sleep(time.Until(taken.Expires))
	rel, err := request(t, b.socket, time.Minute)
	if err != nil {
		t.Fatalf("after the dead holder's lock expired: %v", err)
	}
	rel()
}

func TestSocketUnavailable(t *testing.T) {
	// No workload known.
	p := startPod(t, Locks{Store: fileStore(t)}, "", "shop/orders-a")
	if _, err := request(t, p.socket, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("sidecar without a workload: %v; want ErrUnavailable", err)
	}
	// No sidecar.
	if _, err := request(t, filepath.Join(t.TempDir(), "none.sock"), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no socket: %v; want ErrUnavailable", err)
	}
	// A sidecar that never answers: the client's context bounds the wait.
	socket := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := Request(ctx, socket, time.Minute); !errors.Is(err, ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Fatalf("mute sidecar: %v after %v; want ErrUnavailable after about 300ms", err, time.Since(start))
	}
	// A store that fails.
	q := startPod(t, Locks{Store: failing{}}, ".dumpcatcher/locks/a/b/c.json", "shop/orders-a")
	if _, err := request(t, q.socket, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store without conditional writes: %v; want ErrUnavailable", err)
	}
	// A bad request gets an answer, not a hang.
	conn, err := net.Dial("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "LOCK\n")
	buf := make([]byte, 100)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := conn.Read(buf)
	if got := string(buf[:n]); len(got) < 11 || got[:11] != "UNAVAILABLE" {
		t.Fatalf("answer to a bad request: %q", got)
	}
}

type failing struct{}

func (failing) ReadVersion(context.Context, string) ([]byte, string, error) {
	return nil, "", storage.ErrNotExist
}

func (failing) WriteIf(context.Context, string, []byte, string) (string, error) {
	return "", storage.ErrNotSupported
}

func TestWhere(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "dumpcatcher.sock")
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Log: testr.New(t), Where: func(container, file string) (string, error) {
		if container == "" {
			container = "only"
		}
		if file == "bad" {
			return "", errors.New("no\nsuch")
		}
		return "s3://b/p/" + container + "/<time>-" + file, nil
	}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	for _, tc := range []struct{ container, file, want, err string }{
		{"app", "manual-x.hprof", "s3://b/p/app/<time>-manual-x.hprof", ""},
		{"", "manual-x.hprof", "s3://b/p/only/<time>-manual-x.hprof", ""},
		{"app", "bad", "", "dump lock unavailable: no such"},
		{"app", "a b", "", "names with spaces"},
	} {
		got, err := Where(context.Background(), socket, tc.container, tc.file)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Where(%q, %q) = %q, %v; want %q, %q", tc.container, tc.file, got, err, tc.want, tc.err)
		}
	}
}
