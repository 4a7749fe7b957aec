package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/minio/minio-go/v7"
)

const (
	envReps        = "DUMPCATCHER_BENCH_REPS"
	envHprof       = "DUMPCATCHER_BENCH_HPROF"
	envUploaderEnv = "DUMPCATCHER_BENCH_UPLOADER_ENV"
	envTools       = "DUMPCATCHER_TOOLS"
	envBinary      = "DUMPCATCHER_BENCH_BINARY"
	envLogDir      = "DUMPCATCHER_BENCH_LOGDIR"

	mib = 1 << 20
	gib = 1 << 30

	// clockTicks is USER_HZ, the unit of /proc/<pid>/stat and /proc/stat
	// times: 100 on every Linux architecture Go supports.
	clockTicks = 100
)

// Bounds of every wait.
const (
	buildTimeout = 5 * time.Minute
	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	mcTimeout    = 5 * time.Minute
)

// missing skips b because something it needs is missing, or fails it when
// DUMPCATCHER_REQUIRE_REAL is set.
func missing(b testing.TB, format string, args ...any) {
	b.Helper()
	realpart.Missing(b, format, args...)
}

// toolBinary returns the path of a binary test/tools/install.sh builds, or "".
func toolBinary(name string) string { return realpart.Find(name) }

func reps() int {
	if n, err := strconv.Atoi(os.Getenv(envReps)); err == nil && n > 0 {
		return n
	}
	return 3
}

// buildDumpcatcher builds the uploader binary as `make build` does.
func buildDumpcatcher(b testing.TB, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "dumpcatcher")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", bin,
		"github.com/dumpcatcher/dumpcatcher/cmd/dumpcatcher")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/dumpcatcher: %v\n%s", err, out)
	}
	return bin
}

// --- /proc -------------------------------------------------------------

// procMem reads VmRSS and VmHWM (bytes) of pid.
func procMem(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(val) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS/VmHWM", pid)
	}
	return rss, hwm, nil
}

// procCPU returns utime+stime of pid in seconds (0 when it is gone).
func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	// After ")": state(3) ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime(15).
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clockTicks
}

// procThreads sums over the threads of pid: the CPU time in seconds
// (schedstat, nanosecond resolution, unlike the 10 ms ticks of procCPU) and
// the context switches (voluntary + involuntary: how often it ran).
func procThreads(pid int) (cpu float64, switches int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		if data, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(data)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				cpu += float64(ns) / 1e9
			}
		}
		data, err := os.ReadFile(filepath.Join(t, "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if name, val, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(name, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
				switches += n
			}
		}
	}
	return cpu, switches
}

// systemCPU returns the busy and total CPU seconds of all CPUs (/proc/stat);
// steal counts as busy: it is CPU this machine could not use.
func systemCPU() (busy, total float64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var v [8]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	// user nice system idle iowait irq softirq steal
	idle := v[3] + v[4]
	for _, x := range v {
		total += x
	}
	return (total - idle) / clockTicks, total / clockTicks
}

func loadAvg1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return math.NaN()
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// findPID returns the pid of the process whose command line contains s.
func findPID(s string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cl, []byte(s)) {
			return pid
		}
	}
	return 0
}

// meter measures one upload: the wall time and where the CPU went.
type meter struct {
	start             time.Time
	busy, total       float64
	minio, self, proc float64
	pid, minioPID     int
}

// usage is what a meter measured.
type usage struct {
	wall time.Duration
	// client is the CPU seconds of the uploading process(es), minio of the
	// server, others of every other process on the machine (average cores
	// busy over the wall time: how loaded the machine was).
	client, minio, others float64
}

// startMeter starts measuring; pid is the uploader (0: a peer measured with
// rusage instead).
func startMeter(minioPID, pid int) *meter {
	m := &meter{pid: pid, minioPID: minioPID}
	m.busy, m.total = systemCPU()
	m.minio, m.self = procCPU(minioPID), procCPU(os.Getpid())
	if pid > 0 {
		m.proc = procCPU(pid)
	}
	m.start = time.Now()
	return m
}

