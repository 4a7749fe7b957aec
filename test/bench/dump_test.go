package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
)

// BenchmarkDump: how long `dumpcatcher dump` (attach protocol in Go, no JDK)
// takes to dump a JVM with a 1 GiB live heap, against the JDK's own
// `jcmd <pid> GC.heap_dump` on the same JVM in the same run. Both are timed
// as whole processes, the way a user or the preStop hook runs them, and both
// dump live objects only (a full GC first: jcmd's default and the dump
// command's). The contestants alternate, DUMPCATCHER_BENCH_REPS times each;
// every dump is checked (complete hprof) and removed before the next.
func BenchmarkDump(b *testing.B) {
	jcmd, err := exec.LookPath("jcmd")
	if err != nil {
		missing(b, "jcmd not on PATH: %v", err)
	}
	const liveMiB = 1024
	work := b.TempDir()
	bin := buildDumpcatcher(b, work)
	jvm := hproftest.Hold(b, hproftest.HoldSpec{LiveMB: liveMiB, Opts: []string{"-Xms2g", "-Xmx2g", "-XX:+UseG1GC"}})
	dir := filepath.Join(work, "dumps")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d CPUs, load average %.2f; JVM pid %d holds %d MiB live", runtime.NumCPU(), loadAvg1(), jvm.PID, liveMiB)

	type contestant struct {
		name string
		cmd  func(i int) (*exec.Cmd, string) // the command and the dump it writes ("" = find it)
	}
	contestants := []contestant{
		{"dumpcatcher", func(int) (*exec.Cmd, string) {
			return exec.Command(bin, "dump", "--dir="+dir, fmt.Sprintf("--pid=%d", jvm.PID)), ""
		}},
		{"jcmd", func(i int) (*exec.Cmd, string) {
			path := filepath.Join(dir, fmt.Sprintf("jcmd-%d.hprof", i))
			return exec.Command(jcmd, fmt.Sprint(jvm.PID), "GC.heap_dump", path), path
		}},
	}
	for range b.N {
		times := map[string][]float64{}
		sizes := map[string]int64{}
		for i := range reps() {
			for _, c := range contestants {
				cmd, path := c.cmd(i)
				start := time.Now()
				out, err := cmd.CombinedOutput()
				took := time.Since(start)
				if err != nil {
					b.Fatalf("%s: %v\n%s", c.name, err, out)
				}
				if path == "" {
					m, _ := filepath.Glob(filepath.Join(dir, "manual-*.hprof"))
					if len(m) != 1 {
						b.Fatalf("%s wrote %v\n%s", c.name, m, out)
					}
					path = m[0]
				}
				rep, err := hprof.InspectFile(path)
				if err != nil || !rep.Complete {
					b.Fatalf("%s: dump %s not complete: %+v %v\n%s", c.name, path, rep, err, strings.TrimSpace(string(out)))
				}
				fi, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				if err := os.Remove(path); err != nil {
					b.Fatal(err)
				}
				times[c.name] = append(times[c.name], took.Seconds())
				sizes[c.name] = fi.Size()
				b.Logf("round %d %-11s %6.2f s, %d MiB", i+1, c.name, took.Seconds(), fi.Size()>>20)
			}
		}
		dc, jc := median(times["dumpcatcher"]), median(times["jcmd"])
		b.Logf("median: dumpcatcher %.2f s, jcmd %.2f s: dumpcatcher takes %.1f%% of jcmd's time (target: at most 110%%); sizes %d vs %d bytes (%.2f%%); load average %.2f",
			dc, jc, 100*dc/jc, sizes["dumpcatcher"], sizes["jcmd"], 100*float64(sizes["dumpcatcher"])/float64(sizes["jcmd"]), loadAvg1())
		b.ReportMetric(dc, "dumpcatcher-s")
		b.ReportMetric(jc, "jcmd-s")
		b.ReportMetric(100*dc/jc, "%-of-jcmd")
	}
	b.ReportMetric(0, "ns/op")
}
