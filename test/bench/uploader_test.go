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

	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
)

// BenchmarkUploader runs every uploader benchmark against one MinIO started
// here (127.0.0.1) and stopped at the end, so dumpcatcher and its peer mc
// meet the same server in the same run. Each sub-benchmark measures once
// (run with -benchtime 1x; repetitions are DUMPCATCHER_BENCH_REPS inside,
// alternating the contestants) and reports medians as custom metrics.
//
// dumpcatcher's time is from the rename of the dump into dumps/<container>/
// until its "delivered" log line arrives (watcher, claim, upload, store
// verification, tagging); mc's is the wall time of the process(es). The
// "others-cores" metric is the average number of CPUs that processes other
// than the uploader, MinIO and this benchmark kept busy meanwhile (out of
// the machine's CPUs): how loaded the machine was.
func BenchmarkUploader(b *testing.B) {
	r := newRig(b)
	for _, sub := range []struct {
		name string
		run  func(*testing.B, *rig)
	}{{"Idle", benchIdle}, {"None1GiB", benchNone1GiB}, {"Hprof", benchHprof}, {"Memory4GiB", benchMemory4GiB}} {
		b.Run(sub.name, func(b *testing.B) {
			// (A parent benchmark's own log is not printed: say it here.)
			b.Logf("%d CPUs, load average %.2f at the start; MinIO at %s", runtime.NumCPU(), loadAvg1(), r.srv.Endpoint)
			sub.run(b, r)
			b.Logf("load average %.2f at the end", loadAvg1())
		})
	}
}

// benchIdle: RSS of a freshly started uploader with nothing to do, and its
// CPU over 10 s of idling.
func benchIdle(b *testing.B, r *rig) {
	const settle, window = 2 * time.Second, 10 * time.Second
	for range b.N {
		u := r.startUploader(b, uploader.CompressionGzip)
		time.Sleep(settle)
		rss, hwm, err := procMem(u.pid)
		if err != nil {
			b.Fatal(err)
		}
		m := startMeter(r.minioPID, u.pid)
		cpu0, sw0 := procThreads(u.pid)
		time.Sleep(window)
		cpu1, sw1 := procThreads(u.pid)
		use := m.stop(time.Now(), 0)
		rss2, _, err := procMem(u.pid)
		if err != nil {
			b.Fatal(err)
		}
		u.stop(b)
		cpu, wakeups := cpu1-cpu0, float64(sw1-sw0)/window.Seconds()
		b.Logf("idle: RSS %.1f MiB after %v (peak so far %.1f MiB), %.1f MiB after %v more; CPU %.2f ms in %v (%.4f%% of a CPU; /proc/<pid>/stat says %.0f ms), %.1f context switches/s; others %.2f cores",
			float64(rss)/mib, settle, float64(hwm)/mib, float64(rss2)/mib, window, cpu*1000, window, 100*cpu/window.Seconds(), use.client*1000, wakeups, use.others)
		b.ReportMetric(float64(max(rss, rss2))/mib, "idle-RSS-MiB")
		b.ReportMetric(cpu*1000, "idle-CPU-ms/10s")
		b.ReportMetric(wakeups, "idle-switches/s")
		b.ReportMetric(use.others, "others-cores")
	}
	b.ReportMetric(0, "ns/op")
}

// result is one upload by one contestant.
type result struct {
	use    usage
	stored int64
	took   float64 // dumpcatcher's own "took" (seconds); 0 for peers
	maxRSS int64   // peers (rusage); 0 for dumpcatcher
}

// contestant uploads the same input once per call of run (i is the round).
type contestant struct {
	name string
	run  func(i int) result
	res  []result
}

func (c *contestant) series(f func(result) float64) []float64 {
	out := make([]float64, len(c.res))
	for i, r := range c.res {
		out[i] = f(r)
	}
	return out
}

