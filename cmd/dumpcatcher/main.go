// Command dumpcatcher runs inside the pods dumpcatcher injects: `upload` is
// the uploader sidecar, `dump` takes heap dumps in app containers (the
// preStop hook and on demand), `version` prints the version. Every flag of upload
// falls back to an environment variable (see internal/contract), which is how
// the webhook configures it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "dumpcatcher:", err)
		os.Exit(1)
	}
}

const usage = `Usage: dumpcatcher COMMAND [flags]

Commands:
  upload    the uploader sidecar: deliver every finished heap dump to storage
  dump      take a heap dump of this container's JVM(s) now (the preStop hook,
            or kubectl exec POD -c CONTAINER -- /dumpcatcher/bin/dumpcatcher dump)
  version   print the version

Run 'dumpcatcher COMMAND --help' for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case contract.CmdUpload:
		cfg, err := parseUpload(args[1:], stderr, getenv)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		return upload(cfg)
	case contract.CmdDump:
		return runDump(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// uploadConfig is upload's validated settings.
type uploadConfig struct {
	dir            string
	dest           contract.Destination
	destRaw        string
	credentialsDir string
	caFile         string
	template       objectkey.Template
	compression    string
	metricsAddr    string
	drain          time.Duration
	quiet          time.Duration
	containers     []string
	identity       uploader.Identity
	logLevel       zapcore.Level
}

func parseUpload(args []string, stderr io.Writer, getenv func(string) string) (uploadConfig, error) {
	var c uploadConfig
	fs := flag.NewFlagSet("dumpcatcher upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, name, envName, def, help string) {
		fs.StringVar(p, name, env(envName, def), help+" ($"+envName+")")
	}
	var tmpl, drain, quiet, containers, level string
	str(&c.dir, "dir", contract.EnvDir, contract.SidecarDir, "the shared volume")
	str(&c.destRaw, "destination", contract.EnvDestination, "", "storage URL: s3://bucket/prefix?endpoint=...&region=...&path-style=true or file:///path (required)")
	str(&c.credentialsDir, "credentials-dir", contract.EnvCredentialsDir, "", "directory of the mounted credentials Secret (empty: the AWS default chain)")
	str(&c.caFile, "ca-file", contract.EnvCAFile, "", "PEM bundle to trust for an https endpoint")
	str(&tmpl, "key-template", contract.EnvKeyTemplate, objectkey.Default, "object key template")
	str(&c.compression, "compression", contract.EnvCompression, uploader.CompressionGzip, "gzip, zstd or none (gzip files are sent as they are)")
	str(&c.metricsAddr, "metrics-address", contract.EnvMetricsAddress, "", "serve Prometheus metrics on this address, e.g. :9090 (empty: off)")
	str(&drain, "drain-timeout", contract.EnvDrainTimeout, "25s", "how long uploads go on after SIGTERM")
	str(&quiet, "quiet-period", contract.EnvQuietPeriod, "2m", "how long a half-written file must stay unchanged before it is uploaded as incomplete")
	str(&containers, "containers", contract.EnvContainers, "", "target containers, comma-separated (their dump directories are created at start)")
	str(&c.identity.Namespace, "pod-namespace", contract.EnvPodNamespace, "", "the pod's namespace")
	str(&c.identity.Pod, "pod-name", contract.EnvPodName, "", "the pod's name")
	str(&c.identity.PodUID, "pod-uid", contract.EnvPodUID, "", "the pod's UID")
	str(&c.identity.Node, "node-name", contract.EnvNodeName, "", "the node's name")
	str(&c.identity.Workload, "workload", contract.EnvWorkload, "", "the pod's workload, kind/name")
	str(&level, "log-level", contract.EnvLogLevel, "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	bad := func(flagName, envName string, err error) error {
		return fmt.Errorf("--%s ($%s): %v", flagName, envName, err)
	}
	if !filepath.IsAbs(c.dir) {
		return c, bad("dir", contract.EnvDir, fmt.Errorf("%q is not an absolute path", c.dir))
	}
	if c.destRaw == "" {
		return c, bad("destination", contract.EnvDestination, errors.New("required: where dumps go, e.g. s3://heap-dumps/prod?region=eu-west-1"))
	}
	d, err := contract.ParseDestination(c.destRaw)
	if err != nil {
		return c, bad("destination", contract.EnvDestination, err)
	}
	c.dest = d
	if c.template, err = objectkey.Parse(tmpl); err != nil {
		return c, bad("key-template", contract.EnvKeyTemplate, err)
	}
	if !slices.Contains(uploader.Compressions(), c.compression) {
		return c, bad("compression", contract.EnvCompression, fmt.Errorf("%q is not one of %s", c.compression, strings.Join(uploader.Compressions(), ", ")))
	}
	if c.drain, err = time.ParseDuration(drain); err != nil || c.drain <= 0 {
		return c, bad("drain-timeout", contract.EnvDrainTimeout, fmt.Errorf("%q is not a positive duration such as 25s", drain))
	}
	if c.quiet, err = time.ParseDuration(quiet); err != nil || c.quiet <= 0 {
		return c, bad("quiet-period", contract.EnvQuietPeriod, fmt.Errorf("%q is not a positive duration such as 2m", quiet))
	}
	if c.caFile != "" {
		if _, err := os.Stat(c.caFile); err != nil {
			return c, bad("ca-file", contract.EnvCAFile, err)
		}
	}
	if c.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.metricsAddr); err != nil {
			return c, bad("metrics-address", contract.EnvMetricsAddress, err)
		}
	}
	if err := c.logLevel.Set(level); err != nil {
		return c, bad("log-level", contract.EnvLogLevel, err)
	}
	for _, n := range strings.Split(containers, ",") {
		if n = strings.TrimSpace(n); n != "" {
			if strings.ContainsAny(n, "/\\") || n == "." || n == ".." {
				return c, bad("containers", contract.EnvContainers, fmt.Errorf("%q is not a container name", n))
			}
			c.containers = append(c.containers, n)
		}
	}
	return c, nil
}

// memoryLimit is the uploader's soft heap limit unless GOMEMLIMIT says
// otherwise: two 16 MiB parts are live during an upload, and without a
// limit the collector lets garbage grow the RSS past 60 MiB (measured peak
// with the limit: 56 MiB; 40 MiB makes the collector run constantly).
const memoryLimit = 48 << 20

func upload(c uploadConfig) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(c.logLevel)
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	log = log.With(zap.String("pod", c.identity.Namespace+"/"+c.identity.Pod))

	// Place this binary in the shared volume for the preStop hook and
	// `kubectl exec ... dumpcatcher dump` in app containers.
	if err := placeBinary(filepath.Join(c.dir, contract.BinDir, contract.BinaryName)); err != nil {
		log.Error("could not place the dumpcatcher binary in the shared volume; preStop dumps will fail", zap.Error(err))
	}
	dumps := filepath.Join(c.dir, contract.DumpsDir)
	for _, name := range c.containers {
		d := filepath.Join(dumps, name)
		if err := os.MkdirAll(d, 0o777); err == nil {
			_ = os.Chmod(d, 0o777) // any app uid may write; umask-proof
		}
	}
	sp, err := spool.Open(filepath.Join(c.dir, ".spool"), log.Named("spool"), nil)
	if err != nil {
		return err
	}
	bucket, err := storage.Open(c.dest, storage.Options{CredentialsDir: c.credentialsDir, CAFile: c.caFile, Log: zapr.NewLogger(log.Named("storage"))})
	if err != nil {
		return err
	}
	var metrics *uploader.Metrics
	if c.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if metrics, err = uploader.NewMetrics(reg); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	u, err := uploader.New(uploader.Options{
		Bucket: bucket, Spool: sp, DumpsDir: dumps, Template: c.template, Identity: c.identity,
		Compression: c.compression, QuietPeriod: c.quiet, Drain: c.drain, Log: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	// The socket of the dump command: the workload's dump lock for the
	// preStop hooks of this pod, and where a dump will be uploaded.
	lockKey, err := dumplock.Key(c.identity.Namespace, c.identity.Workload)
	if err != nil {
		log.Warn("preStop dumps of this pod go ahead without the workload's dump lock", zap.Error(err))
		lockKey = ""
	}
	lockCtx, stopLocks := context.WithCancel(context.Background())
	defer stopLocks()
	if store, ok := bucket.(storage.Conditional); ok {
		socket := filepath.Join(c.dir, contract.BinDir, contract.LockSocketName)
		ln, err := dumplock.Listen(socket)
		if err != nil {
			log.Error("could not listen for dump lock requests; preStop dumps go ahead without the lock", zap.String("socket", socket), zap.Error(err))
		} else {
			s := &dumplock.Server{Locks: dumplock.Locks{Store: store}, Key: lockKey, Holder: c.identity.Namespace + "/" + c.identity.Pod,
				Where: func(container, file string) (string, error) {
					return u.KeyPattern(c.containerOf(container, file), file)
				}, Log: log.Named("lock")}
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := s.Serve(lockCtx, ln); err != nil {
					log.Error("dump lock socket failed", zap.Error(err))
				}
			}()
			defer func() { stopLocks(); <-done }()
		}
	}
	// The first SIGTERM starts the drain; a second one exits at once.
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		close(stop)
		select {
		case <-sigs:
			log.Error("second signal: exiting without waiting for uploads")
			_ = log.Sync()
			os.Exit(1)
		case <-ctx.Done():
		}
	}()
	log.Info("uploading", zap.String("version", version), zap.String("destination", bucket.URL("")), zap.String("dumps", dumps),
		zap.String("compression", c.compression), zap.Strings("containers", c.containers))
	return u.Run(stop)
}

// containerOf names the container of a dump file for the dump command,
// which knows its container only when the hook tells it: the only target
// container, or the one whose dump directory holds the file.
func (c uploadConfig) containerOf(container, file string) string {
	switch {
	case container != "":
		return container
	case len(c.containers) == 1:
		return c.containers[0]
	}
	for _, name := range c.containers {
		if _, err := os.Stat(filepath.Join(c.dir, contract.DumpsDir, name, file)); err == nil {
			return name
		}
	}
	return "<container>"
}

// placeBinary copies the running executable to dst (temporary name, then
// rename), executable by any uid.
func placeBinary(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
