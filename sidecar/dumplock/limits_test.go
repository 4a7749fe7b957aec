package dumplock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// hostileEnv makes the test binary a hostile client of the socket it names
// (see hostile): it opens as many connections as it can, up to
// hostileConns, reports how many on stdout and keeps them idle until its
// stdin closes.
const hostileEnv = "DUMPLOCK_TEST_HOSTILE_SOCKET"

const hostileConns = 2000

func hostile(socket string) {
	var conns []net.Conn
	for range hostileConns {
		c, err := net.Dial("unix", socket)
		if err != nil {
			continue // a full backlog: go on, as an attacker would
		}
		conns = append(conns, c)
	}
	fmt.Printf("opened %d\n", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// lockLine sends one request line and returns the answer line.
func lockLine(t *testing.T, socket, req string) string {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\n", req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("answer to %q: %v", req, err)
	}
	return strings.TrimSpace(line)
}

// TestSocketTTLCap: a client may not take the workload's lock for longer
// than the pod can live (its grace period plus the margin); a lock of years
// would make every other pod of the workload skip its preStop dump after
// this pod's sidecar is killed.
func TestSocketTTLCap(t *testing.T) {
	store := fileStore(t)
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	p := startPod(t, Locks{Store: store}, key, "shop/orders-a")
	for _, req := range []string{"LOCK 9000000000000", "LOCK 9223372036854775807", fmt.Sprintf("LOCK %d", (3605*time.Second).Milliseconds()+1)} {
		got := lockLine(t, p.socket, req)
		if !strings.HasPrefix(got, "UNAVAILABLE ttl ") || !strings.Contains(got, "at most 1h0m5s") {
			t.Errorf("%s: answer %q; want UNAVAILABLE ttl ... at most 1h0m5s", req, got)
		}
		if _, _, err := store.ReadVersion(context.Background(), key); err == nil {
			t.Fatalf("%s: a lock object was written", req)
		}
	}
	// The longest lock the hook asks for (the largest grace period the
	// webhook sets, plus the margin) is granted.
	rel, err := request(t, p.socket, 3605*time.Second)
	if err != nil {
		t.Fatalf("LOCK of 3605 s: %v", err)
	}
	rel()

	// A sidecar told its pod's grace period caps at that plus the margin.
	socket := serve(t, &Server{Locks: Locks{Store: store}, Key: ".dumpcatcher/locks/shop/deployment/web.json", Holder: "shop/web-a",
		MaxTTL: MaxTTL(30), Log: testr.New(t)})
	if got := lockLine(t, socket, "LOCK 35001"); got != "UNAVAILABLE ttl 35001ms is too long: a dump lock lasts at most 35s (the pod's grace period plus 5s)" {
		t.Errorf("LOCK 35001 with a grace period of 30 s: %q", got)
	}
	if rel, err = request(t, socket, 35*time.Second); err != nil {
		t.Fatalf("LOCK 35000 with a grace period of 30 s: %v", err)
	}
	rel()
}

// serve runs s on a socket of its own until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "dumpcatcher.sock")
	serveAt(t, s, socket)
	return socket
}

// serveAt runs s on socket until the test ends.
func serveAt(t *testing.T, s *Server, socket string) {
	t.Helper()
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// TestSocketHoldBoundedByTTL: a client that keeps its connection open past
// its lease does not hold anything longer: the server closes the connection
// when the lease expires and releases it.
func TestSocketHoldBoundedByTTL(t *testing.T) {
	store := fileStore(t)
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	socket := serve(t, &Server{Locks: Locks{Store: store}, Key: key, Holder: "shop/orders-a", Log: testr.New(t)})
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "LOCK 300\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("LOCK 300: %q %v", line, err)
	}
	start := time.Now()
	if _, err := br.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("after the lease: %v; want the server to close the connection", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the server closed the connection after %v; want about 300ms", d)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		data, _, err := store.ReadVersion(context.Background(), key)
		var rec Record
		if err == nil && json.Unmarshal(data, &rec) == nil && rec.Released {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock object %s (%v); want released", data, err)
		}
	}
}

