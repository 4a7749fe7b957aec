package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/signals"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumper"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/jvm"
	"github.com/go-logr/logr/funcr"
)

// parseDump reads the flags the injected preStop hook passes (see
// internal/contract) and those of a hand-run `kubectl exec ... dump`.
func parseDump(args []string, stderr io.Writer, self string, now time.Time) (dumper.Options, time.Duration, error) {
	o := dumper.Options{ProcRoot: "/proc", Thresholds: jvm.DefaultThresholds(), Now: time.Now}
	fs := flag.NewFlagSet("dumpcatcher dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// By default the dump directory is the shared volume's, next to the bin/
	// directory this binary was started from.
	defDir := filepath.Join(filepath.Dir(filepath.Dir(self)), contract.DumpsDir)
	flagName := func(f string) string { return strings.TrimPrefix(f, "--") }
	fs.StringVar(&o.Reason, flagName(contract.FlagReason), contract.ReasonManual, "why: prestop (the hook) or manual")
	fs.StringVar(&o.Policy, flagName(contract.FlagPolicy), contract.PolicyAlways, "always, on-pressure (only a JVM short of memory) or never")
	fs.StringVar(&o.Dir, flagName(contract.FlagDir), defDir, "the container's dump directory in the shared volume")
	fs.StringVar(&o.Then, flagName(contract.FlagThen), "", "the container's original preStop handler (JSON), run after the dump")
	var namespace, workload string
	fs.StringVar(&o.Container, flagName(contract.FlagContainer), "", "the container (names the dump's object; the uploader finds it when unset)")
	fs.StringVar(&namespace, flagName(contract.FlagNamespace), "", "the pod's namespace (informational)")
	fs.StringVar(&workload, flagName(contract.FlagWorkload), "", "the pod's workload (informational)")
	grace := fs.Int64(flagName(contract.FlagGracePeriod), 0, "terminationGracePeriodSeconds the hook runs in (0: no deadline)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up a dump after this long when there is no grace period")
	pids := fs.String("pid", "", "dump only these JVMs (comma-separated pids)")
	fs.BoolVar(&o.All, "all", false, "include unreachable objects (no full GC before the dump)")
	oldGen := fs.Float64("pressure-old-gen", o.Thresholds.OldGenOccupancy, "on-pressure: old generation share in use that counts as pressure (0..1)")
	gcShare := fs.Float64("pressure-gc-time", o.Thresholds.GCTimeShare, "on-pressure: share of uptime in GC that counts as pressure (0..1)")
	if err := fs.Parse(args); err != nil {
		return o, 0, err
	}
	if fs.NArg() > 0 {
		return o, 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.Reason != contract.ReasonPreStop && o.Reason != contract.ReasonManual {
		return o, 0, fmt.Errorf("%s: %q is not prestop or manual", contract.FlagReason, o.Reason)
	}
	if *grace < 0 {
		return o, 0, fmt.Errorf("%s: %d is negative", contract.FlagGracePeriod, *grace)
	}
	if *oldGen <= 0 || *oldGen > 1 || *gcShare <= 0 || *gcShare > 1 {
		return o, 0, errors.New("--pressure-old-gen and --pressure-gc-time are shares between 0 and 1")
	}
	o.Thresholds.OldGenOccupancy, o.Thresholds.GCTimeShare = *oldGen, *gcShare
	for _, s := range strings.Split(*pids, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return o, 0, fmt.Errorf("--pid: %q is not a process id", s)
		}
		o.PIDs = append(o.PIDs, n)
	}
	if fi, err := os.Stat(o.Dir); err != nil || !fi.IsDir() {
		return o, 0, fmt.Errorf("%s: %s is not a directory (is this container injected by dumpcatcher?)", contract.FlagDir, o.Dir)
	}
	if *grace > 0 {
		o.Deadline = now.Add(time.Duration(*grace) * time.Second)
		return o, 0, nil
	}
	return o, *timeout, nil
}

func runDump(args []string, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		self = contract.BinaryPath
	}
	o, timeout, err := parseDump(args, stderr, self, time.Now())
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	o.Out = stdout
	// The uploader answers on a socket next to this binary.
	socket := filepath.Join(filepath.Dir(self), contract.LockSocketName)
	o.Where = func(ctx context.Context, file string) (string, error) {
		return dumplock.Where(ctx, socket, o.Container, file)
	}
	if o.Reason == contract.ReasonPreStop {
		// One pod of a workload dumps at a time.
		o.Lock = func(ctx context.Context, ttl time.Duration) (func(), error) {
			release, _, err := dumplock.Request(ctx, socket, ttl)
			return release, err
		}
	}
	// The kubelet sends no signal to a preStop hook; ctrl-C on a
	// `kubectl exec ... dump` does: the first cancels the dump, a second
	// exits at once.
	log := funcr.New(func(_, args string) { fmt.Fprintln(stderr, "dumpcatcher:", args) }, funcr.Options{})
	ctx, stop := signals.Context(context.Background(), log)
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return dumper.Run(ctx, o)
}
