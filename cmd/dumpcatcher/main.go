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
	"os"
	"runtime/debug"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/signals"
	"github.com/dumpcatcher/dumpcatcher/sidecar/app"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
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

// parseUpload reads upload's flags, each falling back to its environment
// variable (how the webhook configures the sidecar), and validates them.
func parseUpload(args []string, stderr io.Writer, getenv func(string) string) (app.Config, error) {
	var f app.Flags
	fs := flag.NewFlagSet("dumpcatcher upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.Bind(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return app.Config{}, err
	}
	if fs.NArg() > 0 {
		return app.Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c, err := f.Config()
	c.Version = version
	return c, err
}

// memoryLimit is the uploader's soft heap limit unless GOMEMLIMIT says
// otherwise: two 16 MiB parts are live during an upload, and without a
// limit the collector lets garbage grow the RSS past 60 MiB (measured peak
// with the limit: 56 MiB; 40 MiB makes the collector run constantly).
const memoryLimit = 48 << 20

func upload(c app.Config) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(c.LogLevel)
	zc.Sampling = nil
	zl, err := zc.Build()
	if err != nil {
		return err
	}
	defer zl.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	log := zapr.NewLogger(zl)
	// The first SIGTERM starts the drain; a second one exits at once.
	ctx, stop := signals.Context(context.Background(), log)
	defer stop()
	return app.Run(ctx, c, log)
}