// compare runs every contestant once per round, b.N × reps rounds, rotating
// who goes first, and logs one line per round. It returns the "others"
// load of every upload.
func compare(b *testing.B, size int64, cs []*contestant) (others []float64) {
	for i := range b.N * reps() {
		var line []string
		for k := range cs {
			c := cs[(i+k)%len(cs)]
			res := c.run(i)
			c.res = append(c.res, res)
			others = append(others, res.use.others)
			s := fmt.Sprintf("%s %.0f MiB/s (%.2fs", c.name, mibps(size, res.use.wall), res.use.wall.Seconds())
			if res.took > 0 {
				s += fmt.Sprintf(", took %.2fs", res.took)
			}
			s += fmt.Sprintf(") %.2fx, CPU %.2fs, MinIO %.2fs, others %.2f", float64(size)/float64(res.stored), res.use.client, res.use.minio, res.use.others)
			if res.maxRSS > 0 {
				s += fmt.Sprintf(", max RSS %.0f MiB", float64(res.maxRSS)/mib)
			}
			line = append(line, s)
		}
		b.Logf("round %d: %s", i+1, strings.Join(line, "; "))
	}
	return others
}

// dcContestant uploads src with the running uploader u.
func dcContestant(b *testing.B, r *rig, name string, u *dcProc, src string, size int64, encoding string) *contestant {
	return &contestant{name: name, run: func(int) result {
		d, use := r.uploadDC(b, u, src, 3*time.Minute)
		if d.OriginalSize != size || d.Encoding != encoding {
			b.Fatalf("%s: delivered %d bytes of %d as %s", name, d.OriginalSize, size, d.Encoding)
		}
		return result{use: use, stored: d.StoredSize, took: d.Took}
	}}
}

// benchNone1GiB: an uncompressed 1 GiB random file, dumpcatcher
// (DUMPCATCHER_COMPRESSION=none) against `mc cp`, alternated.
func benchNone1GiB(b *testing.B, r *rig) {
	const size = gib
	src := filepath.Join(r.work, "random-1GiB")
	writeRandomFile(b, src, size, 64*mib)
	defer os.Remove(src)
	u := r.startUploader(b, uploader.CompressionNone)
	defer u.stop(b)
	dc := dcContestant(b, r, "dumpcatcher", u, src, size, "identity")
	mc := &contestant{name: "mc cp", run: func(i int) result {
		p := r.uploadMC(b, src, fmt.Sprintf("mc/random-%d", i))
		if p.stored != size {
			b.Fatalf("mc stored %d bytes of %d", p.stored, size)
		}
		return result{use: p.use, stored: p.stored, maxRSS: p.maxRSS}
	}}
	others := compare(b, size, []*contestant{dc, mc})
	speed := func(r result) float64 { return mibps(size, r.use.wall) }
	dcSpeed, mcSpeed := median(dc.series(speed)), median(mc.series(speed))
	b.ReportMetric(dcSpeed, "dumpcatcher-MiB/s")
	b.ReportMetric(median(dc.series(func(r result) float64 { return size / mib / r.took })), "dumpcatcher-took-MiB/s")
	b.ReportMetric(mcSpeed, "mc-MiB/s")
	b.ReportMetric(100*dcSpeed/mcSpeed, "dumpcatcher/mc-%")
	b.ReportMetric(median(dc.series(func(r result) float64 { return r.use.client })), "dumpcatcher-CPU-s/GiB")
	b.ReportMetric(median(mc.series(func(r result) float64 { return r.use.client })), "mc-CPU-s/GiB")
	b.ReportMetric(median(others), "others-cores")
	b.ReportMetric(0, "ns/op")
}

