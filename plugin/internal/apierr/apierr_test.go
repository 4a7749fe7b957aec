package apierr

import (
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var gr = schema.GroupResource{Group: Group, Resource: Resource}

func TestExplain(t *testing.T) {
	yes := func() (bool, error) { return true, nil }
	no := func() (bool, error) { return false, nil }
	other := errors.New("dial tcp: refused")
	for _, tc := range []struct {
		name      string
		err       error
		req       Request
		installed Discovery
		want      []string // substrings of the message
		same      bool     // the error is returned as is
	}{
		{name: "nil", err: nil, same: true},
		{name: "not an API error", err: other, same: true},
		{name: "forbidden list in a namespace", err: apierrors.NewForbidden(gr, "", errors.New("x")),
			req:  Request{Verb: "list", Namespace: "shop"},
			want: []string{`list dumps.dumps.dumpcatcher.io in namespace "shop"`, `verb "list" on resource "dumps"`, "--clusterrole=dumpcatcher-dumps-reader"}},
		{name: "forbidden download", err: apierrors.NewForbidden(gr, "d1", errors.New("x")),
			req:  Request{Verb: "get", Subresource: "download", Namespace: "shop", Name: "d1"},
			want: []string{`verb "get" on resource "dumps/download"`, "dumpcatcher-dumps-downloader"}},
		{name: "forbidden delete", err: apierrors.NewForbidden(gr, "d1", errors.New("x")),
			req:  Request{Verb: "delete", Namespace: "shop", Name: "d1"},
			want: []string{`verb "delete"`, "dumpcatcher-dumps-admin"}},
		{name: "forbidden all namespaces", err: apierrors.NewForbidden(gr, "", errors.New("x")),
			req:  Request{Verb: "list"},
			want: []string{"across all namespaces", "ClusterRoleBinding", "-n NAMESPACE"}},
		{name: "not installed", err: apierrors.NewNotFound(gr, "d1"), req: Request{Verb: "get", Namespace: "shop", Name: "d1"},
			installed: no, want: []string{"not installed", "api.enabled=true", "apiservice v1alpha1.dumps.dumpcatcher.io"}},
		{name: "dump not found", err: apierrors.NewNotFound(gr, "d1"), req: Request{Verb: "get", Namespace: "shop", Name: "d1"},
			installed: yes, want: []string{`dump "d1" not found in namespace "shop"`, "kubectl dumpcatcher list -n shop"}},
		{name: "aggregator 503", err: apierrors.NewGenericServerResponse(503, "get", gr, "", "service unavailable", 0, true),
			req: Request{Verb: "list", Namespace: "shop"}, want: []string{"dumps API server is not available", "kubectl get apiservice v1alpha1.dumps.dumpcatcher.io"}},
		{name: "store 503", err: apierrors.NewServiceUnavailable("store s3://b unreachable"),
			req: Request{Verb: "list", Namespace: "shop"}, want: []string{"cannot reach its object store", "store s3://b unreachable"}},
		{name: "401", err: apierrors.NewUnauthorized("no"), req: Request{Verb: "list"}, want: []string{"refused your credentials", "--context"}},
		{name: "other API error as is", err: apierrors.NewBadRequest("bad"), same: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Explain(tc.err, tc.req, tc.installed)
			if tc.same {
				if got != tc.err {
					t.Fatalf("Explain = %v, want the error unchanged (%v)", got, tc.err)
				}
				return
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("Explain(%v) does not wrap the API error", tc.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("Explain = %q\nwant it to contain %q", got, w)
				}
			}
		})
	}
}
