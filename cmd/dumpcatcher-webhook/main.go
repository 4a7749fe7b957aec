// Command dumpcatcher-webhook is the mutating admission webhook that injects
// heap-dump plumbing into Java pods, and (`inject`) the same injection applied
// offline to manifests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/fielderr"
	"github.com/dumpcatcher/dumpcatcher/internal/signals"
	"github.com/dumpcatcher/dumpcatcher/webhook/admission"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/dumpcatcher/dumpcatcher/webhook/manifest"
	"github.com/dumpcatcher/dumpcatcher/webhook/server"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "dumpcatcher-webhook:", err)
		os.Exit(1)
	}
}

const usage = `Usage: dumpcatcher-webhook [serve] [flags]
       dumpcatcher-webhook inject -f FILE|- [flags]
       dumpcatcher-webhook version

Commands:
  serve     the mutating admission webhook (the default: flags alone start it)
  inject    apply the injection offline to a manifest: Pods and the pod
            templates of Deployments, StatefulSets, DaemonSets, ReplicaSets,
            Jobs and CronJobs
  version   print the version

Run 'dumpcatcher-webhook COMMAND --help' for the flags of a command.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 {
		switch args[0] {
		case "inject":
			return runInject(args[1:], stdin, stdout, stderr)
		case "version", "--version":
			fmt.Fprintln(stdout, version)
			return nil
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			fmt.Fprintln(stdout, "\nFlags of serve:")
			fs, _ := serveFlags(&serveConfig{}, getenv)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil
		case "serve":
			args = args[1:]
		}
	}
	sc, err := parseServe(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := crzap.New(crzap.UseFlagOptions(&sc.zap))
	ctrl.SetLogger(log)
	restCfg, err := restConfig(sc.kubeconfig)
	if err != nil {
		return err
	}
	sc.opts.Log = log
	sc.opts.Registry = ctrlmetrics.Registry
	// The first SIGTERM stops the server gracefully; a second one exits at once.
	ctx, stop := signals.Context(context.Background(), log)
	defer stop()
	return server.Run(ctx, restCfg, sc.opts)
}

// serveConfig is everything the server needs from flags, environment and
// the config file, validated before anything starts.
type serveConfig struct {
	opts       server.Options
	kubeconfig string
	zap        crzap.Options
}

// serveFlags binds the flags of serve to sc; the returned string is the
// config file's name.
func serveFlags(sc *serveConfig, getenv func(string) string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("dumpcatcher-webhook serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: dumpcatcher-webhook [serve] [flags]\n\nServes the mutating admission webhook on HTTPS (path "+admission.Path+").\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cfgFile := fs.String("config", "", "YAML configuration file (every key has a default; see docs/configuration.md)")
	fs.StringVar(&sc.opts.CertDir, "cert-dir", "/etc/dumpcatcher/tls", "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&sc.opts.Host, "host", "", "address to serve HTTPS on (empty: all)")
	fs.IntVar(&sc.opts.Port, "port", 9443, "HTTPS port of the admission webhook (path "+admission.Path+")")
	fs.StringVar(&sc.opts.MetricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint (0 disables)")
	fs.StringVar(&sc.opts.HealthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz (0 disables)")
	fs.StringVar(&sc.opts.Namespace, "namespace", getenv("POD_NAMESPACE"), "the webhook's own namespace, never injected (default $POD_NAMESPACE)")
	fs.StringVar(&sc.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, or $KUBECONFIG)")
	sc.zap.BindFlags(fs)
	return fs, cfgFile
}

func parseServe(args []string, stderr io.Writer, getenv func(string) string) (serveConfig, error) {
	var sc serveConfig
	fs, cfgFile := serveFlags(&sc, getenv)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return sc, err
	}
	if fs.NArg() > 0 {
		return sc, fmt.Errorf("unexpected argument %q (subcommands: serve, inject, version)", fs.Arg(0))
	}
	// Every problem at once, each naming its flag.
	var errs field.ErrorList
	if sc.opts.Port < 1 || sc.opts.Port > 65535 {
		errs = append(errs, field.Invalid(field.NewPath("--port"), sc.opts.Port, fmt.Sprintf("%d is not a port number", sc.opts.Port)))
	}
	if sc.opts.Namespace == "" {
		errs = append(errs, field.Required(field.NewPath("--namespace"), "the webhook's own namespace is unknown; set --namespace or POD_NAMESPACE"))
	}
	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		// The file's own errors name the file and the key (webhook/config),
		// one a line: each becomes a line of its own.
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, field.Invalid(field.NewPath("--config"), *cfgFile, line))
		}
	}
	if len(errs) > 0 {
		return sc, flagErrors(errs)
	}
	sc.opts.Config = cfg
	sc.opts.Version = version
	return sc, nil
}

// flagErrors is one error with a line per problem: the flag, then what is
// wrong.
func flagErrors(errs field.ErrorList) error {
	return errors.New(fielderr.Lines(errs, fielderr.Path))
}

func loadConfig(file string) (config.Config, error) {
	if file == "" {
		return config.Parse(nil, version)
	}
	return config.Load(file, version)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return ctrl.GetConfig()
}

func runInject(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dumpcatcher-webhook inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "manifest file to inject, - for standard input (required)")
	cfgFile := fs.String("config", "", "webhook configuration file (the one the cluster's webhook uses)")
	ns := fs.String("namespace", "default", "namespace of objects that do not name one")
	nsLabels := fs.String("namespace-labels", "", "labels the namespace has in the cluster, e.g. dumpcatcher.io/inject=enabled (a file cannot show them)")
	own := fs.String("webhook-namespace", "", "the namespace the webhook runs in: its objects are never injected, as in the cluster")
	native := fs.String("native-sidecar", "", "always or never; default: the config's nativeSidecar, where auto means always (Kubernetes 1.29+)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: dumpcatcher-webhook inject -f FILE|- [flags]\n\nApplies the webhook's injection to Pods and the pod templates of Deployments,\nStatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs; writes the stream to stdout.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *file == "" {
		return fmt.Errorf("inject: -f FILE (or - for standard input) is required")
	}
	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		return err
	}
	mode := cfg.NativeSidecar
	if *native != "" {
		mode = *native
	}
	if mode != config.NativeAlways && mode != config.NativeNever && mode != config.NativeAuto {
		return fmt.Errorf("--native-sidecar: %q is not one of always, never", *native)
	}
	nsLabelSet, err := parseLabels(*nsLabels)
	if err != nil {
		return err
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	opts := inject.Options{Config: cfg, NativeSidecar: mode != config.NativeNever, OwnNamespace: *own, Version: version}
	warnings, err := manifest.Inject(in, stdout, manifest.Params{Namespace: *ns, NamespaceLabels: nsLabelSet}, opts)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "Warning:", w)
	}
	return err
}

// parseLabels reads --namespace-labels: key=value pairs separated by
// commas, each a valid label (k8s.io/apimachinery's labels).
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return map[string]string{}, nil
	}
	set, err := labels.ConvertSelectorToLabelsMap(s, field.WithPath(field.NewPath("labels")))
	if err != nil {
		return nil, fmt.Errorf("--namespace-labels: %q is not key=value[,key=value...] of valid labels, e.g. dumpcatcher.io/inject=enabled,team=a: %v", s, err)
	}
	return set, nil
}
