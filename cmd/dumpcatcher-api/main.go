// Command dumpcatcher-api serves the dumps.dumpcatcher.io aggregated API
// (kubectl get dumps, dumps/download, dumps/presign) from the configured
// object stores, behind the kube-apiserver's aggregation layer.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/server"
	"github.com/dumpcatcher/dumpcatcher/internal/signals"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dumpcatcher-api:", err)
		os.Exit(1)
	}
}

// parse parses the flags and loads the configuration file. It returns
// pflag.ErrHelp for --help (the usage is printed).
func parse(args []string, stdout io.Writer) (*server.Options, server.Config, *crzap.Options, bool, error) {
	o := server.NewOptions()
	zo := &crzap.Options{}
	fs := pflag.NewFlagSet("dumpcatcher-api", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	o.AddFlags(fs)
	var showVersion bool
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	gofs := goFlagSet()
	zo.BindFlags(gofs)
	fs.AddGoFlagSet(gofs)
	if err := fs.Parse(args); err != nil {
		return nil, server.Config{}, nil, false, err
	}
	if fs.NArg() > 0 {
		return nil, server.Config{}, nil, false, fmt.Errorf("unexpected arguments %q: dumpcatcher-api takes only flags", fs.Args())
	}
	if showVersion {
		return o, server.Config{}, zo, true, nil
	}
	if errs := o.Validate(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return nil, server.Config{}, nil, false, errors.New(strings.Join(msgs, "\n"))
	}
	c, err := server.LoadConfig(o.ConfigFile)
	if err != nil {
		return nil, server.Config{}, nil, false, err
	}
	return o, c, zo, false, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, c, zo, showVersion, err := parse(args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if showVersion {
		fmt.Fprintln(stdout, version)
		return nil
	}
	zo.DestWriter = stderr
	log := crzap.New(crzap.UseFlagOptions(zo))
	klog.SetLogger(log) // k8s.io/apiserver logs through klog
	return serve(o, c, log)
}

func serve(o *server.Options, c server.Config, log logr.Logger) error {
	ctx, stop := signals.Context(context.Background(), log)
	defer stop()
	names := make([]string, len(c.Destinations))
	for i, d := range c.Destinations {
		names[i] = d.Name
	}
	log.Info("starting", "version", version, "destinations", names, "presignExpiry", c.PresignExpiry().String())
	return server.Run(ctx, o, c, log)
}
