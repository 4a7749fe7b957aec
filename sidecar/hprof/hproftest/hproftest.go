// Package hproftest makes heap dumps for tests: real ones from a JVM that runs
// out of memory, and small synthetic ones.
package hproftest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
)

// EnvRequireReal makes tests fail instead of skip when the JDK is missing.
const EnvRequireReal = realpart.EnvRequireReal

const oomProgram = `public class Oom {
    public static void main(String[] args) {
        java.util.List<long[]> hog = new java.util.ArrayList<>();
        while (true) { hog.add(new long[1 << 12]); }
    }
}
`

// JVM runs a compiled program that fills its heap until OutOfMemoryError.
type JVM struct {
	java    string
	classes string
}

// NewJVM finds java and javac on PATH and compiles the program. It skips the
// test when they are missing, unless DUMPCATCHER_REQUIRE_REAL is set.
func NewJVM(t testing.TB) *JVM {
	t.Helper()
	java, javac := realpart.Java(t)
	classes := t.TempDir()
	src := filepath.Join(classes, "Oom.java")
	if err := os.WriteFile(src, []byte(oomProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, src).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	return &JVM{java: java, classes: classes}
}

// OOMDump runs the program with -Xmx32m (unless args set another -Xmx),
// -XX:+HeapDumpOnOutOfMemoryError and -XX:HeapDumpPath=dir/ plus args, and
// returns the path of the dump the JVM wrote (java_pid<pid>.hprof, or
// .hprof.gz with -XX:HeapDumpGzipLevel).
func (j *JVM) OOMDump(t testing.TB, dir string, args ...string) string {
	t.Helper()
	jargs := []string{"-Xmx32m", "-XX:+HeapDumpOnOutOfMemoryError", "-XX:HeapDumpPath=" + dir + "/"}
	jargs = append(jargs, args...)
	jargs = append(jargs, "-cp", j.classes, "Oom")
	cmd := exec.Command(j.java, jargs...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the JVM did not fail with OutOfMemoryError\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "Heap dump file created") {
		t.Fatalf("the JVM wrote no heap dump into %s\nstdout:\n%s\nstderr:\n%s", dir, stdout.String(), stderr.String())
	}
	dumps, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("java_pid%d.hprof*", pid)))
	if len(dumps) != 1 {
		t.Fatalf("want one dump of pid %d in %s, found %v\nstdout:\n%s", pid, dir, dumps, stdout.String())
	}
	t.Logf("JVM wrote %s in %v", dumps[0], time.Since(start).Round(time.Millisecond))
	return dumps[0]
}

// Record tags used by Synthetic.
const (
	tagUTF8            = 0x01
	tagLoadClass       = 0x02
	tagHeapDumpSegment = 0x1C
	tagHeapDumpEnd     = 0x2C
)

// Synthetic returns a small, structurally complete HPROF 1.0.2 dump
// (identifier size 8) with a UTF8 record, a LOAD CLASS record, the given
// number of HEAP DUMP SEGMENT records of segmentSize body bytes each, and
// HEAP DUMP END. Bodies are filler: only the record structure is valid.
func Synthetic(segments, segmentSize int) []byte {
	var b bytes.Buffer
	b.WriteString("JAVA PROFILE 1.0.2\x00")
	_ = binary.Write(&b, binary.BigEndian, uint32(8))
	_ = binary.Write(&b, binary.BigEndian, uint64(1_700_000_000_000))
	record := func(tag byte, body []byte) {
		b.WriteByte(tag)
		_ = binary.Write(&b, binary.BigEndian, uint32(0))
		_ = binary.Write(&b, binary.BigEndian, uint32(len(body)))
		b.Write(body)
	}
	record(tagUTF8, append(make([]byte, 8), "java/lang/Object"...))
	record(tagLoadClass, make([]byte, 4+8+4+8))
	for i := range segments {
		body := bytes.Repeat([]byte{byte(i)}, segmentSize)
		record(tagHeapDumpSegment, body)
	}
	record(tagHeapDumpEnd, nil)
	return b.Bytes()
}

// Command returns a command that runs the program (it fills its heap until
// OutOfMemoryError) with the given JVM options; the caller sets Env, for
// example JAVA_TOOL_OPTIONS as the webhook writes it.
func (j *JVM) Command(jvmArgs ...string) *exec.Cmd {
	args := append(append([]string{}, jvmArgs...), "-cp", j.classes, "Oom")
	return exec.Command(j.java, args...)
}
