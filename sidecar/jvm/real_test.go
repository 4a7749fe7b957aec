package jvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
)

func TestAttachAndExecute(t *testing.T) {
	t.Parallel()
	j := startJVM(t, jvmSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	start := time.Now()
	c, err := Attach(ctx, j.Process)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attach (trigger file, SIGQUIT, socket) took %v", time.Since(start).Round(time.Millisecond))
	if trigger := filepath.Join(j.cwd, fmt.Sprintf(".attach_pid%d", j.NSPID)); fileExists(trigger) {
		t.Errorf("the trigger file %s was left behind", trigger)
	}

	start = time.Now()
	status, out, err := c.Execute(ctx, "jcmd", "VM.version")
	if err != nil || status != 0 {
		t.Fatalf("jcmd VM.version: status %d, err %v, output %q", status, err, out)
	}
	if !strings.Contains(out, "OpenJDK") && !strings.Contains(out, "HotSpot") {
		t.Errorf("jcmd VM.version answered %q", out)
	}
	t.Logf("jcmd VM.version took %v: %q", time.Since(start).Round(time.Millisecond), firstLine(out))

	status, out, err = c.Execute(ctx, "properties")
	if err != nil || status != 0 || !strings.Contains(out, "java.version=") {
		t.Fatalf("properties: status %d, err %v, output %.200q", status, err, out)
	}

	// HotSpot answers 0 to a dumpheap that failed: only the output tells.
	status, out, err = c.Execute(ctx, "dumpheap", "/nonexistent/x.hprof", "-all", "")
	if err != nil || status != 0 || strings.Contains(out, "Heap dump file created") {
		t.Errorf("dumpheap into a missing directory: status %d, err %v, output %q", status, err, out)
	}

	// A command the JVM does not know is an answer, not an error.
	status, out, err = c.Execute(ctx, "nosuchcommand")
	if err != nil || status == 0 {
		t.Errorf("nosuchcommand: status %d, err %v, output %q", status, err, out)
	}

	// The listener runs now: attaching again finds the socket at once.
	start = time.Now()
	if _, err := Attach(ctx, j.Process); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("attaching to a running listener took %v", d)
	}
	if strings.Contains(j.out.String(), "Full thread dump") {
		t.Errorf("SIGQUIT made the JVM print a thread dump (it should only start the attach listener):\n%.500s", j.out)
	}
}