// stop ends the measurement at end; peerCPU is the peer's rusage CPU (or 0
// for the uploader, whose /proc times are used).
func (m *meter) stop(end time.Time, peerCPU float64) usage {
	busy, _ := systemCPU()
	u := usage{wall: end.Sub(m.start), minio: procCPU(m.minioPID) - m.minio, client: peerCPU}
	if m.pid > 0 {
		u.client = procCPU(m.pid) - m.proc
	}
	self := procCPU(os.Getpid()) - m.self
	if w := u.wall.Seconds(); w > 0 {
		u.others = max(0, (busy-m.busy)-u.client-u.minio-self) / w
	}
	return u
}

func rusageCPU(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

func rusageMaxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // kB on Linux
	}
	return 0
}

// --- statistics ------------------------------------------------------------

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mibps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / mib / d.Seconds()
}

// --- files ---------------------------------------------------------------

// writeRandomFile writes size bytes made of a random chunk (chunk bytes,
// a multiple of 8) repeated, each copy with its index in the first 8 bytes.
func writeRandomFile(b testing.TB, path string, size, chunk int64) {
	b.Helper()
	buf := make([]byte, chunk)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for off, i := int64(0), uint64(0); off < size; off, i = off+chunk, i+1 {
		for k := range 8 {
			buf[k] = byte(i >> (8 * k))
		}
		n := min(chunk, size-off)
		if _, err := f.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// linkOrCopy makes dst the same content as src: a hard link when both are
// on one filesystem, a copy otherwise.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// --- the uploader process ----------------------------------------------------

// delivery is the uploader's "delivered" log line.
type delivery struct {
	at           time.Time // when the line arrived
	URL          string    `json:"url"`
	OriginalSize int64     `json:"originalSize"`
	StoredSize   int64     `json:"storedSize"`
	Encoding     string    `json:"encoding"`
	Took         float64   `json:"took"` // seconds (zap's production encoding of durations)
	Verified     string    `json:"verified"`
}

// dcProc is a running `dumpcatcher upload`.
type dcProc struct {
	cmd   *exec.Cmd
	pid   int
	dir   string // the shared volume
	dumps string // dumps/app
	out   *lineLog
	done  chan struct{}
	err   error
	seq   int
}

// lineLog collects the process's output line by line, timestamping each
// line as it arrives and passing "delivered" lines on.
type lineLog struct {
	mu        sync.Mutex
	partial   []byte
	lines     []string
	watching  chan struct{} // closed at "watching for heap dumps"
	delivered chan delivery
}

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		if len(l.lines) < 10000 {
			l.lines = append(l.lines, line)
		}
		var head struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &head) != nil {
			continue
		}
		switch head.Msg {
		case "watching for heap dumps":
			select {
			case <-l.watching:
			default:
				close(l.watching)
			}
		case "delivered":
			d := delivery{at: now}
			if json.Unmarshal([]byte(line), &d) == nil {
				select {
				case l.delivered <- d:
				default: // nobody waits for that many; the log keeps it
				}
			}
		}
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.lines
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return strings.Join(s, "\n")
}

// startUploader starts `dumpcatcher upload` with compression on a fresh
// shared volume under r.work and waits until it watches for dumps.
func (r *rig) startUploader(b testing.TB, compression string) *dcProc {
	b.Helper()
	dir, err := os.MkdirTemp(r.work, "volume-")
	if err != nil {
		b.Fatal(err)
	}
	u := &dcProc{dir: dir, dumps: filepath.Join(dir, contract.DumpsDir, "app"), done: make(chan struct{}),
		out: &lineLog{watching: make(chan struct{}), delivered: make(chan delivery, 16)}}
	u.cmd = exec.Command(r.bin, "upload")
	u.cmd.Env = append(os.Environ(),
		contract.EnvDir+"="+dir, contract.EnvDestination+"="+r.srv.URL("dc-"+compression),
		contract.EnvCredentialsDir+"="+r.creds, contract.EnvCompression+"="+compression,
		contract.EnvContainers+"=app", contract.EnvPodName+"=bench-0", contract.EnvPodNamespace+"=bench",
		contract.EnvWorkload+"=deployment/bench", contract.EnvDrainTimeout+"=5s")
	u.cmd.Env = append(u.cmd.Env, strings.Fields(os.Getenv(envUploaderEnv))...)
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	if err := u.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	u.pid = u.cmd.Process.Pid
	go func() {
		u.err = u.cmd.Wait()
		close(u.done)
	}()
	b.Cleanup(func() { u.stop(b) })
	select {
	case <-u.out.watching:
	case <-u.done:
		b.Fatalf("dumpcatcher upload exited at start: %v\n%s", u.err, u.out)
	case <-time.After(readyTimeout):
		b.Fatalf("dumpcatcher upload not watching within %v:\n%s", readyTimeout, u.out)
	}
	return u
}

