package inject

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
)

const oomProgram = `public class Oom {
    public static void main(String[] args) {
        System.out.println("greeting=" + System.getProperty("greeting"));
        java.util.List<long[]> hog = new java.util.ArrayList<>();
        while (true) { hog.add(new long[1 << 16]); }
    }
}
`

// TestDumpOptionsWithRealJVM runs a real JVM that runs out of memory with
// JAVA_TOOL_OPTIONS exactly as the webhook writes it (after the kubelet's
// $(...) expansion) and checks that the heap dump lands in the dump directory
// and that the user's own options still apply.
func TestDumpOptionsWithRealJVM(t *testing.T) {
	java, javac := realpart.Java(t)
	classes := t.TempDir()
	if err := os.WriteFile(filepath.Join(classes, "Oom.java"), []byte(oomProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, filepath.Join(classes, "Oom.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	tests := []struct {
		name string
		// jto builds JAVA_TOOL_OPTIONS from the dump directory.
		jto          func(dir string) string
		wantGreeting string
	}{
		{"no user value", func(dir string) string { return contract.DumpOptions(dir) }, "null"},
		{"literal merged, user dump options replaced", func(dir string) string {
			return mergeLiteral(`-Dgreeting="hello world" -XX:HeapDumpPath=/nonexistent/x.hprof -XX:-HeapDumpOnOutOfMemoryError`, contract.DumpOptions(dir))
		}, "hello world"},
		{"optional reference missing: empty expansion", func(dir string) string {
			return strings.ReplaceAll("$("+OriginalJTOEnv+") "+contract.DumpOptions(dir), "$("+OriginalJTOEnv+")", "")
		}, "null"},
		{"reference resolved", func(dir string) string {
			return strings.ReplaceAll("$("+OriginalJTOEnv+") "+contract.DumpOptions(dir), "$("+OriginalJTOEnv+")", "-Dgreeting=hi -XX:HeapDumpPath=/elsewhere")
		}, "hi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dumps")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(java, "-Xmx16m", "-cp", classes, "Oom")
			cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS="+tt.jto(dir))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err == nil {
				t.Fatal("the JVM did not fail with OutOfMemoryError")
			}
			if !strings.Contains(stderr.String(), "java.lang.OutOfMemoryError") || !strings.Contains(stdout.String(), "Dumping heap to "+dir+"/java_pid") {
				t.Fatalf("no OutOfMemoryError or no dump into %s:\nstdout:\n%s\nstderr:\n%s", dir, stdout.String(), stderr.String())
			}
			if got, _, _ := strings.Cut(stdout.String(), "\n"); got != "greeting="+tt.wantGreeting {
				t.Errorf("stdout %q, want greeting=%s", got, tt.wantGreeting)
			}
			dumps, _ := filepath.Glob(filepath.Join(dir, "java_pid*.hprof"))
			if len(dumps) != 1 {
				entries, _ := os.ReadDir(dir)
				t.Fatalf("dumps in %s: %v (dir holds %v)\nstderr:\n%s", dir, dumps, entries, stderr.String())
			}
			head := make([]byte, 18)
			f, err := os.Open(dumps[0])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Read(head); err != nil || string(head) != "JAVA PROFILE 1.0.2" {
				t.Errorf("%s does not start with an hprof header: %q %v", dumps[0], head, err)
			}
		})
	}
}

// crashProgram makes the JVM die of SIGSEGV in its own code, without JNI:
// sun.misc.Unsafe writes to address 0.
const crashProgram = `public class Crash {
    public static void main(String[] args) throws Exception {
        java.lang.reflect.Field f = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
        f.setAccessible(true);
        ((sun.misc.Unsafe) f.get(null)).putAddress(0, 0);
    }
}
`

// TestErrorFileWithRealJVM crashes a real JVM with JAVA_TOOL_OPTIONS as the
// webhook writes it and checks where HotSpot puts its crash log: into the
// dump directory with our option, where the user's literal -XX:ErrorFile
// says when it is kept, and into the dump directory when the user's value
// comes through $(DUMPCATCHER_ORIGINAL_JAVA_TOOL_OPTIONS) (ours is last and
// wins there).
func TestErrorFileWithRealJVM(t *testing.T) {
	java, javac := realpart.Java(t)
	classes := t.TempDir()
	if err := os.WriteFile(filepath.Join(classes, "Crash.java"), []byte(crashProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, filepath.Join(classes, "Crash.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	elsewhere := t.TempDir()
	userOpt := "-XX:ErrorFile=" + elsewhere + "/mine_%p.log -XX:-CreateCoredumpOnCrash"
	tests := []struct {
		name string
		jto  func(dir string) string
		// inDumpDir: the log is hs_err_pid<pid>.log in the dump directory;
		// else mine_<pid>.log in elsewhere.
		inDumpDir bool
	}{
		{"no user value", func(dir string) string {
			var w warnings
			c := corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "JDK_JAVA_OPTIONS", Value: "-XX:-CreateCoredumpOnCrash"}}}
			setDumpOptions(&c, dir, &w)
			return c.Env[0].Value
		}, true},
		{"literal with the user's ErrorFile: kept", func(dir string) string {
			var w warnings
			c := corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: JTOEnv, Value: userOpt}}}
			setDumpOptions(&c, dir, &w)
			return c.Env[0].Value
		}, false},
		{"reference resolved: ours wins", func(dir string) string {
			return userOpt + " " + contract.DumpOptions(dir) + " " + contract.ErrorFileOption(dir)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dumps")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(java, "-XX:-CreateCoredumpOnCrash", "-cp", classes, "Crash")
			cmd.Dir = t.TempDir() // HotSpot's fallback for the log is the working directory
			cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS="+tt.jto(dir))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err == nil {
				t.Fatal("the JVM did not crash")
			}
			want := filepath.Join(dir, contract.CrashLogName(cmd.Process.Pid))
			if !tt.inDumpDir {
				want = filepath.Join(elsewhere, "mine_"+strconv.Itoa(cmd.Process.Pid)+".log")
			}
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("the JVM did not report its crash log as %s:\nstdout:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
			}
			log, err := os.ReadFile(want)
			if err != nil {
				entries, _ := os.ReadDir(dir)
				t.Fatalf("no crash log: %v (dump dir holds %v)", err, entries)
			}
			if !bytes.HasPrefix(log, []byte("#\n# A fatal error has been detected by the Java Runtime Environment")) || !bytes.HasSuffix(log, []byte("\nEND.\n")) {
				t.Errorf("%s is not a whole hs_err log: starts %q, ends %q", want, log[:min(len(log), 80)], log[max(0, len(log)-40):])
			}
			if entries, _ := os.ReadDir(dir); !tt.inDumpDir && len(entries) != 0 {
				t.Errorf("the dump directory holds %v, want nothing (the user's ErrorFile wins)", entries)
			}
		})
	}
}
