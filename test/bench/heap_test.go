package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real heap dump: HeapBuilder builds heapMiB of live heap in a JVM with
// -Xmx1400m, and jcmd dumps it (about 1 GiB of hprof, 1.25x the heap: hprof
// spends 8-byte ids and a record header on every object).
const (
	heapMiB      = 830
	heapXmx      = "-Xmx1400m"
	buildHeapFor = 5 * time.Minute
	dumpHeapFor  = 5 * time.Minute
)

// benchCacheDir is where generated inputs are kept between runs, next to
// the tool binaries of test/tools/install.sh.
func benchCacheDir(b testing.TB) string {
	b.Helper()
	if d := os.Getenv(envTools); d != "" {
		return filepath.Join(d, "bench")
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		b.Fatalf("go env GOMODCACHE: %v", err)
	}
	return filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "dumpcatcher-tools", "bench")
}

// heapDump returns the path of a real ~1 GiB heap dump: $DUMPCATCHER_BENCH_HPROF,
// or one generated once and cached (its name holds a hash of the program,
// its arguments and the JVM version, so a change makes a new one).
func heapDump(b testing.TB) string {
	b.Helper()
	if p := os.Getenv(envHprof); p != "" {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("$%s: %v", envHprof, err)
		}
		return p
	}
	var tools [3]string
	for i, name := range []string{"java", "javac", "jcmd"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing(b, "no %s on PATH: the real heap dump needs a JDK", name)
		}
		tools[i] = p
	}
	java, javac, jcmd := tools[0], tools[1], tools[2]
	src, err := os.ReadFile(filepath.Join("testdata", "HeapBuilder.java"))
	if err != nil {
		b.Fatal(err)
	}
	version, err := exec.Command(java, "-version").CombinedOutput()
	if err != nil {
		b.Fatalf("java -version: %v\n%s", err, version)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s\x00", src, heapXmx, heapMiB, version)
	dir := benchCacheDir(b)
	path := filepath.Join(dir, "heap-"+hex.EncodeToString(h.Sum(nil))[:16]+".hprof")
	if _, err := os.Stat(path); err == nil {
		b.Logf("using the cached heap dump %s", path)
		return path
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	classes := b.TempDir()
	srcPath := filepath.Join(classes, "HeapBuilder.java")
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, srcPath).CombinedOutput(); err != nil {
		b.Fatalf("javac: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildHeapFor+dumpHeapFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, java, heapXmx, "-cp", classes, "HeapBuilder", fmt.Sprint(heapMiB))
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		stdin.Close() // the program exits when stdin closes
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "READY ") {
				ready <- line
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	select {
	case line := <-ready:
		b.Logf("JVM %s built its heap in %v: %s", heapXmx, time.Since(start).Round(time.Second), line)
	case err := <-exited:
		exited <- err
		b.Fatalf("HeapBuilder exited: %v\n%s", err, stderr.String())
	case <-time.After(buildHeapFor):
		b.Fatalf("HeapBuilder not ready within %v\n%s", buildHeapFor, stderr.String())
	}

	// jcmd writes under a temporary name in the cache directory; the
	// rename makes the dump appear whole or not at all.
	tmp := filepath.Join(dir, fmt.Sprintf(".heap-%d.hprof", os.Getpid()))
	os.Remove(tmp)
	defer os.Remove(tmp)
	dctx, dcancel := context.WithTimeout(context.Background(), dumpHeapFor)
	defer dcancel()
	dumpStart := time.Now()
	out, err := exec.CommandContext(dctx, jcmd, fmt.Sprint(cmd.Process.Pid), "GC.heap_dump", "-all", tmp).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Heap dump file created") {
		b.Fatalf("jcmd GC.heap_dump: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("jcmd GC.heap_dump -all wrote %d MiB in %v; cached as %s", fi.Size()>>20, time.Since(dumpStart).Round(time.Second), path)
	return path
}
