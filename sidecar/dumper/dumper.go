// Package dumper is `dumpcatcher dump`: it runs inside an app container (as
// the injected preStop hook, or by hand through kubectl exec), finds the
// container's JVMs, decides by policy whether to dump, asks each JVM for a
// heap dump over the attach protocol (no JDK needed), and then runs the
// container's original preStop handler.
package dumper

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/jvm"
)

// Options configure Run.
type Options struct {
	// ProcRoot is /proc.
	ProcRoot string
	// Dir is the container's dump directory as the JVM sees it.
	Dir string
	// Container is the container's name, when known.
	Container string
	// Reason: prestop or manual.
	Reason string
	// Policy: always, on-pressure or never.
	Policy     string
	Thresholds jvm.Thresholds
	// PIDs limits the dump to these JVMs (empty: every JVM found).
	PIDs []int
	// All dumps unreachable objects too (no full GC before the dump).
	All bool
	// Deadline is when the kubelet kills the container (zero: none). The
	// dump stops in time for Then to run before it.
	Deadline time.Time
	// Then is the container's original preStop handler as JSON (a
	// Kubernetes LifecycleHandler), run after the dump.
	Then string
	// Lock, when set, is asked for the workload's dump lock (see
	// sidecar/dumplock) once a dump is decided on, for as long as the dump
	// may take. A *dumplock.TakenError skips the dump; any other error is
	// reported and the dump goes ahead without the lock.
	Lock func(ctx context.Context, ttl time.Duration) (release func(), err error)
	// Where, when set, tells where the uploader will put a dump file.
	Where func(ctx context.Context, file string) (string, error)
	Out   io.Writer
	Now   func() time.Time
}

// lockWait bounds the wait for the lock's answer.
const lockWait = 5 * time.Second

// handler is the part of a Kubernetes LifecycleHandler a preStop can use.
type handler struct {
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec"`
	HTTPGet *httpGetAction `json:"httpGet"`
	Sleep   *struct {
		Seconds int64 `json:"seconds"`
	} `json:"sleep"`
}

// reserveForThen is kept for the chained handler when it has no bound of its
// own (exec, httpGet); a sleep reserves its own length.
const reserveForThen = 2 * time.Second

// giveUpAfter is how long the dump part may overrun its deadline before Run
// stops waiting for it and runs the chained handler: everything in it
// watches the deadline, but a system call on a file or process of the app
// might not return.
const giveUpAfter = 250 * time.Millisecond

// Run dumps and then runs the chained handler. It returns an error only for
// bad options; a failed dump is reported on Out and does not stop the
// chained handler (the user's own shutdown matters more than our dump).
func Run(ctx context.Context, o Options) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	var then *handler
	if o.Then != "" {
		then = &handler{}
		if err := json.Unmarshal([]byte(o.Then), then); err != nil {
			return fmt.Errorf("%s: not a preStop handler: %w", contract.FlagThen, err)
		}
	}
	switch o.Policy {
	case contract.PolicyAlways, contract.PolicyOnPressure, contract.PolicyNever:
	default:
		return fmt.Errorf("%s: %q is not one of always, on-pressure, never", contract.FlagPolicy, o.Policy)
	}
	dumpCtx := ctx
	if !o.Deadline.IsZero() {
		reserve := reserveForThen
		if then != nil && then.Sleep != nil {
			reserve = time.Duration(then.Sleep.Seconds)*time.Second + time.Second
		}
		var cancel context.CancelFunc
		dumpCtx, cancel = context.WithDeadline(ctx, o.Deadline.Add(-reserve))
		defer cancel()
	}
	// The dump runs apart, so that nothing it waits on can keep the
	// container's own preStop from running: when it overruns its deadline
	// it is left behind (its output dropped), and the process exits after
	// the chained handler anyway.
	out := &cutWriter{w: o.Out}
	do := o
	do.Out = out
	done := make(chan struct{})
	go func() {
		defer close(done)
		dump(dumpCtx, do)
	}()
	select {
	case <-done:
	case <-dumpCtx.Done():
		t := time.NewTimer(giveUpAfter)
		select {
		case <-done:
		case <-t.C:
			out.cut()
			fmt.Fprintf(o.Out, "the dump did not finish in time (%v); giving it up so that the container's own preStop runs before the kubelet's deadline\n", context.Cause(dumpCtx))
		}
		t.Stop()
	}
	if then != nil {
		runThen(ctx, o, then)
	}
	return nil
}

