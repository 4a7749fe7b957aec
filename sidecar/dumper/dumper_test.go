package dumper

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
	"github.com/dumpcatcher/dumpcatcher/sidecar/jvm"
)

// startJVM runs a JVM that holds mb MiB live and then sleeps.
func startJVM(t *testing.T, mb int, jvmArgs ...string) *exec.Cmd {
	t.Helper()
	return hproftest.Hold(t, hproftest.HoldSpec{LiveMB: mb, Opts: jvmArgs}).Cmd
}

func options(t *testing.T, pid int, policy string) (Options, *bytes.Buffer, string) {
	dir := t.TempDir()
	var out bytes.Buffer
	return Options{ProcRoot: "/proc", Dir: dir, Reason: contract.ReasonPreStop, Policy: policy, Thresholds: jvm.DefaultThresholds(),
		PIDs: []int{pid}, Out: &out}, &out, dir
}

func dumps(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.hprof"))
	return m
}

func TestAlwaysDumpsThenRunsTheSleepHandler(t *testing.T) {
	cmd := startJVM(t, 20, "-Xmx128m")
	o, out, dir := options(t, cmd.Process.Pid, contract.PolicyAlways)
	o.Then = `{"sleep":{"seconds":1}}`
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < time.Second {
		t.Errorf("the chained sleep did not run")
	}
	got := dumps(t, dir)
	if len(got) != 1 || !strings.HasPrefix(filepath.Base(got[0]), "prestop-") || !strings.HasSuffix(got[0], fmt.Sprintf("-pid%d.hprof", cmd.Process.Pid)) {
		t.Fatalf("dumps %v\n%s", got, out)
	}
	rep, err := hprof.InspectFile(got[0])
	if err != nil || !rep.Complete {
		t.Fatalf("dump not complete: %+v %v", rep, err)
	}
	if contract.ReasonOf(filepath.Base(got[0])) != contract.ReasonPreStop {
		t.Error("the uploader would not see the reason in the name")
	}
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(hidden) != 0 {
		t.Errorf("temporary files left: %v", hidden)
	}
}

func TestOnPressureSkipsAnIdleJVM(t *testing.T) {
	cmd := startJVM(t, 2, "-Xmx256m")
	o, out, dir := options(t, cmd.Process.Pid, contract.PolicyOnPressure)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if len(dumps(t, dir)) != 0 || !strings.Contains(out.String(), "not under memory pressure") {
		t.Fatalf("idle JVM dumped or not reported: %s", out)
	}
}

func TestOnPressureDumpsAFullJVM(t *testing.T) {
	cmd := startJVM(t, 56, "-Xmx64m", "-XX:+UseSerialGC")
	o, out, dir := options(t, cmd.Process.Pid, contract.PolicyOnPressure)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if len(dumps(t, dir)) != 1 || !strings.Contains(out.String(), "under memory pressure") {
		t.Fatalf("full JVM not dumped: %s", out)
	}
}

func TestNoJVMThenExecAndHTTPGet(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/drain" && r.Header.Get("X-Why") == "prestop" {
			hits++
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	marker := filepath.Join(t.TempDir(), "chained")
	for _, then := range []string{
		fmt.Sprintf(`{"exec":{"command":["sh","-c","echo ran > %s"]}}`, marker),
		// httptest listens on 127.0.0.1 only (the pod IP is the default:
		// TestThenHTTPGetLikeTheKubelet).
		fmt.Sprintf(`{"httpGet":{"host":"127.0.0.1","path":"/drain","port":%s,"httpHeaders":[{"name":"X-Why","value":"prestop"}]}}`, u.Port()),
	} {
		o, out, _ := options(t, 999999999, contract.PolicyAlways)
		o.Then = then
		start := time.Now()
		if err := Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "no JVM runs in this container") || time.Since(start) > 2*time.Second {
			t.Errorf("no-JVM case: %q in %v", out, time.Since(start))
		}
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
		t.Errorf("exec handler did not run: %q %v", b, err)
	}
	if hits != 1 {
		t.Errorf("httpGet handler hits = %d", hits)
	}
}

