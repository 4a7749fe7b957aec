package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/syncbuf"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
)

// lockPod is one pod of deployment shop/web: an uploader with its shared
// volume and a JVM of uid 1000 in its app container.
type lockPod struct {
	name   string
	shared string
	up     *proc
	jvm    *hproftest.Holder
}

func startLockPod(t *testing.T, bin, name string, srv *miniotest.Server, creds string) *lockPod {
	t.Helper()
	shared := openDir(t)
	p := &lockPod{name: name, shared: shared}
	p.up = startUploadAs(t, bin, shared, srv, creds, nil, contract.EnvPodName+"="+name)
	waitLog(t, p.up, `"msg":"watching for heap dumps"`, 10*time.Second)
	if fi, err := os.Stat(filepath.Join(shared, contract.BinDir, contract.LockSocketName)); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Fatalf("lock socket of %s: %v %v\n%s", name, fi, err, p.up.logString())
	}
	p.jvm = hproftest.Hold(t, hproftest.HoldSpec{LiveMB: 150, Opts: []string{"-Xmx400m"}, UID: 1000, GID: 1000})
	return p
}

// preStop runs the hook as the webhook writes it, from the shared volume,
// as the app's uid.
func (p *lockPod) preStop(grace int) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.shared, contract.BinDir, contract.BinaryName), contract.CmdDump,
		contract.FlagReason+"="+contract.ReasonPreStop, contract.FlagPolicy+"="+contract.PolicyAlways,
		contract.FlagDir+"="+filepath.Join(p.shared, contract.DumpsDir, "app"), contract.FlagContainer+"=app",
		contract.FlagNamespace+"=shop", contract.FlagWorkload+"=deployment/web",
		fmt.Sprintf("%s=%d", contract.FlagGracePeriod, grace), fmt.Sprintf("--pid=%d", p.jvm.PID))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	return cmd
}

func runPreStop(t *testing.T, p *lockPod) string {
	t.Helper()
	out, err := p.preStop(30).CombinedOutput()
	if err != nil {
		t.Fatalf("preStop of %s: %v\n%s", p.name, err, out)
	}
	return string(out)
}

func lockRecord(t *testing.T, srv *miniotest.Server) dumplock.Record {
	t.Helper()
	o, err := srv.Client(t).GetObject(context.Background(), srv.Bucket, "e2e/"+dumplock.KeyPrefix+"/shop/deployment/web.json", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	data, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("lock object: %v", err)
	}
	var rec dumplock.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("lock object %q: %v", data, err)
	}
	return rec
}

func dumpObjects(t *testing.T, srv *miniotest.Server) []string {
	t.Helper()
	var keys []string
	for _, o := range listObjects(t, srv) {
		if strings.Contains(o.Key, "-prestop-") {
			keys = append(keys, o.Key)
		}
	}
	return keys
}