// cutWriter passes writes on until it is cut; then it drops them.
type cutWriter struct {
	mu  sync.Mutex
	w   io.Writer
	off bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off {
		return len(p), nil
	}
	return c.w.Write(p)
}

func (c *cutWriter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off = true
}

func dump(ctx context.Context, o Options) {
	if o.Policy == contract.PolicyNever {
		fmt.Fprintln(o.Out, "policy never: no dump")
		return
	}
	procs, err := jvm.FindJVMs(o.ProcRoot)
	if err != nil {
		fmt.Fprintf(o.Out, "cannot list processes: %v\n", err)
		return
	}
	if len(o.PIDs) > 0 {
		var keep []jvm.Process
		for _, p := range procs {
			for _, pid := range o.PIDs {
				if p.PID == pid || p.NSPID == pid {
					keep = append(keep, p)
				}
			}
		}
		procs = keep
	}
	if len(procs) == 0 {
		fmt.Fprintln(o.Out, "no JVM runs in this container: nothing to dump")
		return
	}
	var dumps []jvm.Process
	for _, p := range procs {
		if o.Policy == contract.PolicyOnPressure {
			rep, err := jvm.Pressure(p, o.Thresholds)
			switch {
			case err != nil:
				fmt.Fprintf(o.Out, "pid %d: cannot read its memory counters (%v): dumping anyway\n", p.NSPID, err)
			case !rep.Under:
				fmt.Fprintf(o.Out, "pid %d: not under memory pressure, no dump (%s)\n", p.NSPID, rep.Reason)
				continue
			default:
				fmt.Fprintf(o.Out, "pid %d: under memory pressure (%s)\n", p.NSPID, rep.Reason)
			}
		}
		dumps = append(dumps, p)
	}
	if len(dumps) == 0 {
		return
	}
	if o.Lock != nil {
		release, ok := lock(ctx, o)
		if !ok {
			return
		}
		defer release()
	}
	for _, p := range dumps {
		name := contract.DumpFileName(o.Reason, o.Now(), p.NSPID)
		start := o.Now()
		path, err := jvm.HeapDumpWith(ctx, p, o.Dir, name, jvm.DumpOptions{Live: !o.All})
		switch {
		case errors.Is(err, jvm.ErrAttachDisabled):
			fmt.Fprintf(o.Out, "pid %d: the JVM runs with -XX:+DisableAttachMechanism: it cannot be asked for a dump\n", p.NSPID)
		case err != nil:
			fmt.Fprintf(o.Out, "pid %d: no dump: %v\n", p.NSPID, err)
		default:
			took := o.Now().Sub(start).Round(time.Millisecond)
			fmt.Fprintf(o.Out, "pid %d: heap dump written to %s in %v; the dumpcatcher sidecar uploads it%s\n", p.NSPID, path, took, where(ctx, o, filepath.Base(path)))
		}
	}
}