// copyTestBinary copies the test binary where uid 1000 may run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dumplock-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dumplock.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// fds counts this process's open file descriptors.
func fds(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestSocketConnectionFlood: a process of the app's uid opens thousands of
// idle connections to the socket. The sidecar's goroutines and descriptors
// stay bounded, the idle connections are dropped, and a dump command's
// LOCK still works.
func TestSocketConnectionFlood(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the hostile client as the app's uid")
	}
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	// The socket in a directory uid 1000 may enter (t.TempDir's may not be).
	dir, err := os.MkdirTemp("", "dumplock-flood-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &pod{socket: filepath.Join(dir, "dumpcatcher.sock")}
	serveAt(t, &Server{Locks: Locks{Store: fileStore(t)}, Key: key, Holder: "shop/orders-a", Log: testr.New(t)}, p.socket)
	time.Sleep(100 * time.Millisecond)
	baseG, baseFD := runtime.NumGoroutine(), fds(t)

	cmd := exec.Command(copyTestBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), hostileEnv+"="+p.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("hostile client: %v", err)
	}
	opened, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "opened "))
	if opened < 100 {
		t.Fatalf("the hostile client opened only %d connections (%q)", opened, line)
	}
	// Give the server time to accept what it will.
	time.Sleep(500 * time.Millisecond)
	g, fd := runtime.NumGoroutine()-baseG, fds(t)-baseFD
	t.Logf("%d hostile connections: +%d goroutines, +%d descriptors", opened, g, fd)
	if limit := DefaultMaxConns + 8; g > limit || fd > limit {
		t.Errorf("with %d idle connections the sidecar grew by %d goroutines and %d descriptors; want at most %d",
			opened, g, fd, limit)
	}
	// The dump command's LOCK goes through while the hostile client still
	// holds its connections.
	start := time.Now()
	rel, err := request(t, p.socket, time.Minute)
	if err != nil {
		t.Fatalf("LOCK during the flood: %v", err)
	}
	rel()
	t.Logf("LOCK during the flood took %v", time.Since(start).Round(time.Millisecond))
}

// TestSocketLeaseGenerations: pod a's first dump command holds the lease
// past its expiry (its connection still open); a second dump command of the
// pod then takes a fresh lease. The first one's leave must not release the
// second one's lease.
func TestSocketLeaseGenerations(t *testing.T) {
	store := fileStore(t)
	clk := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	const key = ".dumpcatcher/locks/shop/deployment/orders.json"
	core, logs := observer.New(zapcore.InfoLevel)
	socket := filepath.Join(t.TempDir(), "dumpcatcher.sock")
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Locks: Locks{Store: store, Now: clk.Now}, Key: key, Holder: "shop/orders-a", Log: zapr.NewLogger(zap.New(core))}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	relOld, err := request(t, socket, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute) // the first lease expired; its holder is still connected
	relNew, err := request(t, socket, time.Minute)
	if err != nil {
		t.Fatalf("LOCK after the first lease expired: %v", err)
	}
	defer relNew()
	released := func() int {
		return logs.FilterMessageSnippet("dump lock released").Len() + logs.FilterMessageSnippet("dump lock let go").Len()
	}
	before := released()
	relOld()
	for deadline := time.Now().Add(5 * time.Second); released() == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the old holder's leave was not logged: %v", logs.All())
		}
	}
	data, _, err := store.ReadVersion(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(time.Minute); rec.Released || !rec.Expires.Equal(want) {
		t.Fatalf("lock object after the old holder left: %s; want held until %v", data, want)
	}
	// Another pod still finds it taken.
	_, err = Locks{Store: store, Now: clk.Now}.Acquire(context.Background(), key, "shop/orders-b", time.Minute)
	var taken *TakenError
	if !errors.As(err, &taken) {
		t.Fatalf("another pod while the new lease lasts: %v; want TakenError", err)
	}
}