func TestFindJVMsUnderShell(t *testing.T) {
	t.Parallel()
	j := startJVM(t, jvmSpec{shell: true})
	jvms, err := FindJVMs("")
	if err != nil {
		t.Fatal(err)
	}
	var found *Process
	for i, p := range jvms {
		if p.PID == j.cmd.Process.Pid {
			t.Errorf("FindJVMs listed the shell %v", p)
		}
		if p.PID == j.PID {
			found = &jvms[i]
		}
		if p.PID == os.Getpid() {
			t.Errorf("FindJVMs listed the calling process")
		}
	}
	if found == nil {
		t.Fatalf("FindJVMs did not find the JVM %d under sh %d: %v", j.PID, j.cmd.Process.Pid, jvms)
	}
	if found.PPID != j.cmd.Process.Pid || found.NSPID != found.PID || found.UID != os.Geteuid() ||
		filepath.Base(found.Cmdline[0]) != "java" || found.Cmdline[len(found.Cmdline)-2] != "Hold" {
		t.Errorf("FindJVMs returned %+v", *found)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Attach(ctx, *found)
	if err != nil {
		t.Fatal(err)
	}
	if status, out, err := c.Execute(ctx, "jcmd", "VM.uptime"); err != nil || status != 0 {
		t.Fatalf("VM.uptime: %d %v %q", status, err, out)
	}
}

// TestHeapDumpMatchesJcmd dumps a JVM holding 50 MiB with HeapDump and with
// `jcmd <pid> GC.heap_dump`, and compares.
func TestHeapDumpMatchesJcmd(t *testing.T) {
	t.Parallel()
	jdk := needJDK(t)
	j := startJVM(t, jvmSpec{opts: []string{"-Xmx256m"}, liveMB: 50})
	dir := openDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	name := contract.DumpFileName(contract.ReasonManual, time.Now(), j.NSPID)
	start := time.Now()
	path, err := HeapDump(ctx, j.Process, dir, name, true)
	ours := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, name) {
		t.Errorf("HeapDump returned %s, want %s", path, filepath.Join(dir, name))
	}
	rep, err := hprof.InspectFile(path)
	if err != nil || !rep.Complete || rep.Format != hprof.FormatRaw {
		t.Fatalf("our dump: %+v, %v", rep, err)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{name}) {
		t.Errorf("the dump directory holds %v, want only %s", got, name)
	}

	jpath := filepath.Join(dir, "jcmd.hprof")
	start = time.Now()
	out, err := exec.CommandContext(ctx, jdk.jcmd, fmt.Sprint(j.PID), "GC.heap_dump", jpath).CombinedOutput()
	theirs := time.Since(start)
	if err != nil {
		t.Fatalf("jcmd GC.heap_dump: %v\n%s", err, out)
	}
	jrep, err := hprof.InspectFile(jpath)
	if err != nil || !jrep.Complete {
		t.Fatalf("jcmd's dump: %+v, %v", jrep, err)
	}
	ratio := float64(rep.Size) / float64(jrep.Size)
	t.Logf("HeapDump: %d bytes, %d records in %v; jcmd GC.heap_dump: %d bytes, %d records in %v (%s); size ratio %.4f",
		rep.Size, rep.Records, ours.Round(time.Millisecond), jrep.Size, jrep.Records, theirs.Round(time.Millisecond),
		strings.TrimSpace(string(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:])), ratio)
	if ratio < 0.97 || ratio > 1.03 {
		t.Errorf("our dump is %d bytes, jcmd's %d: more than 3%% apart", rep.Size, jrep.Size)
	}
	if rep.Size < 50<<20 {
		t.Errorf("the dump has %d bytes, less than the 50 MiB the JVM holds", rep.Size)
	}

	// Compressed, and everything rather than live objects only.
	gzName := "all.hprof.gz"
	start = time.Now()
	gzPath, err := HeapDumpWith(ctx, j.Process, dir, gzName, DumpOptions{GzipLevel: 1})
	if err != nil {
		t.Fatal(err)
	}
	grep, err := hprof.InspectFile(gzPath)
	if err != nil || !grep.Complete || grep.Format != hprof.FormatGzip {
		t.Fatalf("gzip dump: %+v, %v", grep, err)
	}
	t.Logf("HeapDumpWith(-all, gzip 1): %d bytes (%d uncompressed) in %v",
		grep.Size, grep.Uncompressed, time.Since(start).Round(time.Millisecond))

	// The same name again is refused, and nothing is left behind.
	if _, err := HeapDump(ctx, j.Process, dir, name, true); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a second dump under the same name: %v", err)
	}
	if got := entries(t, dir); len(got) != 3 {
		t.Errorf("the dump directory holds %v", got)
	}
}

// TestNonRootJVM attaches to and dumps a JVM of uid 1000 from root: the
// steps run on a thread with the JVM's uid and gid.
func TestNonRootJVM(t *testing.T) {
	t.Parallel()
	needRoot(t)
	// Its working directory is not writable: the trigger file goes to /tmp.
	j := startJVM(t, jvmSpec{uid: testUID, gid: testGID, liveMB: 5, cwd: "/"})
	if j.UID != testUID || j.GID != testGID {
		t.Fatalf("the JVM runs as %d:%d", j.UID, j.GID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Attach(ctx, j.Process)
	if err != nil {
		t.Fatal(err)
	}
	if trigger := fmt.Sprintf("/tmp/.attach_pid%d", j.NSPID); fileExists(trigger) {
		t.Errorf("the trigger file %s was left behind", trigger)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(c.Socket(), &st); err != nil || st.Uid != testUID {
		t.Errorf("socket %s: owner %d, %v", c.Socket(), st.Uid, err)
	}
	status, out, err := c.Execute(ctx, "jcmd", "VM.version")
	if err != nil || status != 0 {
		t.Fatalf("jcmd VM.version: %d %v %q", status, err, out)
	}
	dir := openDir(t)
	path, err := HeapDump(ctx, j.Process, dir, "nonroot.hprof", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(path, &st); err != nil || st.Uid != testUID || st.Mode&0o777 != 0o600 {
		t.Errorf("dump %s: owner %d mode %o, %v", path, st.Uid, st.Mode&0o777, err)
	}
	if rep, err := hprof.InspectFile(path); err != nil || !rep.Complete {
		t.Errorf("dump: %+v %v", rep, err)
	}
	if r, err := Pressure(j.Process, DefaultThresholds()); err != nil || r.Under {
		t.Errorf("pressure of an idle JVM of another uid: %+v %v", r, err)
	}
}

func TestAttachDisabled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		spec jvmSpec
		want string
	}{
		{"command line", jvmSpec{opts: []string{"-XX:+DisableAttachMechanism"}}, "hsperfdata"},
		// Without hsperfdata the options are read from the environment.
		{"JAVA_TOOL_OPTIONS without perf data", jvmSpec{opts: []string{"-XX:-UsePerfData"},
			env: []string{"JAVA_TOOL_OPTIONS=-XX:+DisableAttachMechanism"}}, "in JAVA_TOOL_OPTIONS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := startJVM(t, tc.spec)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Attach(ctx, j.Process)
			took := time.Since(start)
			if !errors.Is(err, ErrAttachDisabled) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attach: %v, want ErrAttachDisabled found via %q", err, tc.want)
			}
			if took > time.Second {
				t.Errorf("ErrAttachDisabled took %v", took)
			}
			t.Logf("%v (in %v)", err, took.Round(time.Microsecond))
			time.Sleep(200 * time.Millisecond)
			if strings.Contains(j.out.String(), "Full thread dump") {
				t.Errorf("SIGQUIT was sent to a JVM that cannot attach")
			}
		})
	}
}

