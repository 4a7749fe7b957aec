// Package apierr turns the errors of the dumps API into messages that say
// what to do: install the API, bind a Role, check the APIService, wait for the
// store.
package apierr

import (
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API's coordinates (DUMPSAPI.md).
const (
	Group      = "dumps.dumpcatcher.io"
	Version    = "v1alpha1"
	Resource   = "dumps"
	APIService = Version + "." + Group
)

// Request says what the plugin asked for, to name it in a message.
type Request struct {
	Verb        string // get, list, delete
	Subresource string // "", download, presign
	Namespace   string // "" for all namespaces
	Name        string // "" for a list
}

// Discovery reports whether the dumps API group is served (in discovery).
type Discovery func() (installed bool, err error)

// Error is a mapped error: the message says what to do, Cause is the API's.
type Error struct {
	Msg   string
	Cause error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Cause }

// Explain maps err from a request to the dumps API. installed is asked only
// when a 404 could mean that the API is not installed; it may be nil.
func Explain(err error, req Request, installed Discovery) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return err
	}
	st := status.Status()
	wrap := func(format string, args ...any) error {
		return &Error{Msg: fmt.Sprintf(format, args...), Cause: err}
	}
	switch {
	case st.Code == http.StatusForbidden:
		return wrap("%s", forbidden(req))
	case st.Code == http.StatusUnauthorized:
		return wrap("the cluster refused your credentials (401 Unauthorized): check the kubeconfig user and context (--kubeconfig, --context, --user)")
	case st.Code == http.StatusNotFound:
		if installed != nil {
			if ok, derr := installed(); derr == nil && !ok {
				return wrap("%s", notInstalled)
			}
		}
		if req.Name != "" {
			return wrap("dump %q not found in namespace %q: list the dumps with `kubectl dumpcatcher list -n %s`", req.Name, req.Namespace, req.Namespace)
		}
		return wrap("%s (404): %s", notInstalled, st.Message)
	case st.Code == http.StatusServiceUnavailable || st.Code == http.StatusBadGateway:
		if fromAggregator(st) {
			return wrap("the dumps API server is not available (%d from the kube-apiserver): check `kubectl get apiservice %s` and the dumpcatcher-api pods of the Helm release", st.Code, APIService)
		}
		return wrap("the dumps API cannot reach its object store (%d): %s; retry later, and check the store and the dumpcatcher-api logs (its /readyz?verbose reports the store)", st.Code, st.Message)
	case st.Code == http.StatusRequestedRangeNotSatisfiable:
		return wrap("the server refused the byte range (416): the dump changed or the partial file is longer than the dump; delete the partial file and download again")
	}
	return err
}

const notInstalled = "the dumps API is not installed in this cluster: install it with `helm upgrade RELEASE charts/dumpcatcher -n RELEASE_NAMESPACE --reuse-values --set api.enabled=true` (a cluster admin does), then check `kubectl get apiservice " + APIService + "`"

// fromAggregator tells an aggregator's 503 (no Status body: the APIService
// is unavailable) from the dumps server's own (a Status naming the store).
func fromAggregator(st metav1.Status) bool {
	if st.Details == nil {
		return false
	}
	for _, c := range st.Details.Causes {
		if c.Type == metav1.CauseTypeUnexpectedServerResponse {
			return true
		}
	}
	return false
}

// ClusterRole names the shipped ClusterRole that grants the request.
func ClusterRole(req Request) string {
	switch {
	case req.Verb == "delete":
		return "dumpcatcher-dumps-admin"
	case req.Subresource != "":
		return "dumpcatcher-dumps-downloader"
	}
	return "dumpcatcher-dumps-reader"
}

func forbidden(req Request) string {
	res := Resource
	if req.Subresource != "" {
		res += "/" + req.Subresource
	}
	role := ClusterRole(req)
	if req.Namespace == "" {
		return fmt.Sprintf("forbidden: you may not %s %s.%s across all namespaces: a ClusterRoleBinding must grant verb %q on resource %q of API group %q (the shipped ClusterRole %s does), or list one namespace with -n NAMESPACE",
			req.Verb, Resource, Group, req.Verb, res, Group, role)
	}
	return fmt.Sprintf("forbidden: you may not %s %s.%s in namespace %q: a Role or RoleBinding there must grant verb %q on resource %q of API group %q; e.g. `kubectl create rolebinding dumps -n %s --clusterrole=%s --user=YOU` (by a namespace admin)",
		req.Verb, Resource, Group, req.Namespace, req.Verb, res, Group, req.Namespace, role)
}
