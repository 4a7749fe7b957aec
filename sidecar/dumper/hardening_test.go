package dumper

import (
	"bufio"
	"context"
	"fmt"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/syncbuf"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
)

// hit is what the app's server saw of a chained httpGet.
type hit struct {
	Local, Host, URI, UserAgent, Accept, Why string
}

// appServer serves on every address of the machine, like an app listening on
// 0.0.0.0, and records the local address each request came in on.
func appServer(t *testing.T, tlsOn bool) (port string, hits func() []hit) {
	t.Helper()
	var mu sync.Mutex
	var got []hit
	type localKey struct{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(localKey{}).(net.Addr)
		host, _, _ := net.SplitHostPort(local.String())
		mu.Lock()
		got = append(got, hit{Local: host, Host: r.Host, URI: r.URL.RequestURI(), UserAgent: r.Header.Get("User-Agent"),
			Accept: r.Header.Get("Accept"), Why: r.Header.Get("X-Why")})
		mu.Unlock()
	}))
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, localKey{}, c.LocalAddr())
	}
	if tlsOn {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port, func() []hit {
		mu.Lock()
		defer mu.Unlock()
		return append([]hit(nil), got...)
	}
}

// podAddress is the address the kubelet would use: the pod IP, here the
// first global unicast IPv4 address of the machine's interfaces.
func podAddress(t *testing.T) string {
	t.Helper()
	ip, why := podIP(systemInterfaces)
	if ip == nil {
		t.Skipf("no pod IP on this machine: %s", why)
	}
	return ip.String()
}

// TestThenHTTPGetLikeTheKubelet: the original httpGet preStop goes where
// the kubelet would send it (the pod IP when no host is given, not
// 127.0.0.1), with its scheme, path and query, headers and Host header.
func TestThenHTTPGetLikeTheKubelet(t *testing.T) {
	pod := podAddress(t)
	for _, tc := range []struct {
		name string
		tls  bool
		then string // %s is the port
		want hit
	}{
		{"pod IP, number", false, `{"httpGet":{"path":"/drain?now=1","port":%s,"httpHeaders":[{"name":"X-Why","value":"prestop"}]}}`,
			hit{Local: pod, URI: "/drain?now=1", UserAgent: "kube-lifecycle/dumpcatcher", Accept: "*/*", Why: "prestop"}},
		{"number as a string, Host header", false, `{"httpGet":{"path":"/stop","port":"%s","httpHeaders":[{"name":"Host","value":"app.example"},{"name":"User-Agent","value":"mine"}]}}`,
			hit{Local: pod, Host: "app.example", URI: "/stop", UserAgent: "mine", Accept: "*/*"}},
		{"HTTPS without certificate checks", true, `{"httpGet":{"path":"/tls","port":%s,"scheme":"HTTPS"}}`,
			hit{Local: pod, URI: "/tls", UserAgent: "kube-lifecycle/dumpcatcher", Accept: "*/*"}},
		{"HTTPS to an HTTP server: retried over HTTP", false, `{"httpGet":{"path":"/plain","port":%s,"scheme":"HTTPS"}}`,
			hit{Local: pod, URI: "/plain", UserAgent: "kube-lifecycle/dumpcatcher", Accept: "*/*"}},
		{"no path", false, `{"httpGet":{"port":%s}}`,
			hit{Local: pod, URI: "/", UserAgent: "kube-lifecycle/dumpcatcher", Accept: "*/*"}},
		{"explicit host", false, `{"httpGet":{"host":"127.0.0.1","path":"/x","port":%s}}`,
			hit{Local: "127.0.0.1", URI: "/x", UserAgent: "kube-lifecycle/dumpcatcher", Accept: "*/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port, hits := appServer(t, tc.tls)
			o, out, _ := options(t, 999999999, contract.PolicyAlways)
			o.Then = fmt.Sprintf(tc.then, port)
			o.Deadline = time.Now().Add(10 * time.Second)
			if err := Run(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want.Host == "" {
				want.Host = net.JoinHostPort(want.Local, port)
			}
			if d := cmp.Diff([]hit{want}, hits()); d != "" {
				t.Errorf("requests (-want +got):\n%s\noutput:\n%s", d, out)
			}
		})
	}
}

// TestThenHTTPGetNamedPort: a port still given by name (a pod injected by
// an older webhook) cannot be resolved here; the output says so and how to
// fix it, and the hook does not hang.
func TestThenHTTPGetNamedPort(t *testing.T) {
	o, out, _ := options(t, 999999999, contract.PolicyAlways)
	o.Then = `{"httpGet":{"path":"/drain","port":"http"}}`
	o.Deadline = time.Now().Add(10 * time.Second)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`port "http" is a name`, "the dumpcatcher webhook resolves named ports", "re-create the pod"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestThenHTTPGetBoundedByTheDeadline: an app that never answers its
// preStop request does not keep the hook past the container's deadline.
func TestThenHTTPGetBoundedByTheDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	o, out, _ := options(t, 999999999, contract.PolicyAlways)
	o.Then = `{"httpGet":{"host":"127.0.0.1","port":` + port + `}}`
	o.Deadline = time.Now().Add(2 * time.Second)
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v with a deadline 2 s away", d)
	}
	if !strings.Contains(out.String(), "the container's own preStop (httpGet) failed") {
		t.Errorf("output:\n%s", out)
	}
}