// where is " to <url>" when the uploader can tell where it will put file.
func where(ctx context.Context, o Options, file string) string {
	if o.Where == nil {
		return ""
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	url, err := o.Where(wctx, file)
	if err != nil {
		return ""
	}
	return " to " + url
}

// lock takes the workload's dump lock for as long as the dump may last. It
// reports false when another pod holds it.
func lock(ctx context.Context, o Options) (release func(), ok bool) {
	ttl := 5 * time.Minute
	if d, has := ctx.Deadline(); has {
		ttl = d.Sub(o.Now())
	}
	if !o.Deadline.IsZero() {
		ttl = o.Deadline.Sub(o.Now())
	}
	ttl += dumplock.Margin // the sidecar refuses more than the grace period plus this
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	release, err := o.Lock(lctx, ttl)
	var taken *dumplock.TakenError
	switch {
	case errors.As(err, &taken):
		fmt.Fprintf(o.Out, "no dump: %v; one pod of a workload dumps at a time\n", err)
		return nil, false
	case err != nil:
		fmt.Fprintf(o.Out, "dumping without the workload's dump lock: %v\n", err)
		return func() {}, true
	}
	return release, true
}

// runThen runs the container's original preStop handler the way the
// kubelet would have: exec in the container, httpGet against the pod (see
// httpGet), sleep. It ends at the deadline, when the kubelet kills the
// container.
func runThen(ctx context.Context, o Options, h *handler) {
	tctx := ctx
	if !o.Deadline.IsZero() {
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(ctx, o.Deadline)
		defer cancel()
	}
	switch {
	case h.Exec != nil && len(h.Exec.Command) > 0:
		cmd := exec.CommandContext(tctx, h.Exec.Command[0], h.Exec.Command[1:]...)
		cmd.Stdout, cmd.Stderr = o.Out, o.Out
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(o.Out, "the container's own preStop (exec) failed: %v\n", err)
		}
	case h.HTTPGet != nil:
		if err := httpGet(tctx, o.Out, h.HTTPGet, systemInterfaces); err != nil {
			fmt.Fprintf(o.Out, "the container's own preStop (httpGet) failed: %v\n", err)
		}
	case h.Sleep != nil:
		select {
		case <-tctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
	}
}

// httpGetAction is a Kubernetes HTTPGetAction.
type httpGetAction struct {
	Path        string          `json:"path"`
	Port        json.RawMessage `json:"port"`
	Host        string          `json:"host"`
	Scheme      string          `json:"scheme"`
	HTTPHeaders []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"httpHeaders"`
}

// userAgent is sent unless the handler sets one; the kubelet sends
// kube-lifecycle/<its version>.
const userAgent = "kube-lifecycle/dumpcatcher"

// maxRespBody is how much of the answer is read (and dropped), as the
// kubelet does.
const maxRespBody = 10 << 10

// resolvePort returns the handler's port. A number, or a number in a string,
// is taken as it is. A name cannot be resolved here (the container's ports
// are in the pod spec, which the hook does not see): the webhook resolves it
// when it injects the hook.
func resolvePort(raw json.RawMessage) (int, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			return 0, fmt.Errorf("port %s: want a number", raw)
		}
		if n, err = strconv.Atoi(name); err != nil {
			return 0, fmt.Errorf("port %q is a name, which cannot be resolved inside the container: the dumpcatcher webhook resolves named ports to numbers from the container's ports when it injects the hook, and this pod's hook still has the name (injected by an older webhook, or the name is not one of the container's ports); re-create the pod (kubectl rollout restart) or give the port as a number in the container's preStop", name)
		}
	}
	if n <= 0 || n > 65535 {
		return 0, fmt.Errorf("port %d: not between 1 and 65535", n)
	}
	return n, nil
}

// newHTTPGetRequest builds the request the kubelet would send for g: scheme
// HTTP unless HTTPS, host the pod IP unless set, the path (with its query)
// as given, the headers as given, a Host header as the request's host, and
// User-Agent and Accept unless set (an Accept set to "" is not sent).
func newHTTPGetRequest(ctx context.Context, g *httpGetAction, podIP string) (*http.Request, error) {
	scheme := strings.ToLower(g.Scheme)
	switch scheme {
	case "":
		scheme = "http"
	case "http", "https":
	default:
		return nil, fmt.Errorf("scheme %q: want HTTP or HTTPS", g.Scheme)
	}
	host := g.Host
	if host == "" {
		host = podIP
	}
	port, err := resolvePort(g.Port)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(g.Path)
	if err != nil {
		u = &url.URL{Path: g.Path} // as the kubelet: passed along as it is
	}
	u.Scheme, u.Host = scheme, net.JoinHostPort(host, strconv.Itoa(port))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	if v, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	} else if len(v) == 0 || req.Header.Get("Accept") == "" {
		req.Header.Del("Accept")
	}
	req.Host = req.Header.Get("Host")
	return req, nil
}

// httpGet sends the container's original httpGet preStop request as the
// kubelet would: to the pod IP when the handler names no host (the hook runs
// in the pod's network namespace, so it finds that IP on its own interfaces;
// else it falls back to 127.0.0.1 and says so), HTTPS without certificate
// checks, retried over HTTP when the server answers HTTPS with HTTP,
// redirects followed only on the same host, no proxy. ctx bounds it.
func httpGet(ctx context.Context, out io.Writer, g *httpGetAction, ifaces func() ([]iface, error)) error {
	podAddr := ""
	if g.Host == "" {
		ip, why := podIP(ifaces)
		if ip == nil {
			podAddr = "127.0.0.1"
			fmt.Fprintf(out, "the pod IP is not known (%s): the container's own preStop request goes to 127.0.0.1\n", why)
		} else {
			podAddr = ip.String()
		}
	}
	req, err := newHTTPGetRequest(ctx, g, podAddr)
	if err != nil {
		return err
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,                                   // the app's proxy settings are not the kubelet's
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet semantics
			DisableKeepAlives: true,
		},
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 || r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	var uerr *url.Error
	if err != nil && errors.As(err, &uerr) && strings.Contains(uerr.Err.Error(), "server gave HTTP response to HTTPS client") {
		req = req.Clone(ctx)
		req.URL.Scheme = "http"
		req.Header.Del("Authorization")
		fmt.Fprintf(out, "the container's own preStop: HTTPS to %s got an HTTP answer; retrying over HTTP\n", req.URL.Host)
		resp, err = client.Do(req)
	}
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRespBody))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		// The kubelet does not fail the hook for it; it is worth a line.
		fmt.Fprintf(out, "the container's own preStop (httpGet %s) answered %s\n", req.URL.Redacted(), resp.Status)
	}
	return nil
}

// iface is a network interface and its addresses.
type iface struct {
	Name  string
	Flags net.Flags
	Addrs []net.Addr
}

// systemInterfaces lists this network namespace's interfaces.
func systemInterfaces() ([]iface, error) {
	list, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]iface, 0, len(list))
	for _, i := range list {
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		out = append(out, iface{Name: i.Name, Flags: i.Flags, Addrs: addrs})
	}
	return out, nil
}

// podIP finds the pod's IP among the interfaces of its network namespace:
// the first global unicast address of an interface that is up and not a
// loopback, IPv4 before IPv6 (a pod's primary IP is its IPv4 one unless the
// cluster is IPv6 first or IPv6 only). Without one it says why.
func podIP(ifaces func() ([]iface, error)) (net.IP, string) {
	list, err := ifaces()
	if err != nil {
		return nil, "cannot list the network interfaces: " + err.Error()
	}
	var v6 net.IP
	for _, i := range list {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		for _, a := range i.Addrs {
			var ip net.IP
			switch a := a.(type) {
			case *net.IPNet:
				ip = a.IP
			case *net.IPAddr:
				ip = a.IP
			}
			if !ip.IsGlobalUnicast() {
				continue // link-local, loopback, multicast, unspecified
			}
			if ip4 := ip.To4(); ip4 != nil {
				return ip4, ""
			}
			if v6 == nil {
				v6 = ip
			}
		}
	}
	if v6 != nil {
		return v6, ""
	}
	return nil, "no global unicast address on an interface that is up, other than loopback"
}
