// Command controller is cert-manager's controller for the e2e rig, built from
// the pinned github.com/cert-manager/cert-manager module: every controller
// (issuers, certificates, certificate requests, ACME, ...) and issuer type
// (ACME, CA, self-signed, Vault, Venafi) is the module's, registered by its
// package and run from the module's ContextFactory as
// cert-manager runs them, with its metrics and healthz servers and a Lease
// for leader election; only this main and its flags are ours, because
// cert-manager's own (cmd/controller) is a separate module the Go module
// proxy does not serve. It takes the flags cert-manager's Helm chart passes
// and a few more; --config is not supported. No TLS for metrics, no pprof,
// no Gateway API.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cliflag "k8s.io/component-base/cli/flag"

	config "github.com/cert-manager/cert-manager/internal/apis/config/controller"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/controller/scheme"
	defaults "github.com/cert-manager/cert-manager/internal/apis/config/controller/v1alpha1"
	"github.com/cert-manager/cert-manager/internal/apis/config/controller/validation"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/controller/v1alpha1"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/healthz"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	"github.com/cert-manager/cert-manager/dumpcatcher-rig/internal/rig"

	// The issuer types register themselves with pkg/issuer; cert-manager's
	// own main imports them the same way.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/venafi"
)

func main() {
	ctx, exit := rig.Start()
	err := run(ctx, os.Args[1:])
	rig.Exit(ctx, "controller", err, exit)
}

// newConfig: the configuration with cert-manager's defaults applied.
func newConfig() (*config.ControllerConfiguration, error) {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return nil, err
	}
	versioned := &configv1alpha1.ControllerConfiguration{}
	scheme.Default(versioned)
	cfg := &config.ControllerConfiguration{}
	return cfg, scheme.Convert(versioned, cfg, nil)
}

func parse(args []string) (*config.ControllerConfiguration, error) {
	cfg, err := newConfig()
	if err != nil {
		return nil, err
	}
	var configFile string
	fs := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	fs.StringVar(&configFile, "config", "", "not supported by this build")
	fs.StringVar(&cfg.KubeConfig, "kubeconfig", cfg.KubeConfig, "kubeconfig; in-cluster configuration if empty")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "only watch this namespace (all if empty)")
	fs.StringVar(&cfg.ClusterResourceNamespace, "cluster-resource-namespace", cfg.ClusterResourceNamespace, "namespace of the Secrets ClusterIssuers refer to")
	le := &cfg.LeaderElectionConfig
	fs.BoolVar(&le.Enabled, "leader-elect", le.Enabled, "leader election")
	fs.StringVar(&le.Namespace, "leader-election-namespace", le.Namespace, "namespace of the leader election lease")
	fs.DurationVar(&le.LeaseDuration, "leader-election-lease-duration", le.LeaseDuration, "lease duration")
	fs.DurationVar(&le.RenewDeadline, "leader-election-renew-deadline", le.RenewDeadline, "renew deadline")
	fs.DurationVar(&le.RetryPeriod, "leader-election-retry-period", le.RetryPeriod, "retry period")
	fs.StringSliceVar(&cfg.Controllers, "controllers", cfg.Controllers, "controllers to run: * (the defaults), NAME, -NAME")
	fs.BoolVar(&cfg.EnableCertificateOwnerRef, "enable-certificate-owner-ref", cfg.EnableCertificateOwnerRef, "Secrets owned by their Certificate")
	fs.IntVar(&cfg.MaxConcurrentChallenges, "max-concurrent-challenges", cfg.MaxConcurrentChallenges, "ACME challenges at once")
	fs.StringVar(&cfg.MetricsListenAddress, "metrics-listen-address", cfg.MetricsListenAddress, "metrics address")
	fs.StringVar(&cfg.HealthzListenAddress, "internal-healthz-listen-address", cfg.HealthzListenAddress, "healthz address (/livez)")
	fs.StringVar(&cfg.ACMEHTTP01Config.SolverImage, "acme-http01-solver-image", cfg.ACMEHTTP01Config.SolverImage, "ACME HTTP01 solver image")
	fs.StringSliceVar(&cfg.ACMEDNS01Config.RecursiveNameservers, "dns01-recursive-nameservers", cfg.ACMEDNS01Config.RecursiveNameservers, "DNS01 nameservers")
	fs.BoolVar(&cfg.ACMEDNS01Config.RecursiveNameserversOnly, "dns01-recursive-nameservers-only", cfg.ACMEDNS01Config.RecursiveNameserversOnly, "DNS01 checks through the recursive nameservers only")
	fs.StringVar(&cfg.IngressShimConfig.DefaultIssuerName, "default-issuer-name", cfg.IngressShimConfig.DefaultIssuerName, "ingress-shim default issuer")
	fs.StringVar(&cfg.IngressShimConfig.DefaultIssuerKind, "default-issuer-kind", cfg.IngressShimConfig.DefaultIssuerKind, "ingress-shim default issuer kind")
	fs.StringVar(&cfg.IngressShimConfig.DefaultIssuerGroup, "default-issuer-group", cfg.IngressShimConfig.DefaultIssuerGroup, "ingress-shim default issuer group")
	fs.Var(cliflag.NewMapStringBool(&cfg.FeatureGates), "feature-gates", "feature gates")
	logf.AddFlags(&cfg.Logging, fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if configFile != "" {
		return nil, fmt.Errorf("--config is not supported by this build (flags only)")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return nil, err
	}
	if errs := validation.ValidateControllerConfiguration(cfg, nil); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return cfg, logf.ValidateAndApply(&cfg.Logging)
}

