package uploader

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/spool"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// envChild makes the test binary run an uploader instead of the tests (see
// runChild), so that a test can run one as another uid.
const envChild = "DUMPCATCHER_TEST_CHILD_UPLOADER"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child uploader:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// runChild is an uploader process as the sidecar runs it, configured by
// the environment: CHILD_DIR (the shared volume), CHILD_DESTINATION and
// CHILD_CREDENTIALS. It logs JSON to stderr and stops (draining) on
// SIGTERM. With CHILD_GATE=1 its bucket holds the first upload until
// SIGUSR1, logging "test gate: holding the first upload": a worker kept
// busy, deterministically.
func runChild() error {
	zl, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer zl.Sync() //nolint:errcheck // stderr
	log := zapr.NewLogger(zl)
	dir := os.Getenv("CHILD_DIR")
	d, err := contract.ParseDestination(os.Getenv("CHILD_DESTINATION"))
	if err != nil {
		return err
	}
	b, err := storage.Open(d, storage.Options{CredentialsDir: os.Getenv("CHILD_CREDENTIALS"), MaxRetries: 1})
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(dir, ".spool"), log, nil)
	if err != nil {
		return err
	}
	gate := &gatedBucket{Bucket: b, release: make(chan struct{}), log: log}
	if os.Getenv("CHILD_GATE") != "1" {
		gate.open()
	}
	u, err := New(Options{Bucket: gate, Spool: sp, DumpsDir: filepath.Join(dir, "dumps"), Template: objectkey.MustParse(objectkey.Default),
		Identity: identity, Compression: CompressionNone, RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
		QuietPeriod: time.Second, Drain: 3 * time.Second, Settle: 200 * time.Millisecond, Log: log})
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				gate.open()
				continue
			}
			stop()
			return
		}
	}()
	return u.Run(ctx)
}

// gatedBucket holds its first Put until open is called.
type gatedBucket struct {
	storage.Bucket
	first   sync.Once
	opened  sync.Once
	release chan struct{}
	log     logr.Logger
}

func (g *gatedBucket) open() { g.opened.Do(func() { close(g.release) }) }

func (g *gatedBucket) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	hold := false
	g.first.Do(func() {
		select {
		case <-g.release:
		default:
			hold = true
		}
	})
	if hold {
		g.log.Info("test gate: holding the first upload", "key", key)
		select {
		case <-g.release:
		case <-ctx.Done():
			return storage.Info{}, ctx.Err()
		}
	}
	return g.Bucket.Put(ctx, key, r, opts)
}
