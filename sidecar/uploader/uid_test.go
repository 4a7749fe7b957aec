package uploader

import (
	"bytes"
	"context"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/syncbuf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
)

const (
	appUID      = 1000 // the app container's uid: the attacker
	uploaderUID = 2000 // the uploader's uid: only it may read the credentials
)

// asApp runs a shell script as the app's uid, as a process in a compromised
// app container would.
func asApp(t *testing.T, script string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-ec", "umask 022\n" + script, "sh"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// publicDir is a new directory mode perm owned by uid.
func publicDir(t *testing.T, perm os.FileMode, uid int) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dumpcatcher-uid-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, uid, uid); err != nil {
		t.Fatal(err)
	}
	return d
}

func waitFor(t *testing.T, what string, within time.Duration, logs *syncbuf.Buffer, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; uploader log:\n%s", what, within, logs)
		}
	}
}

// startChild runs an uploader process (runChild) as uploaderUID on the
// shared volume dir, optionally with its first upload held.
func startChild(t *testing.T, dir, destination, creds string, gate bool) (*exec.Cmd, *syncbuf.Buffer, chan error) {
	t.Helper()
	// The test binary, where uid 2000 may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(publicDir(t, 0o755, 0), "uploader.test")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uploaderUID, Gid: uploaderUID}}
	cmd.Env = append(os.Environ(), envChild+"=1", "CHILD_DIR="+dir, "CHILD_DESTINATION="+destination, "CHILD_CREDENTIALS="+creds)
	if gate {
		cmd.Env = append(cmd.Env, "CHILD_GATE=1")
	}
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, logs, exited
}

// stopChild sends SIGTERM and waits for a clean exit.
func stopChild(t *testing.T, cmd *exec.Cmd, logs *syncbuf.Buffer, exited chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("uploader: %v\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the uploader did not stop within 15 s of SIGTERM:\n%s", logs)
	}
}

// TestSymlinkSwapAsTheAppUID is issue 11's attack, deterministically: the
// uploader runs as uid 2000 with a credentials file only it may read (0600),
// the app as uid 1000 writes two dumps into a directory it owns (so they are
// uploaded in place), and while the single worker is busy with the first
// (held by the test's bucket), it renames a link to the credentials over the
// second, already claimed, dump. The credentials must not reach the bucket:
// the second dump's own bytes do, and the link is refused with a log line.
func TestSymlinkSwapAsTheAppUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the uploader and the app as other uids")
	}
	srv := miniotest.Start(t, miniotest.Options{})
	creds := publicDir(t, 0o700, uploaderUID)
	srv.WriteCredentials(t, creds)
	for _, f := range []string{"accessKeyID", "secretAccessKey"} {
		if err := os.Chown(filepath.Join(creds, f), uploaderUID, uploaderUID); err != nil {
			t.Fatal(err)
		}
	}
	secretFile := filepath.Join(creds, "secretAccessKey")
	if out, err := asApp(t, `cat "$1"`, secretFile); err == nil {
		t.Fatalf("the app's uid can read the credentials itself: %s", out)
	}

	shared := publicDir(t, 0o755, uploaderUID)
	cmd, logs, exited := startChild(t, shared, srv.URL("cluster-a"), creds, true)
	has := func(s string, n int) func() bool { return func() bool { return strings.Count(logs.String(), s) >= n } }
	waitFor(t, "watching", 20*time.Second, logs, has(`"msg":"watching for heap dumps"`, 1))

	// The app writes two dumps into a directory of its own.
	src := publicDir(t, 0o755, 0)
	first, second := hproftest.Synthetic(2, 1000), hproftest.Synthetic(3, 1000)
	for name, data := range map[string][]byte{"first": first, "second": second} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	app := filepath.Join(shared, "dumps", "app")
	if out, err := asApp(t, `mkdir -m 0755 "$1"; cp "$2/first" "$1/java_pid1.hprof"`, app, src); err != nil {
		t.Fatalf("app: %v\n%s", err, out)
	}
	waitFor(t, "the first upload held", 20*time.Second, logs, has("test gate: holding the first upload", 1))
	if out, err := asApp(t, `cp "$2/second" "$1/java_pid2.hprof"`, app, src); err != nil {
		t.Fatalf("app: %v\n%s", err, out)
	}
	waitFor(t, "both claimed", 20*time.Second, logs, has(`"msg":"claimed"`, 2))
	if !strings.Contains(logs.String(), "uploading it in place") {
		t.Fatalf("the dumps were not claimed in place:\n%s", logs)
	}
	// The swap, while the worker is busy.
	if out, err := asApp(t, `ln -s "$2" "$1/.swap"; mv -T "$1/.swap" "$1/java_pid2.hprof"`, app, secretFile); err != nil {
		t.Fatalf("app: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond) // the watcher sees the link
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two uploads", 30*time.Second, logs, has(`"msg":"delivered"`, 2))
	stopChild(t, cmd, logs, exited)

	c := srv.Client(t)
	var got [][]byte
	for oi := range c.ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		o, err := c.GetObject(context.Background(), srv.Bucket, oi.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(srv.SecretKey)) {
			t.Errorf("the credentials reached the bucket as %s", oi.Key)
		}
		got = append(got, data)
	}
	if len(got) != 2 || !(bytes.Equal(got[0], first) && bytes.Equal(got[1], second) || bytes.Equal(got[1], first) && bytes.Equal(got[0], second)) {
		t.Errorf("the bucket holds %d objects, want the two dumps as the app wrote them", len(got))
	}
	if !strings.Contains(logs.String(), "not a regular file (a symbolic link)") {
		t.Errorf("no log line refusing the link:\n%s", logs)
	}
	if strings.Contains(logs.String(), srv.SecretKey) {
		t.Error("the secret appears in the uploader's log")
	}
}

