// Command cainjector is cert-manager's CA injector for the e2e rig, built
// from the pinned github.com/cert-manager/cert-manager module: the injectors
// are the module's (pkg/controller/cainjector), run by a controller-runtime
// manager as cert-manager runs them; only this main and its flags are ours,
// because cert-manager's own (cmd/cainjector) is a separate module the Go
// module proxy does not serve. It takes the flags cert-manager's Helm chart
// passes (--v, --leader-election-*) and a few more; --config is not
// supported. No TLS for metrics.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cliflag "k8s.io/component-base/cli/flag"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	config "github.com/cert-manager/cert-manager/internal/apis/config/cainjector"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/cainjector/scheme"
	"github.com/cert-manager/cert-manager/internal/apis/config/cainjector/validation"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/cainjector/v1alpha1"
	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	"github.com/cert-manager/cert-manager/dumpcatcher-rig/internal/rig"
)

func main() {
	ctx, exit := rig.Start()
	err := run(ctx, os.Args[1:])
	rig.Exit(ctx, "cainjector", err, exit)
}

// defaults: the configuration with cert-manager's defaults applied.
func defaults() (*config.CAInjectorConfiguration, error) {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return nil, err
	}
	versioned := &configv1alpha1.CAInjectorConfiguration{}
	scheme.Default(versioned)
	cfg := &config.CAInjectorConfiguration{}
	return cfg, scheme.Convert(versioned, cfg, nil)
}

func run(ctx context.Context, args []string) error {
	cfg, err := defaults()
	if err != nil {
		return err
	}
	var configFile string
	fs := pflag.NewFlagSet("cainjector", pflag.ContinueOnError)
	fs.StringVar(&configFile, "config", "", "not supported by this build")
	fs.StringVar(&cfg.KubeConfig, "kubeconfig", cfg.KubeConfig, "kubeconfig; in-cluster configuration if empty")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "only watch this namespace (all if empty)")
	le := &cfg.LeaderElectionConfig
	fs.BoolVar(&le.Enabled, "leader-elect", le.Enabled, "leader election")
	fs.StringVar(&le.Namespace, "leader-election-namespace", le.Namespace, "namespace of the leader election lease")
	fs.DurationVar(&le.LeaseDuration, "leader-election-lease-duration", le.LeaseDuration, "lease duration")
	fs.DurationVar(&le.RenewDeadline, "leader-election-renew-deadline", le.RenewDeadline, "renew deadline")
	fs.DurationVar(&le.RetryPeriod, "leader-election-retry-period", le.RetryPeriod, "retry period")
	fs.BoolVar(&cfg.EnableDataSourceConfig.Certificates, "enable-certificates-data-source", cfg.EnableDataSourceConfig.Certificates, "inject from Certificates (cert-manager.io/inject-ca-from)")
	in := &cfg.EnableInjectableConfig
	fs.BoolVar(&in.MutatingWebhookConfigurations, "enable-mutatingwebhookconfigurations-injectable", in.MutatingWebhookConfigurations, "inject into MutatingWebhookConfigurations")
	fs.BoolVar(&in.ValidatingWebhookConfigurations, "enable-validatingwebhookconfigurations-injectable", in.ValidatingWebhookConfigurations, "inject into ValidatingWebhookConfigurations")
	fs.BoolVar(&in.CustomResourceDefinitions, "enable-customresourcedefinitions-injectable", in.CustomResourceDefinitions, "inject into CustomResourceDefinitions")
	fs.BoolVar(&in.APIServices, "enable-apiservices-injectable", in.APIServices, "inject into APIServices")
	fs.StringVar(&cfg.MetricsListenAddress, "metrics-listen-address", cfg.MetricsListenAddress, "metrics address, 0 disables")
	fs.Var(cliflag.NewMapStringBool(&cfg.FeatureGates), "feature-gates", "feature gates")
	logf.AddFlags(&cfg.Logging, fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if configFile != "" {
		return fmt.Errorf("--config is not supported by this build (flags only)")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return err
	}
	if errs := validation.ValidateCAInjectorConfiguration(cfg, nil); len(errs) > 0 {
		return errs.ToAggregate()
	}
	if err := logf.ValidateAndApply(&cfg.Logging); err != nil {
		return err
	}
	log := logf.FromContext(ctx, "cainjector")
	log.Info("starting", "version", util.AppVersion)
	ctrl.SetLogger(log)

	restConfig, err := clientcmd.BuildConfigFromFlags("", cfg.KubeConfig)
	if err != nil {
		return err
	}
	restConfig = util.RestConfigWithUserAgent(restConfig, "cainjector")

	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiext.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))
	var namespaces map[string]cache.Config
	if cfg.Namespace != "" {
		namespaces = map[string]cache.Config{cfg.Namespace: {}}
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: scheme,
		Cache:  cache.Options{ReaderFailOnMissingInformer: true, DefaultNamespaces: namespaces},
		// Secrets are read from the API server, not cached (cert-manager
		// does the same: clusters hold many large Secrets).
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		LeaderElection:                le.Enabled,
		LeaderElectionNamespace:       le.Namespace,
		LeaderElectionID:              "cert-manager-cainjector-leader-election",
		LeaderElectionReleaseOnCancel: true,
		LeaderElectionResourceLock:    resourcelock.LeasesResourceLock,
		LeaseDuration:                 &le.LeaseDuration,
		RenewDeadline:                 &le.RenewDeadline,
		RetryPeriod:                   &le.RetryPeriod,
		Metrics:                       metricsserver.Options{BindAddress: cfg.MetricsListenAddress},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	// Injection from Certificates needs their CRD: wait for it (5 minutes).
	if cfg.EnableDataSourceConfig.Certificates {
		direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
		if err != nil {
			return err
		}
		err = wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
			err := direct.Get(ctx, types.NamespacedName{Name: "certificates.cert-manager.io"}, &apiext.CustomResourceDefinition{})
			if apierrors.IsNotFound(err) {
				log.Info("waiting for the CRD certificates.cert-manager.io")
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			return fmt.Errorf("CRD certificates.cert-manager.io: %w", err)
		}
	}

	err = cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		Namespace:                    cfg.Namespace,
		EnableCertificatesDataSource: cfg.EnableDataSourceConfig.Certificates,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   in.MutatingWebhookConfigurations,
			cainjector.ValidatingWebhookConfigurationName: in.ValidatingWebhookConfigurations,
			cainjector.APIServiceName:                     in.APIServices,
			cainjector.CustomResourceDefinitionName:       in.CustomResourceDefinitions,
		},
	})
	if err != nil {
		return fmt.Errorf("registering the injectors: %w", err)
	}
	return mgr.Start(ctx)
}