// TestReducedSignals: a JVM run with -Xrs starts its attach listener at
// start-up, because SIGQUIT cannot trigger it; SIGQUIT would kill it. When
// its socket is gone (someone cleaned /tmp), Attach must not send SIGQUIT.
func TestReducedSignals(t *testing.T) {
	t.Parallel()
	j := startJVM(t, jvmSpec{opts: []string{"-Xrs"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Attach(ctx, j.Process)
	if err != nil {
		t.Fatal(err)
	}
	if status, out, err := c.Execute(ctx, "jcmd", "VM.version"); err != nil || status != 0 {
		t.Fatalf("jcmd VM.version: %d %v %q", status, err, out)
	}
	if err := os.Remove(c.Socket()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Attach(ctx, j.Process)
	if !errors.Is(err, ErrNoSignalHandler) || !strings.Contains(err.Error(), "-Xrs") {
		t.Fatalf("Attach: %v, want ErrNoSignalHandler naming -Xrs", err)
	}
	t.Logf("%v (in %v)", err, time.Since(start).Round(time.Microsecond))
	time.Sleep(200 * time.Millisecond)
	if !alive(j.Process) {
		t.Fatalf("the JVM died")
	}
}

// TestNotResponding stops a JVM: attaching to it and dumping it fail with
// ErrNotResponding at the deadline, leave no file, and when the JVM resumes
// and reads the abandoned request, it cannot write the dump either.
func TestNotResponding(t *testing.T) {
	t.Parallel()
	t.Run("no listener yet", func(t *testing.T) {
		t.Parallel()
		j := startJVM(t, jvmSpec{})
		stop(t, j)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Attach(ctx, j.Process)
		took := time.Since(start)
		if !errors.Is(err, ErrNotResponding) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Attach: %v, want ErrNotResponding", err)
		}
		if took < 1400*time.Millisecond || took > 2500*time.Millisecond {
			t.Errorf("gave up after %v, want about 1.5s", took)
		}
		t.Logf("%v (in %v)", err, took.Round(time.Millisecond))
		if got := entries(t, j.cwd); len(got) != 0 {
			t.Errorf("left in the JVM's working directory: %v", got)
		}
	})
	t.Run("listener running", func(t *testing.T) {
		t.Parallel()
		j := startJVM(t, jvmSpec{liveMB: 20})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := Attach(ctx, j.Process); err != nil {
			t.Fatal(err)
		}
		stop(t, j)
		dir := openDir(t)
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		start := time.Now()
		_, err := HeapDump(dctx, j.Process, dir, "stopped.hprof", true)
		took := time.Since(start)
		if !errors.Is(err, ErrNotResponding) {
			t.Fatalf("HeapDump: %v, want ErrNotResponding", err)
		}
		if took > 3*time.Second {
			t.Errorf("gave up after %v, want about 2s", took)
		}
		t.Logf("%v (in %v)", err, took.Round(time.Millisecond))
		if got := entries(t, dir); len(got) != 0 {
			t.Errorf("left in the dump directory: %v", got)
		}
		// The JVM resumes, reads the request we abandoned, and fails to
		// create the file: its directory is gone.
		if err := syscall.Kill(j.PID, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		c, err := Attach(ctx, j.Process)
		if err != nil {
			t.Fatal(err)
		}
		// This command queues behind the abandoned dumpheap.
		if status, out, err := c.Execute(ctx, "jcmd", "VM.uptime"); err != nil || status != 0 {
			t.Fatalf("after SIGCONT: %d %v %q", status, err, out)
		}
		if got := entries(t, dir); len(got) != 0 {
			t.Errorf("after the JVM resumed, the dump directory holds %v", got)
		}
	})
}

// TestGiveUpWhileWriting abandons a dump the JVM is working on (collecting,
// or writing): nothing is left in the directory, then or after the JVM
// finished.
func TestGiveUpWhileWriting(t *testing.T) {
	t.Parallel()
	// 600 MiB: writing it takes well over the 150 ms we wait (300 MiB once
	// took less here).
	j := startJVM(t, jvmSpec{opts: []string{"-Xmx1g"}, liveMB: 600})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Attach(ctx, j.Process)
	if err != nil {
		t.Fatal(err)
	}
	dir := openDir(t)
	// Give up as soon as the JVM has begun writing (its file is in the hidden
	// part directory), not after a fixed time: on a loaded machine a fixed
	// 150 ms once expired before the write began, on a fast one a 300 MiB
	// dump finished within it.
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		part := filepath.Join(dir, ".big.hprof.part", "big.hprof")
		for dctx.Err() == nil {
			if _, err := os.Lstat(part); err == nil {
				dcancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err = HeapDump(dctx, j.Process, dir, "big.hprof", true)
	dcancel()
	<-writing
	if !errors.Is(err, ErrNotResponding) {
		t.Fatalf("HeapDump: %v, want ErrNotResponding", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("left in the dump directory: %v", got)
	}
	// Is the JVM still writing into the removed file?
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", j.PID))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.Contains(l, "big.hprof") {
			t.Logf("the JVM still writes %s", l)
		}
	}
	start := time.Now()
	if status, out, err := c.Execute(ctx, "jcmd", "VM.uptime"); err != nil || status != 0 {
		t.Fatalf("VM.uptime: %d %v %q", status, err, out)
	}
	t.Logf("the JVM finished the abandoned dump %v after we gave up", time.Since(start).Round(time.Millisecond))
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("after the JVM finished, the dump directory holds %v", got)
	}
}

func stop(t *testing.T, j *testJVM) {
	t.Helper()
	if err := syscall.Kill(j.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasPrefix(state(j.Process), "T") {
		if time.Now().After(deadline) {
			t.Fatalf("the JVM is not stopped: %s", state(j.Process))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPressure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		spec  jvmSpec
		under bool
	}{
		// 55 MiB live in a 64 MiB heap, after System.gc().
		{"G1 nearly full", jvmSpec{opts: []string{"-Xmx64m", "-XX:+UseG1GC"}, liveMB: 55}, true},
		// The old generation is 58 MiB with a 6 MiB young one.
		{"Parallel nearly full", jvmSpec{opts: []string{"-Xmx64m", "-Xmn6m", "-XX:+UseParallelGC"}, liveMB: 50}, true},
		{"Serial nearly full", jvmSpec{opts: []string{"-Xmx64m", "-Xmn6m", "-XX:+UseSerialGC"}, liveMB: 50}, true},
		{"idle", jvmSpec{opts: []string{"-Xmx256m"}, liveMB: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := startJVM(t, tc.spec)
			start := time.Now()
			r, err := Pressure(j.Process, DefaultThresholds())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("under=%v in %v: %s [%s, last cause %q]", r.Under, time.Since(start).Round(time.Microsecond), r.Reason, r.Collector, r.LastCause)
			if r.Under != tc.under {
				t.Errorf("Under = %v, want %v", r.Under, tc.under)
			}
			if r.OldUsed <= 0 || r.OldMax <= 0 || r.Uptime <= 0 || r.GCCount == 0 || r.LastCause != "System.gc()" {
				t.Errorf("report: %+v", r)
			}
		})
	}
	t.Run("UsePerfData off", func(t *testing.T) {
		t.Parallel()
		j := startJVM(t, jvmSpec{opts: []string{"-XX:-UsePerfData"}})
		_, err := Pressure(j.Process, DefaultThresholds())
		if !errors.Is(err, ErrNoPerfData) || !strings.Contains(err.Error(), "-XX:-UsePerfData") {
			t.Fatalf("Pressure: %v, want ErrNoPerfData naming the flag", err)
		}
		t.Log(err)
	})
}

// TestOtherJDKs attaches to and dumps a JVM of every other JDK installed
// under /usr/lib/jvm (HotSpot 17's attach protocol version 1 is what newer
// JDKs still accept).
func TestOtherJDKs(t *testing.T) {
	t.Parallel()
	j := needJDK(t)
	def, _ := filepath.EvalSymlinks(j.java)
	javas, _ := filepath.Glob("/usr/lib/jvm/*/bin/java")
	seen := map[string]bool{def: true}
	var others []string
	for _, java := range javas {
		real, err := filepath.EvalSymlinks(java)
		if err == nil && !seen[real] {
			seen[real] = true
			others = append(others, real)
		}
	}
	if len(others) == 0 {
		t.Skip("no other JDK under /usr/lib/jvm")
	}
	version := regexp.MustCompile(`(?m)^JDK \d+.*$|^OpenJDK.*$`)
	for _, java := range others {
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(java))), func(t *testing.T) {
			jv := startJVM(t, jvmSpec{java: java, liveMB: 5})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := Attach(ctx, jv.Process)
			if err != nil {
				t.Fatal(err)
			}
			status, out, err := c.Execute(ctx, "jcmd", "VM.version")
			if err != nil || status != 0 {
				t.Fatalf("jcmd VM.version: %d %v %q", status, err, out)
			}
			t.Logf("%s", version.FindString(out))
			path, err := HeapDump(ctx, jv.Process, openDir(t), "other.hprof", true)
			if err != nil {
				t.Fatal(err)
			}
			if rep, err := hprof.InspectFile(path); err != nil || !rep.Complete {
				t.Errorf("dump: %+v %v", rep, err)
			}
		})
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// childEnv tells a copy of the test binary to run TestChildProcess: it dumps
// the JVM "<pid>" into "<dir>" as its own, non-root, uid.
const childEnv = "DUMPCATCHER_JVM_TEST_CHILD"

// TestAsJVMUser runs HeapDump from a process of the JVM's uid (what the
// preStop hook does in a container that runs as non-root), and from another
// non-root uid, which must fail naming both uids.
func TestAsJVMUser(t *testing.T) {
	t.Parallel()
	needRoot(t)
	j := startJVM(t, jvmSpec{uid: testUID, gid: testGID, liveMB: 5})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(openDir(t), "jvm.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		uid, gid int
		want     string
	}{
		{"same uid", testUID, testGID, "result: ok "},
		{"other uid", testUID + 1, testGID + 1, "result: permission attach to pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := openDir(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-test.run=^TestChildProcess$", "-test.v")
			cmd.Env = []string{"PATH=/usr/bin:/bin", fmt.Sprintf("%s=%d %s", childEnv, j.PID, dir)}
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(tc.uid), Gid: uint32(tc.gid)}}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("child as %d:%d: %v, want %q in:\n%s", tc.uid, tc.gid, err, tc.want, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "result: ") {
					t.Log(strings.TrimSpace(l))
				}
			}
		})
	}
}

// TestChildProcess is the helper process of TestAsJVMUser.
func TestChildProcess(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("a helper process of TestAsJVMUser")
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(spec, "%d %s", &pid, &dir); err != nil {
		t.Fatal(err)
	}
	p, err := Lookup("", pid)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	path, err := HeapDump(ctx, p, dir, "child.hprof", true)
	switch {
	case errors.Is(err, ErrPermission):
		fmt.Printf("result: permission %v\n", err)
	case err != nil:
		fmt.Printf("result: error %v\n", err)
	default:
		rep, err := hprof.InspectFile(path)
		if err != nil || !rep.Complete {
			fmt.Printf("result: error %s: %+v %v\n", path, rep, err)
			return
		}
		fmt.Printf("result: ok %s as uid %d in %v (%d bytes)\n", path, os.Geteuid(), time.Since(start).Round(time.Millisecond), rep.Size)
	}
}