// enabled: the controllers --controllers selects ("*" is cert-manager's
// default set, "-NAME" removes one); none of the cluster-scoped ones when
// the controller watches one namespace.
func enabled(cfg *config.ControllerConfiguration) sets.Set[string] {
	on := sets.New[string]()
	for _, c := range cfg.Controllers {
		if c == "*" {
			on.Insert(defaults.DefaultEnabledControllers...)
		}
	}
	for _, c := range cfg.Controllers {
		if name, ok := strings.CutPrefix(c, "-"); ok {
			on.Delete(name)
		} else if c != "*" {
			on.Insert(c)
		}
	}
	if cfg.Namespace != "" {
		on.Delete(defaults.ClusterScopedControllers...)
	}
	return on
}

func quantity(s, what string) (resource.Quantity, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return q, fmt.Errorf("%s %q: %w", what, s, err)
	}
	return q, nil
}

func contextOptions(cfg *config.ControllerConfiguration) (controller.ContextOptions, error) {
	h := cfg.ACMEHTTP01Config
	var q [4]resource.Quantity
	var err error
	for i, s := range []string{h.SolverResourceRequestCPU, h.SolverResourceRequestMemory, h.SolverResourceLimitsCPU, h.SolverResourceLimitsMemory} {
		if q[i], err = quantity(s, "ACME HTTP01 solver resources"); err != nil {
			return controller.ContextOptions{}, err
		}
	}
	nameservers := cfg.ACMEDNS01Config.RecursiveNameservers
	if len(nameservers) == 0 {
		nameservers = dnsutil.RecursiveNameservers
	}
	return controller.ContextOptions{
		Kubeconfig:         cfg.KubeConfig,
		KubernetesAPIQPS:   cfg.KubernetesAPIQPS,
		KubernetesAPIBurst: cfg.KubernetesAPIBurst,
		APIServerHost:      cfg.APIServerHost, //nolint:staticcheck // as cert-manager passes it
		Namespace:          cfg.Namespace,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        cfg.ClusterResourceNamespace,
			ClusterIssuerAmbientCredentials: cfg.ClusterIssuerAmbientCredentials,
			IssuerAmbientCredentials:        cfg.IssuerAmbientCredentials,
		},
		ACMEOptions: controller.ACMEOptions{
			HTTP01SolverImage:                 h.SolverImage,
			HTTP01SolverResourceRequestCPU:    q[0],
			HTTP01SolverResourceRequestMemory: q[1],
			HTTP01SolverResourceLimitsCPU:     q[2],
			HTTP01SolverResourceLimitsMemory:  q[3],
			ACMEHTTP01SolverRunAsNonRoot:      h.SolverRunAsNonRoot,
			HTTP01SolverNameservers:           h.SolverNameservers,
			DNS01CheckAuthoritative:           !cfg.ACMEDNS01Config.RecursiveNameserversOnly,
			DNS01Nameservers:                  nameservers,
			DNS01CheckRetryPeriod:             cfg.ACMEDNS01Config.CheckRetryPeriod,
		},
		IngressShimOptions: controller.IngressShimOptions{
			DefaultIssuerName:                 cfg.IngressShimConfig.DefaultIssuerName,
			DefaultIssuerKind:                 cfg.IngressShimConfig.DefaultIssuerKind,
			DefaultIssuerGroup:                cfg.IngressShimConfig.DefaultIssuerGroup,
			DefaultAutoCertificateAnnotations: cfg.IngressShimConfig.DefaultAutoCertificateAnnotations,
			ExtraCertificateAnnotations:       cfg.IngressShimConfig.ExtraCertificateAnnotations,
		},
		CertificateOptions: controller.CertificateOptions{
			EnableOwnerRef:                           cfg.EnableCertificateOwnerRef,
			CopiedAnnotationPrefixes:                 cfg.CopiedAnnotationPrefixes,
			CertificateRequestMinimumBackoffDuration: cfg.CertificateRequestMinimumBackoffDuration,
		},
		SchedulerOptions: controller.SchedulerOptions{MaxConcurrentChallenges: cfg.MaxConcurrentChallenges},
	}, nil
}

