package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/syncbuf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/app"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
)

func TestParseUpload(t *testing.T) {
	base := map[string]string{contract.EnvDestination: "s3://dumps"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c app.Config)
	}{
		{name: "environment as the webhook sets it", env: with(contract.EnvDir, "/dc", contract.EnvContainers, "app, worker", contract.EnvPodName, "web-1", contract.EnvWorkload, "deployment/web"),
			check: func(t *testing.T, c app.Config) {
				if c.Dir != "/dc" || c.Destination.Bucket != "dumps" || c.Compression != "gzip" || c.Drain != 25*time.Second || c.QuietPeriod != 2*time.Minute ||
					strings.Join(c.Containers, ",") != "app,worker" || c.Identity.Pod != "web-1" || c.Identity.Workload != "deployment/web" {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "flags beat the environment", args: []string{"--compression", "zstd", "--dir", "/x"}, env: with(contract.EnvCompression, "none"),
			check: func(t *testing.T, c app.Config) {
				if c.Compression != "zstd" || c.Dir != "/x" {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "no destination", env: map[string]string{}, wantErr: "--destination ($DUMPCATCHER_DESTINATION): required"},
		{name: "bad destination", env: with(contract.EnvDestination, "gs://x"), wantErr: `--destination ($DUMPCATCHER_DESTINATION): unsupported scheme "gs"`},
		{name: "bad compression", env: with(contract.EnvCompression, "lz4"), wantErr: `--compression ($DUMPCATCHER_COMPRESSION): "lz4" is not one of gzip, zstd, none`},
		{name: "bad template", env: with(contract.EnvKeyTemplate, "{pod}"), wantErr: "--key-template ($DUMPCATCHER_KEY_TEMPLATE): key template \"{pod}\": must use {file} and {time}"},
		{name: "bad drain", env: with(contract.EnvDrainTimeout, "soon"), wantErr: `--drain-timeout ($DUMPCATCHER_DRAIN_TIMEOUT): "soon" is not a positive duration`},
		{name: "relative dir", args: []string{"--dir", "dumps"}, env: base, wantErr: `--dir ($DUMPCATCHER_DIR): "dumps" is not an absolute path`},
		{name: "missing CA file", env: with(contract.EnvCAFile, "/nonexistent/ca.pem"), wantErr: "--ca-file ($DUMPCATCHER_CA_FILE)"},
		{name: "bad container", env: with(contract.EnvContainers, "../etc"), wantErr: `--containers ($DUMPCATCHER_CONTAINERS): "../etc" is not a container name`},
		{name: "bad log level", env: with(contract.EnvLogLevel, "loud"), wantErr: "--log-level ($DUMPCATCHER_LOG_LEVEL)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseUpload(tt.args, &bytes.Buffer{}, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestRunCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"version"}, &out, &bytes.Buffer{}, os.Getenv); err != nil || out.String() != version+"\n" {
		t.Errorf("version: %q %v", out.String(), err)
	}
	if err := run([]string{"frobnicate"}, &out, &bytes.Buffer{}, os.Getenv); err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %v", err)
	}
	if err := run(nil, &out, &bytes.Buffer{}, os.Getenv); err == nil {
		t.Error("no command accepted")
	}
}

// buildBinary builds the real dumpcatcher binary for process-level tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dumpcatcher")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	done chan error
}

func (p *proc) logString() string { return p.logs.String() }

func startUpload(t *testing.T, bin, dir string, srv *miniotest.Server, creds string) *proc {
	return startUploadAs(t, bin, dir, srv, creds, nil)
}

// startUploadAs starts the uploader as cred (nil: this uid) with the
// environment the webhook injects, for pod shop/web-1 unless env overrides
// it.
func startUploadAs(t *testing.T, bin, dir string, srv *miniotest.Server, creds string, cred *syscall.Credential, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "upload")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Env = append(os.Environ(),
		contract.EnvDir+"="+dir, contract.EnvDestination+"="+srv.URL("e2e"), contract.EnvCredentialsDir+"="+creds,
		contract.EnvCompression+"=none", contract.EnvContainers+"=app", contract.EnvPodName+"=web-1", contract.EnvPodNamespace+"=shop",
		contract.EnvWorkload+"=deployment/web", contract.EnvDrainTimeout+"=5s")
	cmd.Env = append(cmd.Env, env...)
	p := &proc{cmd: cmd, logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func waitLog(t *testing.T, p *proc, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.logString(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log within %v:\n%s", s, within, p.logString())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func listObjects(t *testing.T, srv *miniotest.Server) []minio.ObjectInfo {
	t.Helper()
	var out []minio.ObjectInfo
	for oi := range srv.Client(t).ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Prefix: "e2e/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		out = append(out, oi)
	}
	return out
}

// TestSIGKILLMidUploadThenRestart kills the uploader process with SIGKILL in
// the middle of an upload and starts it again: the dump is delivered once.
func TestSIGKILLMidUploadThenRestart(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	creds := t.TempDir()
	srv.WriteCredentials(t, creds)
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startUpload(t, bin, dir, srv, creds)

	// The binary places itself for the preStop hook, executable by anyone.
	placed := filepath.Join(dir, "bin", "dumpcatcher")
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(placed)
		if err == nil && fi.Mode().Perm() == 0o755 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("binary not placed: %v\n%s", err, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The dump directories are made after the binary is placed.
	waitLog(t, p, `"msg":"watching for heap dumps"`, 10*time.Second)
	if fi, err := os.Stat(filepath.Join(dir, "dumps", "app")); err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("dump directory of container app: %v %v", fi, err)
	}

	// 640 MiB: several seconds of upload, so the kill lands in the middle.
	chunk := make([]byte, 16<<20)
	if _, err := rand.Read(chunk); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	tmp := filepath.Join(dir, "dumps", "app", ".java_pid1.hprof")
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		chunk[0] = byte(i)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want.Write(chunk)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "dumps", "app", "java_pid1.hprof")); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, `"msg":"claimed"`, 20*time.Second)
	time.Sleep(700 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the cleanup
	if objs := listObjects(t, srv); len(objs) != 0 {
		t.Fatalf("an object appeared before the upload finished: %v", objs[0].Key)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".spool", "*.data")); len(left) != 1 {
		t.Fatalf("spool after SIGKILL: %v", left)
	}

	p2 := startUpload(t, bin, dir, srv, creds)
	deadline = time.Now().Add(60 * time.Second)
	var objs []minio.ObjectInfo
	for len(objs) == 0 && time.Now().Before(deadline) {
		objs = listObjects(t, srv)
		time.Sleep(100 * time.Millisecond)
	}
	if len(objs) != 1 {
		t.Fatalf("objects after the restart: %d\n%s", len(objs), p2.logs.String())
	}
	o, err := srv.Client(t).GetObject(context.Background(), srv.Bucket, objs[0].Key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close() // else minio-go's reader goroutine outlives the test (goleak)
	got := sha256.New()
	if _, err := io.Copy(got, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("delivered content differs")
	}
	for up := range srv.Client(t).ListIncompleteUploads(context.Background(), srv.Bucket, objs[0].Key, false) {
		if up.Err == nil {
			t.Errorf("the killed process's incomplete multipart upload %s is still there", up.UploadID)
		}
	}

	// SIGTERM: a clean stop that says everything was delivered.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p2.done:
		p2.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p2.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
	if !strings.Contains(p2.logs.String(), "every dump was delivered") {
		t.Errorf("stop log does not say every dump was delivered:\n%s", p2.logs.String())
	}
	if !strings.Contains(p2.logs.String(), `"msg":"delivered"`) || !strings.Contains(p2.logs.String(), `"url":"s3://dumps/e2e/shop/deployment-web/web-1/app/`) {
		t.Errorf("no delivered line with the object URL:\n%s", p2.logs.String())
	}
	if strings.Contains(p2.logs.String(), srv.SecretKey) {
		t.Error("the secret key appears in the logs")
	}
}

// openDir is a temporary directory any uid may use.
func openDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dumpcatcher-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUnreadableDumpDoesNotCrash runs the uploader as uid 1000 next to a
// dump only root may read (a JVM of another uid writes mode 0600): it says
// what to fix, keeps the dump, keeps running, and delivers the dump once it
// becomes readable.
func TestUnreadableDumpDoesNotCrash(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the uploader as another uid")
	}
	srv := miniotest.Start(t, miniotest.Options{})
	creds := openDir(t)
	srv.WriteCredentials(t, creds)
	for _, f := range []string{"accessKeyID", "secretAccessKey"} {
		if err := os.Chmod(filepath.Join(creds, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	binDir := openDir(t)
	bin := buildBinary(t)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(binDir, "dumpcatcher")
	if err := os.WriteFile(shared, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := openDir(t)
	p := startUploadAs(t, shared, dir, srv, creds, &syscall.Credential{Uid: 1000, Gid: 1000})
	waitLog(t, p, `"msg":"watching for heap dumps"`, 10*time.Second)
	dump := filepath.Join(dir, "dumps", "app", "java_pid1.hprof")
	if err := os.WriteFile(dump, []byte("JAVA PROFILE 1.0.2\x00not really"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "cannot read a dump", 10*time.Second)
	if !strings.Contains(p.logString(), "runAsUser") {
		t.Errorf("the error does not say how to fix it:\n%s", p.logString())
	}
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("the uploader exited: %v\n%s", err, p.logString())
	case <-time.After(2 * time.Second):
	}
	spooled, _ := filepath.Glob(filepath.Join(dir, ".spool", "*.data"))
	if len(spooled) != 1 {
		t.Fatalf("spool: %v", spooled)
	}
	if err := os.Chown(spooled[0], 1000, 1000); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(listObjects(t, srv)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the file became readable:\n%s", p.logString())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := strings.Count(p.logString(), "cannot read a dump"); n != 1 {
		t.Errorf("the read error was logged %d times, want once", n)
	}
}

// TestHelp: every way of asking for help lists the commands, on stdout.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help", "help"} {
		var out, errOut bytes.Buffer
		if err := run([]string{arg}, &out, &errOut, os.Getenv); err != nil {
			t.Errorf("%s: %v", arg, err)
		}
		if diff := cmp.Diff(usage, out.String()); diff != "" || errOut.Len() != 0 {
			t.Errorf("%s: stdout (-want +got):\n%s\nstderr: %s", arg, diff, errOut.String())
		}
	}
	for _, cmd := range []string{"upload", "dump", "version"} {
		if !regexp.MustCompile(`(?m)^  ` + cmd + ` +\S`).MatchString(usage) {
			t.Errorf("usage does not list %s:\n%s", cmd, usage)
		}
	}
	// A command's --help is its flags, and no error.
	for _, cmd := range []string{"upload", "dump"} {
		var errOut bytes.Buffer
		if err := run([]string{cmd, "--help"}, &bytes.Buffer{}, &errOut, func(string) string { return "" }); err != nil {
			t.Errorf("%s --help: %v", cmd, err)
		}
		if !strings.Contains(errOut.String(), "Usage of dumpcatcher "+cmd) {
			t.Errorf("%s --help printed:\n%s", cmd, errOut.String())
		}
	}
}