// TestDeadlineShorterThanTheDump: a JVM that does not answer (stopped) and a
// deadline 2 s away: Run gives up in time and leaves no file that looks
// complete.
func TestDeadlineShorterThanTheDump(t *testing.T) {
	cmd := startJVM(t, 4, "-Xmx64m")
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	o, out, dir := options(t, cmd.Process.Pid, contract.PolicyAlways)
	o.Deadline = time.Now().Add(4 * time.Second)
	start := time.Now()
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v, past the reserve before the deadline", d)
	}
	if got := dumps(t, dir); len(got) != 0 || !strings.Contains(out.String(), "no dump") {
		t.Fatalf("dumps %v, output %s", got, out)
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(500 * time.Millisecond)
	if got := dumps(t, dir); len(got) != 0 {
		t.Fatalf("a dump appeared after the give-up: %v", got)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{{Policy: "sometimes", Out: &bytes.Buffer{}}, {Policy: "always", Then: "{", Out: &bytes.Buffer{}}} {
		if err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) accepted", o)
		}
	}
}

// TestLock: the workload's dump lock is asked for once a dump is decided on,
// for the dump's whole deadline; taken means no dump (but the chained
// handler still runs), unavailable means a dump without it.
func TestLock(t *testing.T) {
	cmd := startJVM(t, 4, "-Xmx64m")
	type call struct {
		ttl      time.Duration
		released bool
	}
	for _, tc := range []struct {
		name     string
		policy   string
		err      error
		wantDump bool
		wantCall bool
		wantOut  string
	}{
		{"free", contract.PolicyAlways, nil, true, true, "heap dump written"},
		{"taken", contract.PolicyAlways, &dumplock.TakenError{Holder: "shop/orders-x", Expires: time.Now().Add(time.Minute)}, false, true, "no dump: another pod of the workload is taking a heap dump (shop/orders-x holds"},
		{"unavailable", contract.PolicyAlways, fmt.Errorf("%w: no answer", dumplock.ErrUnavailable), true, true, "dumping without the workload's dump lock"},
		{"not needed", contract.PolicyOnPressure, nil, false, false, "not under memory pressure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, out, dir := options(t, cmd.Process.Pid, tc.policy)
			o.Deadline = time.Now().Add(30 * time.Second)
			marker := filepath.Join(t.TempDir(), "chained")
			o.Then = fmt.Sprintf(`{"exec":{"command":["sh","-c","echo ran > %s"]}}`, marker)
			var calls []*call
			o.Lock = func(ctx context.Context, ttl time.Duration) (func(), error) {
				c := &call{ttl: ttl}
				calls = append(calls, c)
				if tc.err != nil {
					return nil, tc.err
				}
				return func() {
					if len(dumps(t, dir)) != 1 {
						t.Error("lock released before the dump was written")
					}
					c.released = true
				}, nil
			}
			if err := Run(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			if got := len(dumps(t, dir)) == 1; got != tc.wantDump {
				t.Errorf("dumped %v, want %v\n%s", got, tc.wantDump, out)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("output lacks %q:\n%s", tc.wantOut, out)
			}
			if got := len(calls) == 1; got != tc.wantCall {
				t.Fatalf("lock asked %d times, want asked: %v", len(calls), tc.wantCall)
			}
			if tc.wantCall {
				// Until the kill at the deadline, plus the margin.
				if d := calls[0].ttl; d < 33*time.Second || d > 35*time.Second {
					t.Errorf("lock ttl %v, want about 35s", d)
				}
				if tc.err == nil && !calls[0].released {
					t.Error("lock not released")
				}
			}
			if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
				t.Errorf("chained handler did not run: %q %v", b, err)
			}
		})
	}
}
