package hproftest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
)

// HoldProgram is the source of Hold.java: it keeps about args[0] MiB
// reachable in 64 KiB arrays (never humongous in G1), runs System.gc(),
// prints "ready <arrays>" and sleeps.
const HoldProgram = `import java.util.ArrayList;
import java.util.List;

public class Hold {
    static final List<long[]> live = new ArrayList<>();
    public static void main(String[] args) throws Exception {
        int mb = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        for (int i = 0; i < mb * 16; i++) {
            live.add(new long[8192 - 2]);
        }
        System.gc();
        System.out.println("ready " + live.size());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
`

// Holder is a running JVM that holds a live set and sleeps: the target of
// on-demand and preStop dumps.
type Holder struct {
	Cmd *exec.Cmd
	// PID of the JVM.
	PID int
}

// HoldSpec describes a Holder.
type HoldSpec struct {
	// LiveMB is the live set in MiB.
	LiveMB int
	// Opts are JVM options, e.g. -Xmx256m.
	Opts []string
	// UID and GID run the JVM as another user (root only); zero: this one.
	UID, GID uint32
}

// Hold compiles and starts a Holder and waits until its live set is
// allocated. The JVM is killed, and the files a killed JVM leaves in /tmp
// removed, when the test ends. It skips the test without a JDK unless
// DUMPCATCHER_REQUIRE_REAL is set.
func Hold(t testing.TB, s HoldSpec) *Holder {
	t.Helper()
	java, javac := realpart.Java(t)
	classes, err := os.MkdirTemp("", "hproftest-hold")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(classes) })
	src := filepath.Join(classes, "Hold.java")
	if err := os.WriteFile(src, []byte(HoldProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, src).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	if err := os.Chmod(classes, 0o755); err != nil { // readable by the JVM's uid
		t.Fatal(err)
	}
	args := append(append([]string{}, s.Opts...), "-cp", classes, "Hold", fmt.Sprint(s.LiveMB))
	cmd := exec.Command(java, args...)
	cmd.Dir = classes
	if s.UID != 0 || s.GID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: s.UID, Gid: s.GID}}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped JVM dies too
		_ = cmd.Process.Kill()
		<-exited
		os.Remove(fmt.Sprintf("/tmp/.java_pid%d", pid))
		perf, _ := filepath.Glob(fmt.Sprintf("/tmp/hsperfdata_*/%d", pid))
		for _, f := range perf {
			os.Remove(f)
		}
	})
	ready := make(chan struct{})
	var out strings.Builder
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				close(ready)
				break
			}
			out.WriteString(sc.Text() + "\n")
		}
		for sc.Scan() {
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("the JVM exited before it was ready:\n%s", out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the JVM was not ready within 60s")
	}
	return &Holder{Cmd: cmd, PID: pid}
}
