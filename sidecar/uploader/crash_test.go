package uploader

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/memory"
)

const crashProgram = `public class Crash {
    public static void main(String[] args) throws Exception {
        java.lang.reflect.Field f = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
        f.setAccessible(true);
        ((sun.misc.Unsafe) f.get(null)).putAddress(0, 0);
    }
}
`

// crashJVM crashes a real JVM with the webhook's -XX:ErrorFile option for
// dir and returns its pid.
func crashJVM(t *testing.T, dir string) int {
	t.Helper()
	java, javac := realpart.Java(t)
	classes := t.TempDir()
	if err := os.WriteFile(filepath.Join(classes, "Crash.java"), []byte(crashProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, filepath.Join(classes, "Crash.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	cmd := exec.Command(java, "-XX:-CreateCoredumpOnCrash", "-cp", classes, "Crash")
	cmd.Dir = classes
	cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS="+contract.ErrorFileOption(dir))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("the JVM did not crash:\n%s", out)
	}
	return cmd.Process.Pid
}

// gcoreOf returns a real core file (gdb's gcore of a running static C
// program); kernel.core_pattern is not touched.
func gcoreOf(t *testing.T) []byte {
	t.Helper()
	gcc, gcore := realpart.ToolOrPath(t, "gcc"), realpart.ToolOrPath(t, "gcore")
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "spin.c"), filepath.Join(dir, "spin")
	if err := os.WriteFile(src, []byte("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-static", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(100 * time.Millisecond)
	if out, err := exec.Command(gcore, "-o", filepath.Join(dir, "core"), fmt.Sprint(cmd.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("gcore: %v\n%s", err, out)
	}
	b, err := os.ReadFile(fmt.Sprintf("%s.%d", filepath.Join(dir, "core"), cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCrashLogsAndCoresDelivered: a real JVM's crash log, written through
// the injected -XX:ErrorFile into the container's dump directory, and real
// core files renamed into place under contract.CoreFileName names (as the
// node's core handler will) are delivered with reasons crash and core, the
// key template's {reason} and {file} filled in, whole or (a core cut short)
// marked incomplete.
func TestCrashLogsAndCoresDelivered(t *testing.T) {
	core := gcoreOf(t)
	for _, comp := range []string{CompressionGzip, CompressionNone} {
		t.Run(comp, func(t *testing.T) {
			bucket := memory.New("dumps")
			r := startUploader(t, bucket, func(o *Options) {
				o.Compression = comp
				o.Template = objectkey.MustParse("{container}/{reason}/{file}/{time}")
			})
			defer r.shutdown(t)
			dir := filepath.Join(r.dumps, "app")
			if err := os.MkdirAll(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
			for name, data := range map[string][]byte{
				contract.CoreFileName(at, "spin", 41): core,
				contract.CoreFileName(at, "spin", 42): core[:len(core)/2],
			} {
				tmp := filepath.Join(dir, contract.TempPrefix+name)
				if err := os.WriteFile(tmp, data, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			pid := crashJVM(t, dir)
			log, err := os.ReadFile(filepath.Join(dir, contract.CrashLogName(pid)))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			objs := waitMemObjects(t, bucket, 3, 30*time.Second)
			suffix := map[string]string{CompressionGzip: ".gz", CompressionNone: ""}[comp]
			want := map[string]struct {
				data     []byte
				reason   string
				complete string
			}{
				"app/crash/" + contract.CrashLogName(pid) + suffix: {log, contract.ReasonCrash, "true"},
				"app/core/spin-41.core" + suffix:                   {core, contract.ReasonCore, "true"},
				"app/core/spin-42.core" + suffix:                   {core[:len(core)/2], contract.ReasonCore, "false"},
			}
			for _, o := range objs {
				key := o.key[:max(0, strings.LastIndexByte(o.key, '/'))]
				w, ok := want[key]
				if !ok {
					t.Errorf("unexpected object %s", o.key)
					continue
				}
				if o.meta["reason"] != w.reason || o.meta["complete"] != w.complete {
					t.Errorf("%s: reason %q complete %q, want %q %q", o.key, o.meta["reason"], o.meta["complete"], w.reason, w.complete)
				}
				if w.data != nil && !bytes.Equal(o.data, w.data) {
					t.Errorf("%s: content differs", o.key)
				}
				if w.reason == contract.ReasonCrash && !strings.HasSuffix(string(o.data), "\nEND.\n") {
					t.Errorf("%s: the crash log does not end with END.", o.key)
				}
				delete(want, key)
			}
			if len(want) != 0 {
				t.Errorf("not delivered: %v", func() []string {
					var k []string
					for key := range want {
						k = append(k, key)
					}
					return k
				}())
			}
		})
	}
}
