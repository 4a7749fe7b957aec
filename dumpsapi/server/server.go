// Package server runs the dumps.dumpcatcher.io aggregated API: a
// k8s.io/apiserver GenericAPIServer with delegated authentication and
// authorization, no etcd, serving Dumps from the configured object stores.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/sets"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	apirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/component-base/compatibility"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/dumpsapi/internal/openapi"
	"github.com/dumpcatcher/dumpcatcher/dumpsapi/internal/registry"
	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// Options are the server's flags.
type Options struct {
	SecureServing  *genericoptions.SecureServingOptionsWithLoopback
	Authentication *genericoptions.DelegatingAuthenticationOptions
	Authorization  *genericoptions.DelegatingAuthorizationOptions
	// Kubeconfig is used for the TokenReviews and SubjectAccessReviews
	// when --authentication-kubeconfig / --authorization-kubeconfig are
	// not given (empty: in-cluster).
	Kubeconfig string
	// ConfigFile is --config.
	ConfigFile string
}

// NewOptions returns the defaults: port 6443, a self-signed certificate in
// --cert-dir when no --tls-cert-file is given.
func NewOptions() *Options {
	o := &Options{
		SecureServing:  genericoptions.NewSecureServingOptions().WithLoopback(),
		Authentication: genericoptions.NewDelegatingAuthenticationOptions(),
		Authorization:  genericoptions.NewDelegatingAuthorizationOptions(),
	}
	o.SecureServing.BindPort = 6443
	o.SecureServing.ServerCert.PairName = "dumpcatcher-api"
	return o
}

// AddFlags adds the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.SecureServing.AddFlags(fs)
	o.Authentication.AddFlags(fs)
	o.Authorization.AddFlags(fs)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig for TokenReviews and SubjectAccessReviews when --authentication-kubeconfig/--authorization-kubeconfig are not set (default: in-cluster)")
	fs.StringVar(&o.ConfigFile, "config", o.ConfigFile, "the configuration file: destinations and presign (required)")
}

// Validate returns the problems of the flags.
func (o *Options) Validate() []error {
	var errs []error
	errs = append(errs, o.SecureServing.Validate()...)
	errs = append(errs, o.Authentication.Validate()...)
	errs = append(errs, o.Authorization.Validate()...)
	if o.ConfigFile == "" {
		errs = append(errs, fmt.Errorf("--config: required: the configuration file with the destinations to serve"))
	}
	return errs
}

// NewScheme returns the scheme of the API. The v1alpha1 types double as
// the internal version: there is one version and no conversion.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err) // only a programming error makes this fail
	}
	s.AddKnownTypes(schema.GroupVersion{Group: v1alpha1.GroupName, Version: runtime.APIVersionInternal}, &v1alpha1.Dump{}, &v1alpha1.DumpList{})
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	s.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	return s
}

// OpenStores opens the configured destinations.
func OpenStores(c Config, log logr.Logger) (*registry.Stores, error) {
	stores := &registry.Stores{PresignExpiry: c.PresignExpiry()}
	for i, dc := range c.Destinations {
		d, err := contract.ParseDestination(dc.URL)
		if err != nil {
			return nil, fmt.Errorf("destinations[%d].url: %v", i, err)
		}
		b, err := storage.Open(d, storage.Options{CredentialsDir: dc.CredentialsDir, CAFile: dc.CAFile, Log: log.WithValues("destination", dc.Name)})
		if err != nil {
			return nil, fmt.Errorf("destinations[%d] (%s): %w", i, dc.Name, err)
		}
		st, ok := b.(registry.Store)
		if !ok {
			return nil, fmt.Errorf("destinations[%d] (%s): the %s store cannot list", i, dc.Name, d.Scheme)
		}
		dest := registry.Destination{Name: dc.Name, Store: st}
		if p, ok := b.(storage.Presigner); ok {
			dest.Presigner = p
		}
		stores.Destinations = append(stores.Destinations, dest)
	}
	return stores, nil
}

