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
	"os/exec"
	"path/filepath"
	"strconv"
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

// lockMargin is added to the dump's own deadline for the lock's lifetime:
// the kubelet kills the container at the deadline, so a holder that dies
// there frees the workload this much later.
const lockMargin = 5 * time.Second

// handler is the part of a Kubernetes LifecycleHandler a preStop can use.
type handler struct {
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec"`
	HTTPGet *struct {
		Path        string          `json:"path"`
		Port        json.RawMessage `json:"port"`
		Host        string          `json:"host"`
		Scheme      string          `json:"scheme"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders"`
	} `json:"httpGet"`
	Sleep *struct {
		Seconds int64 `json:"seconds"`
	} `json:"sleep"`
}

// reserveForThen is kept for the chained handler when it has no bound of its
// own (exec, httpGet); a sleep reserves its own length.
const reserveForThen = 2 * time.Second

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
	dump(dumpCtx, o)
	if then != nil {
		runThen(ctx, o, then)
	}
	return nil
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
	ttl += lockMargin
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
// kubelet would have: exec in the container, httpGet against the pod (here:
// 127.0.0.1 unless a host is given), sleep.
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
		if err := httpGet(tctx, h); err != nil {
			fmt.Fprintf(o.Out, "the container's own preStop (httpGet) failed: %v\n", err)
		}
	case h.Sleep != nil:
		select {
		case <-tctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
	}
}

func httpGet(ctx context.Context, h *handler) error {
	g := h.HTTPGet
	host := g.Host
	if host == "" {
		host = "127.0.0.1"
	}
	var port string
	var n int
	if err := json.Unmarshal(g.Port, &n); err == nil {
		port = strconv.Itoa(n)
	} else if err := json.Unmarshal(g.Port, &port); err != nil || port == "" {
		return fmt.Errorf("port %s: want a number", g.Port)
	}
	scheme := "http"
	if g.Scheme == "HTTPS" {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, port)+g.Path, nil)
	if err != nil {
		return err
	}
	for _, hd := range g.HTTPHeaders {
		req.Header.Add(hd.Name, hd.Value)
	}
	// Like the kubelet: no certificate verification for HTTPS.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // kubelet semantics
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