func TestPodIP(t *testing.T) {
	up := net.FlagUp | net.FlagRunning
	cidr := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	lo := iface{Name: "lo", Flags: up | net.FlagLoopback, Addrs: []net.Addr{cidr("127.0.0.1/8"), cidr("::1/128")}}
	for _, tc := range []struct {
		name   string
		ifaces []iface
		want   string
	}{
		{"IPv4 first", []iface{lo, {Name: "eth0", Flags: up, Addrs: []net.Addr{cidr("fe80::1/64"), cidr("fd00::2/64"), cidr("10.1.2.3/32")}}}, "10.1.2.3"},
		{"IPv6 only", []iface{lo, {Name: "eth0", Flags: up, Addrs: []net.Addr{cidr("fe80::1/64"), cidr("fd00::2/64")}}}, "fd00::2"},
		{"down interface skipped", []iface{{Name: "eth1", Flags: 0, Addrs: []net.Addr{cidr("10.9.9.9/24")}}, {Name: "eth0", Flags: up, Addrs: []net.Addr{cidr("10.1.2.3/24")}}}, "10.1.2.3"},
		{"link-local only", []iface{lo, {Name: "eth0", Flags: up, Addrs: []net.Addr{cidr("169.254.1.1/16"), cidr("fe80::1/64")}}}, ""},
		{"loopback only", []iface{lo}, ""},
	} {
		ip, why := podIP(func() ([]iface, error) { return tc.ifaces, nil })
		got := ""
		if ip != nil {
			got = ip.String()
		}
		if got != tc.want || (ip == nil && why == "") {
			t.Errorf("%s: podIP = %q (%s), want %q", tc.name, got, why, tc.want)
		}
	}
}