// longRunning: watches (none here) and downloads are not cut by this
// server's request timeout (the kube-apiserver in front has its own).
func longRunning(r *http.Request, ri *apirequest.RequestInfo) bool {
	if ri != nil && ri.IsResourceRequest && ri.APIGroup == v1alpha1.GroupName && ri.Resource == "dumps" && ri.Subresource == "download" {
		return true
	}
	return genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch"), sets.NewString())(r, ri)
}

// New builds the server; Run it with PrepareRun().RunWithContext(ctx).
func New(o *Options, stores *registry.Stores, log logr.Logger) (*genericapiserver.GenericAPIServer, error) {
	if o.Kubeconfig != "" {
		if o.Authentication.RemoteKubeConfigFile == "" {
			o.Authentication.RemoteKubeConfigFile = o.Kubeconfig
		}
		if o.Authorization.RemoteKubeConfigFile == "" {
			o.Authorization.RemoteKubeConfigFile = o.Kubeconfig
		}
	}
	if err := o.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("creating a self-signed serving certificate: %w", err)
	}
	scheme := NewScheme()
	codecs := serializer.NewCodecFactory(scheme)
	c := genericapiserver.NewConfig(codecs)
	// The k8s.io/apiserver version this is built with (it gates its features).
	c.EffectiveVersion = compatibility.NewEffectiveVersionFromString("1.34", "", "")
	c.LongRunningFunc = longRunning
	namer := openapinamer.NewDefinitionNamer(scheme)
	c.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	c.OpenAPIConfig.Info.Title = "dumpcatcher-api"
	c.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	c.OpenAPIV3Config.Info.Title = "dumpcatcher-api"
	if err := o.SecureServing.ApplyTo(&c.SecureServing, &c.LoopbackClientConfig); err != nil {
		return nil, err
	}
	if err := o.Authentication.ApplyTo(&c.Authentication, c.SecureServing, nil); err != nil {
		return nil, err
	}
	if err := o.Authorization.ApplyTo(&c.Authorization); err != nil {
		return nil, err
	}
	s, err := c.Complete(nil).New("dumpcatcher-api", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	group := genericapiserver.NewDefaultAPIGroupInfo(v1alpha1.GroupName, scheme, metav1.ParameterCodec, codecs)
	group.VersionedResourcesStorageMap[v1alpha1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"dumps":          registry.NewREST(stores),
		"dumps/download": registry.NewDownloadREST(stores),
		"dumps/presign":  registry.NewPresignREST(stores),
	}
	if err := s.InstallAPIGroup(&group); err != nil {
		return nil, err
	}
	s.Handler.NonGoRestfulMux.Handle("/storez", storez(stores))
	return s, nil
}

// storez reports whether each store answers a listing, apart from /readyz:
// an unreachable store must not make the APIService unavailable (that
// degrades discovery for every kubectl user). 200 when all answer, else
// 503; one line per destination.
func storez(stores *registry.Stores) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var b strings.Builder
		code := http.StatusOK
		for _, d := range stores.Destinations {
			err := d.Store.List(ctx, "", func(storage.ObjectInfo) error { return errFirst })
			if err != nil && !errors.Is(err, errFirst) {
				code = http.StatusServiceUnavailable
				fmt.Fprintf(&b, "[-]store %s failed: %v\n", d.Name, err)
				continue
			}
			fmt.Fprintf(&b, "[+]store %s ok\n", d.Name)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(b.String()))
	})
}

var errFirst = errors.New("first object")

// Run serves until ctx is done.
func Run(ctx context.Context, o *Options, c Config, log logr.Logger) error {
	stores, err := OpenStores(c, log)
	if err != nil {
		return err
	}
	s, err := New(o, stores, log)
	if err != nil {
		return err
	}
	return s.PrepareRun().RunWithContext(ctx)
}