// stop sends SIGTERM and waits (SIGKILL after stopTimeout); with
// $DUMPCATCHER_BENCH_LOGDIR set it writes the process's whole output there.
// Idempotent.
func (u *dcProc) stop(b testing.TB) {
	select {
	case <-u.done:
		return
	default:
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.done:
	case <-time.After(stopTimeout):
		_ = u.cmd.Process.Kill()
		<-u.done
		b.Errorf("dumpcatcher upload did not stop within %v of SIGTERM; killed", stopTimeout)
	}
	if dir := os.Getenv(envLogDir); dir != "" {
		u.out.mu.Lock()
		data := strings.Join(u.out.lines, "\n") + "\n"
		u.out.mu.Unlock()
		name := filepath.Join(dir, fmt.Sprintf("%s-%s.log", strings.ReplaceAll(b.Name(), "/", "-"), filepath.Base(u.dir)))
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			b.Errorf("writing the uploader's log: %v", err)
		}
	}
}

// stage hard-links (or copies) src into the container's dump directory
// under a hidden name (the watcher ignores it); commit renames it into
// place, which is the moment the JVM's dump would appear.
func (u *dcProc) stage(b testing.TB, src string) (commit func() string) {
	b.Helper()
	u.seq++
	name := fmt.Sprintf("java_pid%d.hprof", 1000+u.seq)
	tmp := filepath.Join(u.dumps, "."+name)
	if err := linkOrCopy(src, tmp); err != nil {
		b.Fatal(err)
	}
	return func() string {
		if err := os.Rename(tmp, filepath.Join(u.dumps, name)); err != nil {
			b.Fatal(err)
		}
		return name
	}
}

// await waits for the delivery of file.
func (u *dcProc) await(b testing.TB, file string, within time.Duration) delivery {
	b.Helper()
	deadline := time.After(within)
	for {
		select {
		case d := <-u.out.delivered:
			if strings.Contains(d.URL, "-"+file) {
				return d
			}
			b.Logf("unexpected delivery %s", d.URL)
		case <-u.done:
			b.Fatalf("dumpcatcher upload exited: %v\n%s", u.err, u.out)
		case <-deadline:
			b.Fatalf("%s not delivered within %v:\n%s", file, within, u.out)
		}
	}
}

// --- the rig: MinIO, mc, the binary ------------------------------------------

type rig struct {
	srv      *miniotest.Server
	minioPID int
	bin      string // dumpcatcher
	creds    string
	work     string // temp files, the uploaders' volumes (one filesystem)
	mc       string
	mcEnv    []string
	mcTarget string // bench/<bucket>
}

func newRig(b *testing.B) *rig {
	mc := toolBinary("mc")
	if mc == "" {
		missing(b, "no mc binary in $%s or $%s (KUBEBUILDER_ASSETS=$(bash test/tools/install.sh minio mc))",
			miniotest.EnvToolsBin, miniotest.EnvAssets)
	}
	srv := miniotest.Start(b, miniotest.Options{})
	r := &rig{srv: srv, mc: mc, work: b.TempDir(), creds: b.TempDir(), mcTarget: "bench/" + srv.Bucket}
	if r.minioPID = findPID(srv.DataDir); r.minioPID == 0 {
		b.Fatal("cannot find the MinIO process")
	}
	srv.WriteCredentials(b, r.creds)
	if r.bin = os.Getenv(envBinary); r.bin == "" {
		r.bin = buildDumpcatcher(b, b.TempDir())
	} else {
		b.Logf("using the dumpcatcher binary %s ($%s)", r.bin, envBinary)
	}
	hostURL := url.URL{Scheme: "http", User: url.UserPassword(srv.AccessKey, srv.SecretKey), Host: srv.Addr}
	r.mcEnv = append(os.Environ(), "MC_HOST_bench="+hostURL.String(), "MC_CONFIG_DIR="+b.TempDir(), "MC_NO_COLOR=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.mc, "--quiet", "ls", r.mcTarget)
	cmd.Env = r.mcEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("mc ls %s: %v\n%s", r.mcTarget, err, out)
	}
	return r
}