// TestUnreadableDumpIsSetAsideAndOthersGoOn: the uploader (uid 2000) may not
// read a dump (another uid's, mode 0600). It keeps it and retries, but the
// dumps after it are delivered meanwhile, and after maxFileErrors tries it
// is set aside with one log line instead of being retried forever.
func TestUnreadableDumpIsSetAsideAndOthersGoOn(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the uploader as another uid")
	}
	out := publicDir(t, 0o700, uploaderUID)
	shared := publicDir(t, 0o755, uploaderUID)
	cmd, logs, exited := startChild(t, shared, "file://"+out, "", false)
	has := func(s string, n int) func() bool { return func() bool { return strings.Count(logs.String(), s) >= n } }
	waitFor(t, "watching", 20*time.Second, logs, has(`"msg":"watching for heap dumps"`, 1))
	app := filepath.Join(shared, "dumps", "app")
	if err := os.Mkdir(app, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(app, 0o777); err != nil {
		t.Fatal(err)
	}
	writeDump(t, filepath.Join(app, "java_pid1.hprof"), hproftest.Synthetic(2, 100)) // 0600, root's
	waitFor(t, "the read error", 20*time.Second, logs, has("cannot read a dump", 1))
	readable := hproftest.Synthetic(3, 100)
	if err := os.WriteFile(filepath.Join(app, "java_pid2.hprof"), readable, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the readable dump delivered", 10*time.Second, logs, has(`"msg":"delivered"`, 1))
	if strings.Contains(logs.String(), "setting a dump aside") {
		t.Errorf("the unreadable dump was set aside before the readable one was delivered (%v after it was written)", time.Since(start))
	}
	waitFor(t, "the unreadable dump set aside", 30*time.Second, logs, has(`"why":"unreadable"`, 1))
	stopChild(t, cmd, logs, exited)
	if n := strings.Count(logs.String(), "cannot read a dump"); n != 1 {
		t.Errorf("the read error was logged %d times, want once", n)
	}
	if n := strings.Count(logs.String(), "setting a dump aside"); n != 1 {
		t.Errorf("%d lines setting a dump aside, want 1:\n%s", n, logs)
	}
	if failed, _ := filepath.Glob(filepath.Join(shared, ".spool", "failed", "*.data")); len(failed) != 1 {
		t.Errorf("failed/: %v", failed)
	}
	if left, _ := filepath.Glob(filepath.Join(shared, ".spool", "*.json")); len(left) != 0 {
		t.Errorf("records left in the spool: %v", left)
	}
}
