// Package app is the uploader sidecar, `dumpcatcher upload`, as a whole:
// its settings, read from flags and the environment the webhook sets and
// checked in one place (Flags.Config, Config.Validate), and Run, which
// wires the shared volume, the spool, the storage, the uploader, the dump
// lock socket and the metrics endpoint.
package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Run uploads every finished dump in the shared volume until ctx is
// cancelled (the first SIGTERM), then drains for up to cfg.Drain and
// returns. The dump lock socket answers until Run returns.
func Run(ctx context.Context, cfg Config, log logr.Logger) error {
	if errs := cfg.Validate(); len(errs) > 0 {
		return &InvalidError{Errs: errs}
	}
	tmpl, err := objectkey.Parse(cfg.KeyTemplate)
	if err != nil {
		return err // Validate parsed it
	}
	log = log.WithValues("pod", cfg.Identity.Namespace+"/"+cfg.Identity.Pod)

	// Place this binary in the shared volume for the preStop hook and
	// `kubectl exec ... dumpcatcher dump` in app containers.
	if err := placeBinary(filepath.Join(cfg.Dir, contract.BinDir, contract.BinaryName)); err != nil {
		log.Error(err, "could not place the dumpcatcher binary in the shared volume; preStop dumps will fail")
	}
	dumps := filepath.Join(cfg.Dir, contract.DumpsDir)
	for _, name := range cfg.Containers {
		d := filepath.Join(dumps, name)
		if err := os.MkdirAll(d, 0o777); err == nil {
			_ = os.Chmod(d, 0o777) // any app uid may write; umask-proof
		}
	}
	sp, err := spool.Open(filepath.Join(cfg.Dir, ".spool"), log.WithName("spool"), nil)
	if err != nil {
		return err
	}
	bucket, err := storage.Open(cfg.Destination, storage.Options{CredentialsDir: cfg.CredentialsDir, CAFile: cfg.CAFile, Log: log.WithName("storage")})
	if err != nil {
		return err
	}
	var metrics *uploader.Metrics
	if cfg.MetricsAddress != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if metrics, err = uploader.NewMetrics(reg); err != nil {
			return err
		}
		stop, err := serveMetrics(cfg.MetricsAddress, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	u, err := uploader.New(uploader.Options{
		Bucket: bucket, Spool: sp, DumpsDir: dumps, Template: tmpl, Identity: cfg.Identity,
		Compression: cfg.Compression, QuietPeriod: cfg.QuietPeriod, Drain: cfg.Drain, Log: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	// The lock socket outlives ctx: preStop hooks still ask while the
	// uploads drain.
	lockCtx, stopLocks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLocks()
	if stopped := serveLocks(lockCtx, cfg, bucket, u, log); stopped != nil {
		defer func() { stopLocks(); <-stopped }()
	}
	log.Info("uploading", "version", cfg.Version, "destination", bucket.URL(""), "dumps", dumps,
		"compression", cfg.Compression, "containers", cfg.Containers)
	return u.Run(ctx)
}

// serveLocks answers the dump command on the socket next to the binary:
// the workload's dump lock for the preStop hooks of this pod, and where a
// dump will be uploaded. The channel is closed when the server has stopped
// (after ctx is done); nil means there is no server.
func serveLocks(ctx context.Context, cfg Config, bucket storage.Bucket, u *uploader.Uploader, log logr.Logger) <-chan struct{} {
	store, ok := bucket.(storage.Conditional)
	if !ok {
		return nil
	}
	lockKey, err := dumplock.Key(cfg.Identity.Namespace, cfg.Identity.Workload)
	if err != nil {
		log.Info("preStop dumps of this pod go ahead without the workload's dump lock", "error", err)
		lockKey = ""
	}
	socket := filepath.Join(cfg.Dir, contract.BinDir, contract.LockSocketName)
	ln, err := dumplock.Listen(socket)
	if err != nil {
		log.Error(err, "could not listen for dump lock requests; preStop dumps go ahead without the lock", "socket", socket)
		return nil
	}
	s := &dumplock.Server{Locks: dumplock.Locks{Store: store}, Key: lockKey, Holder: cfg.Identity.Namespace + "/" + cfg.Identity.Pod,
		MaxTTL: cfg.maxLockTTL(),
		Where: func(container, file string) (string, error) {
			return u.KeyPattern(cfg.containerOf(container, file), file)
		}, Log: log.WithName("lock")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx, ln); err != nil {
			log.Error(err, "dump lock socket failed")
		}
	}()
	return done
}

// serveMetrics serves reg on addr until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ln) // returns when stopped
	}()
	return func() {
		_ = srv.Close()
		wg.Wait()
	}, nil
}

// containerOf names the container of a dump file for the dump command,
// which knows its container only when the hook tells it: the only target
// container, or the one whose dump directory holds the file.
func (c Config) containerOf(container, file string) string {
	switch {
	case container != "":
		return container
	case len(c.Containers) == 1:
		return c.Containers[0]
	}
	for _, name := range c.Containers {
		if _, err := os.Stat(filepath.Join(c.Dir, contract.DumpsDir, name, file)); err == nil {
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

// maxLockTTL is the longest dump lock a preStop hook of this pod may take:
// its grace period plus dumplock.Margin, or dumplock.DefaultMaxTTL when the
// grace period is unknown.
func (c Config) maxLockTTL() time.Duration {
	if c.GracePeriodSeconds > 0 {
		return dumplock.MaxTTL(c.GracePeriodSeconds)
	}
	return dumplock.DefaultMaxTTL
}
