package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// GVR of the dumps resource (DUMPSAPI.md).
var GVR = schema.GroupVersionResource{Group: apierr.Group, Version: apierr.Version, Resource: apierr.Resource}

// tableAccept asks for the server-side table, like kubectl get.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

// client talks to the dumps API (and the core API for `dump`) with the
// user's kubeconfig identity.
type client struct {
	cfg     *rest.Config
	rest    rest.Interface
	dynamic dynamic.NamespaceableResourceInterface
	disco   discovery.DiscoveryInterface
	core    kubernetes.Interface
	http    *http.Client
}

func newClient(flags *genericclioptions.ConfigFlags) (*client, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	gv := GVR.GroupVersion()
	rc := rest.CopyConfig(cfg)
	rc.GroupVersion = &gv
	rc.APIPath = "/apis"
	rc.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	if rc.UserAgent == "" {
		rc.UserAgent = "kubectl-dumpcatcher"
	}
	r, err := rest.RESTClientFor(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	core, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, err
	}
	return &client{cfg: rc, rest: r, dynamic: dyn.Resource(GVR), disco: disco, core: core, http: hc}, nil
}

// installed reports whether discovery serves the dumps group.
func (c *client) installed() (bool, error) {
	groups, err := c.disco.ServerGroups()
	if err != nil {
		return false, err
	}
	for _, g := range groups.Groups {
		if g.Name == apierr.Group {
			return true, nil
		}
	}
	return false, nil
}

func (c *client) explain(err error, req apierr.Request) error {
	return apierr.Explain(err, req, c.installed)
}

func (c *client) ns(namespace string) dynamic.ResourceInterface {
	if namespace == "" {
		return c.dynamic
	}
	return c.dynamic.Namespace(namespace)
}

// path is the API path of the dumps of namespace ("" for all), plus parts.
func path(namespace string, parts ...string) []string {
	p := []string{"/apis", apierr.Group, apierr.Version}
	if namespace != "" {
		p = append(p, "namespaces", namespace)
	}
	return append(append(p, apierr.Resource), parts...)
}

// table GETs the server-side table of a list (name "") or of one Dump.
func (c *client) table(ctx context.Context, namespace, name, selector string) (*metav1.Table, error) {
	req := c.rest.Get().SetHeader("Accept", tableAccept)
	if name == "" {
		req = req.AbsPath(path(namespace)...)
		if selector != "" {
			req = req.Param("labelSelector", selector)
		}
	} else {
		req = req.AbsPath(path(namespace, name)...)
	}
	// Result.Error decodes a Status body (DoRaw would not: a dumps server's
	// 503 must not read as the aggregator's).
	res := req.Do(ctx)
	if err := res.Error(); err != nil {
		return nil, err
	}
	body, err := res.Raw()
	if err != nil {
		return nil, err
	}
	var t metav1.Table
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("the dumps API answered with something that is not JSON: %w", err)
	}
	if t.Kind != "Table" {
		return nil, fmt.Errorf("the dumps API answered a %q, not a Table: is it the dumpcatcher API server?", t.Kind)
	}
	// The rows carry the objects' metadata; decode it for the NAMESPACE
	// column. Cells come from the store's keys: no control characters.
	for i := range t.Rows {
		for j, cell := range t.Rows[i].Cells {
			if s, ok := cell.(string); ok {
				t.Rows[i].Cells[j] = controlFree(s)
			}
		}
		if raw := t.Rows[i].Object.Raw; len(raw) > 0 {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err == nil {
				t.Rows[i].Object.Object = u
			}
		}
	}
	return &t, nil
}

func (c *client) get(ctx context.Context, namespace, name string) (*unstructured.Unstructured, dumpobj.Dump, error) {
	u, err := c.dynamic.Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, dumpobj.Dump{}, c.explain(err, apierr.Request{Verb: "get", Namespace: namespace, Name: name})
	}
	d, err := dumpobj.From(u)
	return u, d, err
}

func (c *client) list(ctx context.Context, namespace, selector string) (*unstructured.UnstructuredList, error) {
	l, err := c.ns(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, c.explain(err, apierr.Request{Verb: "list", Namespace: namespace})
	}
	return l, nil
}

// downloadURL is the absolute URL of dumps/NAME/download.
func (c *client) downloadURL(namespace, name string) string {
	return c.rest.Get().AbsPath(path(namespace, name, "download")...).URL().String()
}

// retryable tells list errors worth waiting out (`dump`'s wait).
func retryable(err error) bool {
	return apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}

// controlFree replaces control characters with '?'.
func controlFree(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