// TestPreStopLockAcrossPods: two pods of one Deployment run their preStop
// hooks at once (real uploaders, real JVMs of a non-root uid, a real
// MinIO): one dumps, the other skips and says why. Then a holder is killed
// with its lock held: the other pod skips until the lock expires, then
// dumps.
func TestPreStopLockAcrossPods(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the JVMs and hooks as another uid")
	}
	srv := miniotest.Start(t, miniotest.Options{})
	creds := t.TempDir()
	srv.WriteCredentials(t, creds)
	bin := buildBinary(t)
	a := startLockPod(t, bin, "web-a", srv, creds)
	b := startLockPod(t, bin, "web-b", srv, creds)

	var outA, outB bytes.Buffer
	hookA, hookB := a.preStop(30), b.preStop(30)
	hookA.Stdout, hookA.Stderr = &outA, &outA
	hookB.Stdout, hookB.Stderr = &outB, &outB
	if err := hookA.Start(); err != nil {
		t.Fatal(err)
	}
	if err := hookB.Start(); err != nil {
		t.Fatal(err)
	}
	errA, errB := hookA.Wait(), hookB.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("hooks: %v %v\n%s\n%s", errA, errB, outA.String(), outB.String())
	}
	dumped, skipped := outA.String(), outB.String()
	holder := "shop/web-a"
	if !strings.Contains(dumped, "heap dump written") {
		dumped, skipped, holder = skipped, dumped, "shop/web-b"
	}
	if !strings.Contains(dumped, "heap dump written") || strings.Contains(skipped, "heap dump written") {
		t.Fatalf("want exactly one dump:\n--- web-a:\n%s--- web-b:\n%s", outA.String(), outB.String())
	}
	if want := "no dump: another pod of the workload is taking a heap dump (" + holder + " holds the dump lock until"; !strings.Contains(skipped, want) {
		t.Fatalf("the skipping pod does not say why; want %q in:\n%s", want, skipped)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(dumpObjects(t, srv)) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := dumpObjects(t, srv); len(got) != 1 {
		t.Fatalf("preStop dumps in the bucket: %q; want one (all objects: %v)", got, listObjects(t, srv))
	}
	if rec := lockRecord(t, srv); !rec.Released || rec.Holder != holder {
		t.Fatalf("lock after the dump: %+v; want released by %s", rec, holder)
	}

	// Pod a's hook hangs on a stopped JVM with the lock held; then the pod
	// is killed: hook and uploader die without releasing.
	if err := a.jvm.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const taken = "dump lock taken for this pod's preStop dump"
	before := strings.Count(a.up.logString(), taken) // 1 if pod a dumped above
	hang := a.preStop(4)
	var hangOut syncbuf.Buffer
	hang.Stdout, hang.Stderr = &hangOut, &hangOut
	if err := hang.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); strings.Count(a.up.logString(), taken) == before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pod a's hook did not take the lock:\n%s\n%s", hangOut.String(), a.up.logString())
		}
	}
	// The uploader first: a hook that dies alone closes its connection, and
	// its uploader releases the lock at once (TestSocket in dumplock).
	if err := a.up.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.up.done <- <-a.up.done // reaped; left for the cleanup
	_ = hang.Process.Kill()
	_ = hang.Wait()
	rec := lockRecord(t, srv)
	if rec.Released || rec.Holder != "shop/web-a" {
		t.Fatalf("lock after the kill: %+v; want held by shop/web-a\nhook:\n%s\nuploader:\n%s", rec, hangOut.String(), a.up.logString())
	}
	// 4 s of grace plus the margin: the kubelet would have killed pod a by then.
	if ttl := rec.Expires.Sub(rec.Acquired); ttl < 8*time.Second || ttl > 10*time.Second {
		t.Errorf("lock lifetime %v; want the grace period plus 5 s", ttl)
	}
	if out := runPreStop(t, b); !strings.Contains(out, "no dump: another pod of the workload is taking a heap dump (shop/web-a holds") {
		t.Fatalf("pod b while the dead pod's lock lasts:\n%s", out)
	}
	time.Sleep(time.Until(rec.Expires) + 100*time.Millisecond)
	if out := runPreStop(t, b); !strings.Contains(out, "heap dump written") {
		t.Fatalf("pod b after the dead pod's lock expired:\n%s", out)
	}
	deadline = time.Now().Add(60 * time.Second)
	for len(dumpObjects(t, srv)) < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := dumpObjects(t, srv); len(got) != 2 {
		t.Fatalf("preStop dumps in the bucket: %q; want two", got)
	}

	// On demand, as kubectl exec runs it (no hook flags): the dump command
	// prints the object URL the uploader will use, and the dump arrives there.
	manual := exec.Command(filepath.Join(b.shared, contract.BinDir, contract.BinaryName), contract.CmdDump,
		"--dir="+filepath.Join(b.shared, contract.DumpsDir, "app"), fmt.Sprintf("--pid=%d", b.jvm.PID))
	manual.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	out, err := manual.CombinedOutput()
	if err != nil {
		t.Fatalf("manual dump: %v\n%s", err, out)
	}
	want := fmt.Sprintf("the dumpcatcher sidecar uploads it to s3://%s/e2e/shop/deployment-web/web-b/app/<time>-manual-pid%d.hprof\n", srv.Bucket, b.jvm.PID)
	if !strings.HasSuffix(string(out), want) {
		t.Fatalf("manual dump output:\n%s\nwant it to end with %q", out, want)
	}
	re := regexp.MustCompile(fmt.Sprintf(`^e2e/shop/deployment-web/web-b/app/\d{8}T\d{6}\.\d{3}Z-manual-pid%d\.hprof$`, b.jvm.PID))
	deadline = time.Now().Add(60 * time.Second)
	for {
		var found []string
		for _, o := range listObjects(t, srv) {
			if strings.Contains(o.Key, "-manual-") {
				found = append(found, o.Key)
			}
		}
		if len(found) == 1 && re.MatchString(found[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("manual dump objects %q; want one matching %s", found, re)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLockSocketRefusesEndlessLock: a process of the app asks the real
// uploader for the workload's lock for 285 years (LOCK 9000000000000). It is
// refused, no lock object is written, and the preStop hook of the pod still
// takes the lock.
func TestLockSocketRefusesEndlessLock(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	creds := t.TempDir()
	srv.WriteCredentials(t, creds)
	bin := buildBinary(t)
	shared := openDir(t)
	up := startUploadAs(t, bin, shared, srv, creds, nil)
	waitLog(t, up, `"msg":"watching for heap dumps"`, 10*time.Second)
	socket := filepath.Join(shared, contract.BinDir, contract.LockSocketName)

	// The attacker (the socket takes any uid; it does not matter which).
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "LOCK 9000000000000\n"); err != nil {
		t.Fatal(err)
	}
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(answer, "UNAVAILABLE ttl 9000000000000ms is too long: a dump lock lasts at most 1h0m5s") {
		t.Fatalf("answer to LOCK 9000000000000: %q %v\nuploader:\n%s", answer, err, up.logString())
	}
	if _, err := srv.Client(t).StatObject(context.Background(), srv.Bucket, "e2e/"+dumplock.KeyPrefix+"/shop/deployment/web.json", minio.StatObjectOptions{}); err == nil {
		t.Fatalf("a lock object was written\nuploader:\n%s", up.logString())
	}
	// The hook's own request (the grace period plus 5 s) is granted.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	release, expires, err := dumplock.Request(ctx, socket, 35*time.Second)
	if err != nil {
		t.Fatalf("the hook's lock request: %v\nuploader:\n%s", err, up.logString())
	}
	release()
	if d := time.Until(expires); d < 30*time.Second || d > 35*time.Second {
		t.Errorf("the hook's lock expires in %v; want about 35s", d)
	}
}