// mcRun runs mc with args (stdin may be nil) and returns its process state.
func (r *rig) mcCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.mc, append([]string{"--quiet"}, args...)...)
	cmd.Env = r.mcEnv
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// stat returns the stored size of key in the bucket.
func (r *rig) stat(b testing.TB, key string) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	oi, err := r.srv.Client(b).StatObject(ctx, r.srv.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		b.Fatalf("stat %s: %v", key, err)
	}
	return oi.Size
}

// remove deletes key, so that the disk does not fill up with GiBs of
// benchmark objects.
func (r *rig) remove(b testing.TB, key string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.srv.Client(b).RemoveObject(ctx, r.srv.Bucket, key, minio.RemoveObjectOptions{ForceDelete: true}); err != nil {
		b.Errorf("removing %s: %v", key, err)
	}
}

// keyOf returns the object key of an s3://bucket/key URL.
func (r *rig) keyOf(b testing.TB, u string) string {
	b.Helper()
	key, ok := strings.CutPrefix(u, "s3://"+r.srv.Bucket+"/")
	if !ok {
		b.Fatalf("URL %s is not in bucket %s", u, r.srv.Bucket)
	}
	return key
}

// uploadDC uploads src with u and measures it from the rename into the
// dump directory until the "delivered" line arrives.
func (r *rig) uploadDC(b testing.TB, u *dcProc, src string, within time.Duration) (delivery, usage) {
	b.Helper()
	commit := u.stage(b, src)
	m := startMeter(r.minioPID, u.pid)
	name := commit()
	d := u.await(b, name, within)
	use := m.stop(d.at, 0)
	if got := r.stat(b, r.keyOf(b, d.URL)); got != d.StoredSize {
		b.Fatalf("%s: stored %d bytes, the log says %d", d.URL, got, d.StoredSize)
	}
	r.remove(b, r.keyOf(b, d.URL))
	return d, use
}

// peerResult is one upload by a peer command.
type peerResult struct {
	use    usage
	stored int64
	maxRSS int64 // the largest of the peer processes
}

// uploadMC runs `mc cp src bench/bucket/key`.
func (r *rig) uploadMC(b testing.TB, src, key string) peerResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mcTimeout)
	defer cancel()
	cmd := r.mcCmd(ctx, "cp", src, r.mcTarget+"/"+key)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	m := startMeter(r.minioPID, 0)
	err := cmd.Run()
	end := time.Now()
	if err != nil {
		b.Fatalf("mc cp: %v\n%s", err, out.String())
	}
	res := peerResult{use: m.stop(end, rusageCPU(cmd.ProcessState)), maxRSS: rusageMaxRSS(cmd.ProcessState)}
	res.stored = r.stat(b, key)
	r.remove(b, key)
	return res
}

// uploadGzipPipe runs `gzip -1 -c src | mc pipe bench/bucket/key`.
func (r *rig) uploadGzipPipe(b testing.TB, gzipBin, src, key string) peerResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mcTimeout)
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	gz := exec.CommandContext(ctx, gzipBin, "-1", "-c", src)
	mc := r.mcCmd(ctx, "pipe", r.mcTarget+"/"+key)
	var gzErr, mcOut bytes.Buffer
	gz.Stdout, gz.Stderr = pw, &gzErr
	mc.Stdin, mc.Stdout, mc.Stderr = pr, &mcOut, &mcOut
	m := startMeter(r.minioPID, 0)
	if err := gz.Start(); err != nil {
		b.Fatal(err)
	}
	if err := mc.Start(); err != nil {
		_ = gz.Process.Kill()
		_ = gz.Wait()
		b.Fatal(err)
	}
	pw.Close()
	pr.Close()
	errGz, errMC := gz.Wait(), mc.Wait()
	end := time.Now()
	if err := errors.Join(errGz, errMC); err != nil {
		b.Fatalf("gzip -1 | mc pipe: %v\ngzip: %s\nmc: %s", err, gzErr.String(), mcOut.String())
	}
	res := peerResult{
		use:    m.stop(end, rusageCPU(gz.ProcessState)+rusageCPU(mc.ProcessState)),
		maxRSS: max(rusageMaxRSS(gz.ProcessState), rusageMaxRSS(mc.ProcessState)),
	}
	res.stored = r.stat(b, key)
	r.remove(b, key)
	return res
}