func run(rootCtx context.Context, args []string) error {
	cfg, err := parse(args)
	if err != nil {
		return err
	}
	rootCtx, cancel := context.WithCancel(rootCtx)
	defer cancel()
	log := logf.FromContext(rootCtx, "controller")
	log.Info("starting", "version", util.AppVersion)

	opts, err := contextOptions(cfg)
	if err != nil {
		return err
	}
	factory, err := controller.NewContextFactory(rootCtx, opts)
	if err != nil {
		return err
	}
	cmctx, err := factory.Build()
	if err != nil {
		return err
	}
	on := enabled(cfg)
	log.Info("enabled controllers", "controllers", sets.List(on))

	g, ctx := errgroup.WithContext(rootCtx)
	serve := func(name string, ln net.Listener, srv *http.Server) {
		g.Go(func() error {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shutdown) //nolint:contextcheck // the root context is done
		})
		g.Go(func() error {
			log.Info("serving "+name, "address", ln.Addr().String())
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	metricsLn, err := net.Listen("tcp", cfg.MetricsListenAddress)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	serve("metrics", metricsLn, cmctx.Metrics.NewServer(metricsLn))
	healthzLn, err := net.Listen("tcp", cfg.HealthzListenAddress)
	if err != nil {
		return fmt.Errorf("healthz: %w", err)
	}
	healthzServer := healthz.NewServer(cfg.LeaderElectionConfig.HealthzTimeout)
	g.Go(func() error { return healthzServer.Start(ctx, healthzLn) })

	elected := make(chan struct{})
	if cfg.LeaderElectionConfig.Enabled {
		lost := make(chan error, 1)
		g.Go(func() error {
			lctx, err := factory.Build("leader-election")
			if err != nil {
				return err
			}
			id, err := os.Hostname()
			if err != nil {
				return err
			}
			lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.LeaderElectionConfig.Namespace,
				"cert-manager-controller", lctx.Client.CoreV1(), lctx.Client.CoordinationV1(),
				resourcelock.ResourceLockConfig{Identity: id + "-external-cert-manager-controller", EventRecorder: lctx.Recorder})
			if err != nil {
				return err
			}
			le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
				Lock:            lock,
				LeaseDuration:   cfg.LeaderElectionConfig.LeaseDuration,
				RenewDeadline:   cfg.LeaderElectionConfig.RenewDeadline,
				RetryPeriod:     cfg.LeaderElectionConfig.RetryPeriod,
				ReleaseOnCancel: true,
				WatchDog:        healthzServer.LeaderHealthzAdaptor,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(context.Context) { close(elected) },
					OnStoppedLeading: func() {
						if ctx.Err() == nil {
							lost <- errors.New("leader election lost")
						}
					},
				},
			})
			if err != nil {
				return err
			}
			le.Run(ctx)
			select {
			case err := <-lost:
				return err
			default:
				return nil
			}
		})
	} else {
		close(elected)
	}
	select {
	case <-ctx.Done():
		return g.Wait()
	case <-elected:
	}

	names := make([]string, 0, len(controller.Known()))
	for n := range controller.Known() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !on.Has(n) {
			continue
		}
		c, err := controller.Known()[n](factory)
		if err != nil {
			cancel()
			return errors.Join(fmt.Errorf("controller %s: %w", n, err), g.Wait())
		}
		g.Go(func() error {
			log.Info("starting controller", "controller", n)
			return c.Run(cfg.NumberOfConcurrentWorkers, ctx)
		})
	}
	cmctx.SharedInformerFactory.Start(ctx.Done())
	cmctx.KubeSharedInformerFactory.Start(ctx.Done())
	cmctx.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	err = g.Wait()
	cmctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	cmctx.KubeSharedInformerFactory.Shutdown()
	cmctx.SharedInformerFactory.Shutdown()
	return err
}
