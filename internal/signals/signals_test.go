package signals

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("SIGNALS_TEST_HELPER") == "1" {
		helper()
		return
	}
	goleak.VerifyTestMain(m)
}

// helper is the process TestSecondSignalExits signals: it says when it is
// ready and when its context is cancelled, and otherwise waits.
func helper() {
	log := funcr.New(func(prefix, args string) { fmt.Println(args) }, funcr.Options{})
	ctx, stop := Context(context.Background(), log)
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("cancelled")
	time.Sleep(time.Minute)
	fmt.Println("not exited")
}

// TestSecondSignalExits runs a real process: SIGTERM cancels its context and
// it goes on (to drain); a second signal (SIGINT here) ends it with code 1.
func TestSecondSignalExits(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SIGNALS_TEST_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || !strings.Contains(l, want) {
				t.Fatalf("helper printed %q (open %v), want %q", l, ok, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("helper did not print %q within 10s", want)
		}
	}
	expect("ready")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect(`"signal"="terminated"`)
	expect("cancelled")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	expect(`"signal"="interrupt"`)
	for range lines {
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1", err)
	}
}

func TestHandle(t *testing.T) {
	t.Run("first signal cancels, second exits with 1", func(t *testing.T) {
		sigs := make(chan os.Signal, 2)
		var mu sync.Mutex
		var codes []int
		exited := make(chan struct{})
		ctx, stop := handle(context.Background(), sigs, logr.Discard(), func(code int) {
			mu.Lock()
			codes = append(codes, code)
			mu.Unlock()
			close(exited)
		})
		defer stop()
		select {
		case <-ctx.Done():
			t.Fatal("cancelled before any signal")
		case <-time.After(50 * time.Millisecond):
		}
		sigs <- syscall.SIGTERM
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("not cancelled by the first signal")
		}
		mu.Lock()
		if len(codes) != 0 {
			t.Errorf("exit called after one signal: %v", codes)
		}
		mu.Unlock()
		sigs <- syscall.SIGINT
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Fatal("no exit after the second signal")
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(codes) != "[1]" {
			t.Errorf("exit codes %v, want [1]", codes)
		}
	})
	t.Run("stop without a signal cancels and leaves no goroutine", func(t *testing.T) {
		ctx, stop := handle(context.Background(), make(chan os.Signal), logr.Discard(), func(int) { t.Error("exit called") })
		stop()
		stop()
		if ctx.Err() == nil {
			t.Error("not cancelled by stop")
		}
	})
	t.Run("the parent's cancellation is passed on", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		ctx, stop := handle(parent, make(chan os.Signal), logr.Discard(), func(int) { t.Error("exit called") })
		defer stop()
		cancel()
		<-ctx.Done()
	})
}
