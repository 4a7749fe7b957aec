package jvm

import (
	"bufio"
	"fmt"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/syncbuf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
)

// testUID and testGID run the non-root JVMs.
const testUID, testGID = 1000, 1000

// jdk is the JDK the tests use, with Hold compiled into a directory every
// uid can read. TestMain sets it up once.
type jdk struct {
	java, jcmd, classes string
	err                 error
}

var testJDK jdk // written once by TestMain before any test runs

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(m.Run()) // a helper process: see TestAsJVMUser
	}
	testJDK = setupJDK()
	code := m.Run()
	if testJDK.classes != "" {
		os.RemoveAll(testJDK.classes)
	}
	if code == 0 {
		// As goleak.VerifyTestMain, which would exit before the cleanup.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func setupJDK() jdk {
	var j jdk
	var err error
	var javac string
	for _, x := range []struct {
		dst  *string
		name string
	}{{&j.java, "java"}, {&javac, "javac"}, {&j.jcmd, "jcmd"}} {
		if *x.dst, err = exec.LookPath(x.name); err != nil {
			return jdk{err: err}
		}
	}
	dir, err := os.MkdirTemp("", "dumpcatcher-jvm-classes-")
	if err != nil {
		return jdk{err: err}
	}
	j.classes = dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return jdk{classes: dir, err: err}
	}
	src := filepath.Join(dir, "Hold.java")
	if err := os.WriteFile(src, []byte(hproftest.HoldProgram), 0o644); err != nil {
		return jdk{classes: dir, err: err}
	}
	if out, err := exec.Command(javac, "-d", dir, src).CombinedOutput(); err != nil {
		return jdk{classes: dir, err: fmt.Errorf("javac: %v\n%s", err, out)}
	}
	return j
}

// needJDK skips the test without a JDK, or fails it when
// DUMPCATCHER_REQUIRE_REAL is set.
func needJDK(t *testing.T) jdk {
	t.Helper()
	realpart.Require(t, fmt.Sprintf("a JDK is needed (install one, 17 or later): %v", testJDK.err), testJDK.err == nil)
	return testJDK
}

// needRoot skips tests that switch uids.
func needRoot(t *testing.T) {
	t.Helper()
	realpart.Root(t)
}

// openDir returns a fresh directory every uid may write into (like the
// emptyDir of the shared volume), removed at the end of the test.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dumpcatcher-jvm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

type jvmSpec struct {
	// opts are JVM options; liveMB is what Hold keeps reachable.
	opts   []string
	liveMB int
	// env is added to a minimal environment.
	env []string
	// uid and gid run the JVM as another user (0: as this process).
	uid, gid int
	// shell starts the JVM as the child of `sh -c`.
	shell bool
	// java overrides the java binary.
	java string
	// cwd is the JVM's working directory (default: a fresh one every uid
	// may write into).
	cwd string
	// cloneflags start the JVM in new namespaces (syscall.CLONE_NEWNS: a
	// mount namespace of its own, like another container's).
	cloneflags uintptr
}

type testJVM struct {
	Process
	cmd *exec.Cmd
	out *syncbuf.Buffer
	cwd string
}

// startJVM starts Hold and waits until it printed "ready" (after its live
// set is allocated and System.gc() ran). The JVM, and its shell, are killed
// when the test ends.
func startJVM(t *testing.T, s jvmSpec) *testJVM {
	t.Helper()
	j := needJDK(t)
	java := j.java
	if s.java != "" {
		java = s.java
	}
	cwd := s.cwd
	if cwd == "" {
		cwd = openDir(t) // writable for the trigger file whatever the uid
	}
	args := append(append([]string{}, s.opts...), "-XX:TieredStopAtLevel=1", "-cp", j.classes, "Hold", fmt.Sprint(s.liveMB))
	var cmd *exec.Cmd
	if s.shell {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = "'" + a + "'"
		}
		cmd = exec.Command("/bin/sh", "-c", java+" "+strings.Join(quoted, " ")+"; echo jvm exited")
	} else {
		cmd = exec.Command(java, args...)
	}
	cmd.Dir = cwd
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, s.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: s.cloneflags}
	if s.uid != 0 || s.gid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	out := &syncbuf.Buffer{}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	jvmPID := 0
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		// A killed JVM leaves its attach socket and hsperfdata file behind.
		if jvmPID != 0 {
			os.Remove(fmt.Sprintf("/tmp/.java_pid%d", jvmPID))
			perf, _ := filepath.Glob(fmt.Sprintf("/tmp/hsperfdata_*/%d", jvmPID))
			for _, f := range perf {
				os.Remove(f)
			}
		}
	})
	ready := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			fmt.Fprintln(out, sc.Text())
			if strings.HasPrefix(sc.Text(), "ready ") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("the JVM exited before it was ready:\n%s", out)
	case <-time.After(60 * time.Second):
		t.Fatalf("the JVM was not ready after 60s:\n%s", out)
	}
	pid := cmd.Process.Pid
	if s.shell {
		pid = childJVM(t, pid)
	}
	jvmPID = pid
	p, err := Lookup("", pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started %v in %v", p, time.Since(start).Round(time.Millisecond))
	return &testJVM{Process: p, cmd: cmd, out: out, cwd: cwd}
}

// childJVM returns the pid of the java child of the shell ppid.
func childJVM(t *testing.T, ppid int) int {
	t.Helper()
	jvms, err := FindJVMs("")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range jvms {
		if p.PPID == ppid {
			return p.PID
		}
	}
	t.Fatalf("FindJVMs found no JVM whose parent is the shell %d: %v", ppid, jvms)
	return 0
}

// entries lists a directory, hidden names included.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
