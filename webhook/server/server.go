// Package server runs the admission webhook: a controller-runtime manager
// with the TLS webhook server (certificates reloaded when the files change),
// health probes, Prometheus metrics and a cache of namespace labels.
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/dumpcatcher/dumpcatcher/webhook/admission"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Options configure Run.
type Options struct {
	// Config is the validated injection configuration.
	Config config.Config
	// Namespace is the webhook's own namespace (never injected).
	Namespace string
	// Version of the webhook, recorded in injected pods.
	Version string
	// Host and Port the HTTPS server listens on; CertDir holds tls.crt and tls.key.
	Host    string
	Port    int
	CertDir string
	// MetricsAddr and HealthAddr are listen addresses; "0" disables.
	MetricsAddr string
	HealthAddr  string
	// Registry receives the webhook's metrics; it must be the registry the
	// metrics endpoint serves (controller-runtime's metrics.Registry).
	Registry prometheus.Registerer
	Log      logr.Logger
}

// nativeSidecarMinor is the first Kubernetes 1.x minor that enables native
// sidecars (init containers with restartPolicy Always) by default.
const nativeSidecarMinor = 29

// ResolveNativeSidecar turns the configured mode into a decision, asking the
// API server for its version when the mode is auto.
func ResolveNativeSidecar(mode string, restCfg *rest.Config) (bool, string, error) {
	switch mode {
	case config.NativeAlways:
		return true, "configured always", nil
	case config.NativeNever:
		return false, "configured never", nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
	if err != nil {
		return false, "", err
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return false, "", fmt.Errorf("asking the API server for its version (set nativeSidecar to always or never to skip this): %w", err)
	}
	v, err := version.ParseGeneric(info.GitVersion)
	if err != nil {
		return false, "", fmt.Errorf("API server version %q: %w", info.GitVersion, err)
	}
	native := v.AtLeast(version.MajorMinor(1, nativeSidecarMinor))
	return native, "API server " + info.GitVersion, nil
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, restCfg *rest.Config, o Options) error {
	native, why, err := ResolveNativeSidecar(o.Config.NativeSidecar, restCfg)
	if err != nil {
		return err
	}
	o.Log.Info("starting", "version", o.Version, "nativeSidecar", native, "because", why,
		"namespace", o.Namespace, "destination", o.Config.Destination, "port", o.Port, "certDir", o.CertDir)

	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	ws := webhook.NewServer(webhook.Options{
		Host: o.Host, Port: o.Port, CertDir: o.CertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
	})
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme:                 scheme,
		Logger:                 o.Log,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.HealthAddr,
		WebhookServer:          ws,
		Cache:                  cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Namespace{}: {}}},
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	metrics, err := admission.NewMetrics(o.Registry)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h := &admission.Handler{
		Options:    inject.Options{Config: o.Config, NativeSidecar: native, OwnNamespace: o.Namespace, Version: o.Version},
		Namespaces: namespaceLabels(mgr.GetClient(), mgr.GetAPIReader()),
		Metrics:    metrics,
		Log:        o.Log.WithName("admission"),
	}
	// GetWebhookServer also adds the server to the manager's runnables.
	mgr.GetWebhookServer().Register(admission.Path, &webhook.Admission{Handler: h})

	// Start the namespace informer with the manager, so the first admission
	// does not wait for it, and report ready only once it has synced.
	if _, err := mgr.GetCache().GetInformer(ctx, &corev1.Namespace{}); err != nil {
		return fmt.Errorf("namespace informer: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", ws.StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("namespaces", func(r *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(r.Context()) {
			return fmt.Errorf("namespace cache not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// namespaceLabels reads labels from the cache, and from the API server when
// the cache has not seen a namespace yet (created a moment ago).
func namespaceLabels(cached client.Reader, direct client.Reader) admission.NamespaceLabels {
	return func(ctx context.Context, name string) (map[string]string, error) {
		var ns corev1.Namespace
		err := cached.Get(ctx, types.NamespacedName{Name: name}, &ns)
		if apierrors.IsNotFound(err) {
			err = direct.Get(ctx, types.NamespacedName{Name: name}, &ns)
		}
		if err != nil {
			return nil, err
		}
		return ns.Labels, nil
	}
}