// benchHprof: a real ~1 GiB heap dump, dumpcatcher gzip and zstd against
// `gzip -1 -c | mc pipe` (the OS's gzip), alternated.
func benchHprof(b *testing.B, r *rig) {
	gzipBin, err := exec.LookPath("gzip")
	if err != nil {
		missing(b, "no gzip on PATH")
	}
	cached := heapDump(b)
	// A link (or copy) next to the volumes, so the uploads can link it.
	src := filepath.Join(r.work, "heap.hprof")
	if err := linkOrCopy(cached, src); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(src)
	fi, err := os.Stat(src)
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()
	ugz := r.startUploader(b, uploader.CompressionGzip)
	defer ugz.stop(b)
	uzs := r.startUploader(b, uploader.CompressionZstd)
	defer uzs.stop(b)
	gz := dcContestant(b, r, "dumpcatcher gzip", ugz, src, size, "gzip")
	zs := dcContestant(b, r, "dumpcatcher zstd", uzs, src, size, "zstd")
	peer := &contestant{name: "gzip -1 | mc pipe", run: func(i int) result {
		p := r.uploadGzipPipe(b, gzipBin, src, fmt.Sprintf("peer/heap-%d.hprof.gz", i))
		return result{use: p.use, stored: p.stored, maxRSS: p.maxRSS}
	}}
	b.Logf("heap dump: %d bytes (%.0f MiB)", size, float64(size)/mib)
	others := compare(b, size, []*contestant{gz, zs, peer})
	for _, c := range []struct {
		prefix string
		c      *contestant
	}{{"gzip", gz}, {"zstd", zs}, {"peer-gzip", peer}} {
		b.ReportMetric(median(c.c.series(func(r result) float64 { return mibps(size, r.use.wall) })), c.prefix+"-MiB/s")
		b.ReportMetric(median(c.c.series(func(r result) float64 { return float64(size) / float64(r.stored) })), c.prefix+"-ratio")
		b.ReportMetric(median(c.c.series(func(r result) float64 { return r.use.client / (float64(size) / gib) })), c.prefix+"-CPU-s/GiB")
	}
	b.ReportMetric(median(others), "others-cores")
	b.ReportMetric(0, "ns/op")
}

// benchMemory4GiB: peak RSS (VmHWM) of a fresh uploader delivering a 4 GiB
// dump (repeated random chunks: incompressible, so every part is full),
// with gzip and with none; then its RSS once the upload is 12 s over.
func benchMemory4GiB(b *testing.B, r *rig) {
	const size = 4 * gib
	const after = 12 * time.Second // the part buffers are released after 10 s idle
	src := filepath.Join(r.work, "random-4GiB")
	writeRandomFile(b, src, size, 64*mib)
	defer os.Remove(src)
	for range b.N {
		for _, mode := range []string{uploader.CompressionGzip, uploader.CompressionNone} {
			u := r.startUploader(b, mode)
			idleRSS, _, err := procMem(u.pid)
			if err != nil {
				b.Fatal(err)
			}
			// Sample VmRSS too, to see when the peak happens.
			stopSampling := make(chan struct{})
			sampled := make(chan int64, 1)
			go func() {
				var peak int64
				t := time.NewTicker(50 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stopSampling:
						sampled <- peak
						return
					case <-t.C:
						if rss, _, err := procMem(u.pid); err == nil {
							peak = max(peak, rss)
						}
					}
				}
			}()
			d, use := r.uploadDC(b, u, src, 8*time.Minute)
			close(stopSampling)
			peakSampled := <-sampled
			rss, hwm, err := procMem(u.pid)
			if err != nil {
				b.Fatal(err)
			}
			if d.OriginalSize != size {
				b.Fatalf("delivered %d bytes of %d", d.OriginalSize, size)
			}
			time.Sleep(after)
			rssAfter, _, err := procMem(u.pid)
			if err != nil {
				b.Fatal(err)
			}
			u.stop(b)
			b.Logf("%s 4 GiB: %.2fs %.0f MiB/s, stored %.0f MiB; RSS at start %.1f MiB, peak (VmHWM) %.1f MiB (sampled %.1f), %.1f MiB at the end, %.1f MiB %v later; CPU %.2fs (%.2f s/GiB), MinIO %.2fs, others %.2f cores",
				mode, use.wall.Seconds(), mibps(size, use.wall), float64(d.StoredSize)/mib, float64(idleRSS)/mib, float64(hwm)/mib,
				float64(peakSampled)/mib, float64(rss)/mib, float64(rssAfter)/mib, after, use.client, use.client/4, use.minio, use.others)
			b.ReportMetric(float64(hwm)/mib, mode+"-peak-RSS-MiB")
			b.ReportMetric(float64(rssAfter)/mib, mode+"-RSS-12s-after-MiB")
			b.ReportMetric(mibps(size, use.wall), mode+"-MiB/s")
			b.ReportMetric(use.client/4, mode+"-CPU-s/GiB")
		}
	}
	b.ReportMetric(0, "ns/op")
}