// startJVMOtherMountNS runs Hold in a mount namespace of its own, as a JVM
// of another container of the pod looks with shareProcessNamespace.
func startJVMOtherMountNS(t *testing.T) int {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	java, javac := realpart.Java(t)
	classes := t.TempDir()
	src := filepath.Join(classes, "Hold.java")
	if err := os.WriteFile(src, []byte(hproftest.HoldProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", classes, src).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	cmd := exec.Command(java, "-Xmx64m", "-cp", classes, "Hold", "4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.Remove(fmt.Sprintf("/tmp/.java_pid%d", pid))
		perf, _ := filepath.Glob(fmt.Sprintf("/tmp/hsperfdata_*/%d", pid))
		for _, f := range perf {
			os.Remove(f)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("the JVM did not get ready: %q %v", line, err)
	}
	return pid
}

// TestOtherContainersJVMsLeftAlone: with shareProcessNamespace (or hostPID)
// the JVMs of other containers are in /proc; the hook neither signals nor
// dumps them, even when named with --pid.
func TestOtherContainersJVMsLeftAlone(t *testing.T) {
	pid := startJVMOtherMountNS(t)
	o, out, dir := options(t, pid, contract.PolicyAlways)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := dumps(t, dir); len(got) != 0 || !strings.Contains(out.String(), "no JVM runs in this container") {
		t.Fatalf("the JVM of another mount namespace: dumps %v, output:\n%s", got, out)
	}
	if _, err := os.Stat(fmt.Sprintf("/tmp/.java_pid%d", pid)); err == nil {
		t.Errorf("the JVM of another mount namespace was made to start its attach listener")
	}
}

// TestHsperfdataFIFO: the app replaced its hsperfdata file by a FIFO (as its
// own uid). The hook neither blocks on it nor misses its deadline, and the
// chained preStop runs.
func TestHsperfdataFIFO(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the JVM and the FIFO's maker as the app's uid")
	}
	j := hproftest.Hold(t, hproftest.HoldSpec{LiveMB: 4, Opts: []string{"-Xmx64m", "-XX:-UsePerfData"}, UID: 1000, GID: 1000})
	dir := fmt.Sprintf("/tmp/hsperfdata_dumpcatcher-fifo-%d", j.PID)
	fifo := filepath.Join(dir, strconv.Itoa(j.PID))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	mk := exec.Command("mkfifo", fifo)
	mk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkfifo as uid 1000: %v\n%s", err, b)
	}
	t.Cleanup(func() {
		// Frees a reader blocked in open (the old code).
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		os.RemoveAll(dir)
	})
	for _, policy := range []string{contract.PolicyOnPressure, contract.PolicyAlways} {
		t.Run(policy, func(t *testing.T) {
			o, _, _ := options(t, j.PID, policy)
			// A dump directory the JVM's uid may write into, like the
			// shared volume's.
			dumpDir, err := os.MkdirTemp("", "dumper-fifo-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dumpDir) })
			if err := os.Chmod(dumpDir, 0o777); err != nil {
				t.Fatal(err)
			}
			o.Dir = dumpDir
			out := &syncbuf.Buffer{}
			o.Out = out
			marker := filepath.Join(t.TempDir(), "chained")
			o.Then = fmt.Sprintf(`{"exec":{"command":["sh","-c","echo ran > %s"]}}`, marker)
			o.Deadline = time.Now().Add(8 * time.Second)
			done := make(chan error, 1)
			go func() { done <- Run(context.Background(), o) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(time.Until(o.Deadline) + 2*time.Second):
				t.Fatalf("Run still running 2 s after the deadline:\n%s", out)
			}
			if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
				t.Errorf("the chained preStop did not run: %q %v\n%s", b, err, out)
			}
			if policy == contract.PolicyAlways && len(dumps(t, dumpDir)) != 1 {
				t.Errorf("no dump despite the FIFO:\n%s", out)
			}
			t.Logf("output:\n%s", out)
		})
	}
}

// TestThenRunsWhenTheDumpHangs: whatever the dump part blocks on (here the
// lock request, which ignores its context), the chained preStop runs before
// the container's deadline.
func TestThenRunsWhenTheDumpHangs(t *testing.T) {
	cmd := startJVM(t, 4, "-Xmx64m")
	o, _, _ := options(t, cmd.Process.Pid, contract.PolicyAlways)
	out := &syncbuf.Buffer{}
	o.Out = out
	marker := filepath.Join(t.TempDir(), "chained")
	o.Then = fmt.Sprintf(`{"exec":{"command":["sh","-c","echo ran > %s"]}}`, marker)
	o.Deadline = time.Now().Add(5 * time.Second)
	block := make(chan struct{})
	defer close(block)
	o.Lock = func(context.Context, time.Duration) (func(), error) {
		<-block
		return func() {}, nil
	}
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), o) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Until(o.Deadline) + 2*time.Second):
		t.Fatalf("Run still running 2 s after the deadline:\n%s", out)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
		t.Errorf("the chained preStop did not run: %q %v\n%s", b, err, out)
	}
	if !strings.Contains(out.String(), "the dump did not finish in time") {
		t.Errorf("output does not say the dump was given up:\n%s", out)
	}
}
