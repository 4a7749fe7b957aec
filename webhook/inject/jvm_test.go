package inject

import (
	"bytes"
	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
