// Package miniotest runs a real MinIO server for tests, on 127.0.0.1 only.
//
// The minio binary is taken from $DUMPCATCHER_TOOLS_BIN/minio or
// $KUBEBUILDER_ASSETS/minio (`make test` builds it and sets the latter; see
// test/tools/install.sh). Without it tests are skipped, unless
// DUMPCATCHER_REQUIRE_REAL is set, in which case they fail.
//
//	srv := miniotest.Start(t, miniotest.Options{})
//	dest := srv.URL("some/prefix") // s3://dumps/some/prefix?endpoint=http://127.0.0.1:NNNN&...
//
// A Server can be stopped and started again on the same port and data
// directory (outage tests); t.Cleanup stops it for good.
package miniotest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
)

// Environment variables the harness reads (through realpart, which decides
// for every test what a missing real part means).
const (
	EnvToolsBin    = realpart.EnvToolsBin
	EnvAssets      = realpart.EnvAssets
	EnvRequireReal = realpart.EnvRequireReal
)

// Defaults of Options.
const (
	DefaultBucket    = "dumps"
	DefaultAccessKey = "dumpcatcher-test"
	DefaultSecretKey = "dumpcatcher-test-secret-8f2c1e"
	Region           = "us-east-1"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Options configure Start. The zero value is usable.
type Options struct {
	// Bucket to create, DefaultBucket when empty.
	Bucket string
	// AccessKey and SecretKey of the root user, the defaults when empty.
	AccessKey, SecretKey string
	// TLS serves https with a certificate for 127.0.0.1 signed by a CA
	// generated for the test (Server.CAFile).
	TLS bool
}

// Server is a running (or stopped) MinIO.
type Server struct {
	// Endpoint is http(s)://127.0.0.1:port.
	Endpoint string
	// Addr is 127.0.0.1:port.
	Addr string
	// Bucket was created at start.
	Bucket string
	// AccessKey and SecretKey of the root user.
	AccessKey, SecretKey string
	// DataDir holds the objects; it survives Stop.
	DataDir string
	// CAFile is the PEM of the CA that signed the server certificate (TLS
	// only).
	CAFile string

	bin, consoleAddr, certsDir string
	tls                        bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
	logs *tailBuffer
}

// Binary returns the path of the minio binary, or "" when there is none.
func Binary() string { return realpart.Find("minio") }

// Start starts MinIO with a fresh data directory and creates the bucket. It
// skips the test when the binary is missing (fails when
// DUMPCATCHER_REQUIRE_REAL is set) and fails it when MinIO does not come up.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := realpart.Tool(t, "minio")
	s := &Server{
		Bucket:    opts.Bucket,
		AccessKey: opts.AccessKey,
		SecretKey: opts.SecretKey,
		DataDir:   filepath.Join(t.TempDir(), "data"),
		certsDir:  filepath.Join(t.TempDir(), "certs"),
		bin:       bin,
		tls:       opts.TLS,
	}
	if s.Bucket == "" {
		s.Bucket = DefaultBucket
	}
	if s.AccessKey == "" {
		s.AccessKey = DefaultAccessKey
	}
	if s.SecretKey == "" {
		s.SecretKey = DefaultSecretKey
	}
	for _, d := range []string{s.DataDir, s.certsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if s.tls {
		// The server pair where minio expects it (certsDir/public.crt and
		// private.key), the CA next to certsDir.
		pair := certs.NewCA(t).Serving(t, "127.0.0.1", "localhost")
		pair.WriteAs(t, s.certsDir, "public.crt", "private.key", "")
		s.CAFile = filepath.Join(filepath.Dir(s.certsDir), "ca.crt")
		pair.WriteAs(t, filepath.Dir(s.certsDir), "", "", "ca.crt")
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping minio: %v", err)
		}
	})

	// Free ports are picked by binding and releasing them, so another
	// process may take one in between: try a few times.
	var err error
	for range 3 {
		if err = s.pickPorts(); err != nil {
			break
		}
		if err = s.Start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting minio: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: Region}); err != nil {
		t.Fatalf("creating bucket %s: %v", s.Bucket, err)
	}
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) pickPorts() error {
	api, err := freePort()
	if err != nil {
		return err
	}
	console, err := freePort()
	if err != nil {
		return err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(api))
	s.consoleAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(console))
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	s.Endpoint = scheme + "://" + s.Addr
	return nil
}

// Start starts a stopped server again on the same address and data
// directory and waits until it is live. Calling it on a running server is
// an error.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("minio is already running")
	}
	cmd := exec.Command(s.bin, "server", s.DataDir,
		"--address", s.Addr, "--console-address", s.consoleAddr, "--certs-dir", s.certsDir, "--quiet")
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_REGION="+Region,
	)
	s.logs = &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := s.waitLive(done); err != nil {
		s.killLocked()
		return fmt.Errorf("%w\nminio output:\n%s", err, s.logs.String())
	}
	return nil
}

func (s *Server) httpClient() (*http.Client, error) {
	tr := &http.Transport{}
	if s.tls {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}, nil
}

func (s *Server) waitLive(done <-chan struct{}) error {
	hc, err := s.httpClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := hc.Get(s.Endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("minio exited during start")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio not live at %s after %v (last error: %v)", s.Endpoint, startTimeout, err)
		}
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. The data directory stays. Stopping a stopped server is a no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.killLocked()
		return fmt.Errorf("minio did not stop within %v of SIGTERM; killed", stopTimeout)
	}
	s.cmd = nil
	return nil
}

// Kill stops the server the hard way (SIGKILL), as a crash would: requests in
// flight fail at once. Start starts it again on the same address and data.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.killLocked()
	}
}

func (s *Server) killLocked() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Logs returns the last 64 KiB of the server's output.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// Client returns a minio-go client with the root credentials.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	tr, err := minio.DefaultTransport(s.tls)
	if err != nil {
		t.Fatal(err)
	}
	if s.tls {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig.RootCAs = pool
	}
	c, err := minio.New(s.Addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:       s.tls,
		Transport:    tr,
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// URL returns the destination URL of prefix in the server's bucket:
// s3://bucket/prefix?endpoint=...&region=us-east-1&path-style=true.
func (s *Server) URL(prefix string) string {
	q := url.Values{"endpoint": {s.Endpoint}, "region": {Region}, "path-style": {"true"}}
	u := url.URL{Scheme: "s3", Host: s.Bucket, Path: "/" + prefix, RawQuery: q.Encode()}
	return u.String()
}

// WriteCredentials writes the server's keys as a mounted credentials Secret
// would (accessKeyID, secretAccessKey) into dir.
func (s *Server) WriteCredentials(t testing.TB, dir string) {
	t.Helper()
	WriteKeys(t, dir, "accessKeyID", s.AccessKey, "secretAccessKey", s.SecretKey)
}

// WriteKeys writes name/value pairs as files into dir, each atomically
// (temporary file and rename), as the kubelet updates a Secret volume.
func WriteKeys(t testing.TB, dir string, nameValues ...string) {
	t.Helper()
	if len(nameValues)%2 != 0 {
		t.Fatal("WriteKeys: odd number of arguments")
	}
	for i := 0; i < len(nameValues); i += 2 {
		tmp := filepath.Join(dir, "."+nameValues[i]+".tmp")
		if err := os.WriteFile(tmp, []byte(nameValues[i+1]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, nameValues[i])); err != nil {
			t.Fatal(err)
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
