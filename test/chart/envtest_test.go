package chart

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// cluster is a real kube-apiserver and etcd (envtest) with the
// CustomResourceDefinitions the chart's optional objects need.
type cluster struct {
	api      *apiserver.Server
	client   *kubernetes.Clientset
	dynamic  dynamic.Interface
	mapper   meta.RESTMapper
	warnings *apiserver.Warnings
	// crds: cert-manager's and the ServiceMonitor CRDs are installed.
	crds bool
}

// startCluster starts envtest, skipping (or failing under
// DUMPCATCHER_REQUIRE_REAL) when the binaries are missing.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	var opts apiserver.Options
	if dir := apiserver.ChartCRDs(t); dir != "" {
		opts.CRDDirs = []string{dir}
	}
	api := apiserver.Start(t, opts)
	cfg := api.Config
	return &cluster{
		api:      api,
		client:   kubernetes.NewForConfigOrDie(cfg),
		dynamic:  dynamic.NewForConfigOrDie(cfg),
		mapper:   restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(cfg))),
		warnings: api.Warnings,
		crds:     len(opts.CRDDirs) > 0,
	}
}

func (c *cluster) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	_, err := c.client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

var restricted = map[string]string{
	"pod-security.kubernetes.io/enforce": "restricted",
	"pod-security.kubernetes.io/warn":    "restricted",
}

// apply applies the objects with server-side apply and strict field
// validation, as `kubectl apply --server-side` does, and returns them as
// stored.
func (c *cluster) apply(t *testing.T, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stored []*unstructured.Unstructured
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: no such resource in the API server: %v", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = c.dynamic.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = c.dynamic.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "dumpcatcher-chart-test", FieldValidation: "Strict"})
		if err != nil {
			t.Errorf("%s %s/%s rejected: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			continue
		}
		stored = append(stored, got)
	}
	return stored
}

// TestChartAgainstAPIServer applies every value set to a real API server.
func TestChartAgainstAPIServer(t *testing.T) {
	render.Helm(t)
	c := startCluster(t)
	ctx := context.Background()

	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			if (vs.certManager || vs.serviceMonitor) && !c.crds {
				t.Skip("needs the cert-manager and ServiceMonitor CRDs")
			}
			r := renderSet(t, vs)
			ns := r.release.Namespace
			c.namespace(t, ns, restricted)
			c.warnings.Take()
			stored := c.apply(t, r.objs)
			if t.Failed() {
				return
			}
			if w := c.warnings.Take(); len(w) > 0 {
				t.Errorf("warnings from the API server: %q", w)
			}
			// Applying again changes nothing: the chart has no fields the
			// server rewrites in a way that fights the apply.
			again := c.apply(t, r.objs)
			for i := range again {
				if again[i].GetKind() == "APIService" {
					// The aggregator writes the availability into status
					// meanwhile: only a spec change counts.
					if again[i].GetGeneration() != stored[i].GetGeneration() {
						t.Errorf("APIService %s: generation %d after the second apply, was %d", again[i].GetName(), again[i].GetGeneration(), stored[i].GetGeneration())
					}
					continue
				}
				if again[i].GetResourceVersion() != stored[i].GetResourceVersion() {
					t.Errorf("%s %s changed on the second apply", again[i].GetKind(), again[i].GetName())
				}
			}

			// The webhook pod passes the namespace's "restricted" Pod Security
			// enforcement (a dry run: envtest runs no controllers).
			d := r.deployment(t)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "webhook-", Namespace: ns, Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
			if _, err := c.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("the webhook pod is rejected in a restricted namespace: %v", err)
			}
			if w := c.warnings.Take(); len(w) > 0 {
				t.Errorf("warnings for the webhook pod: %q", w)
			}

			// What the ServiceAccount may do, asked of the API server's RBAC.
			sa := d.Spec.Template.Spec.ServiceAccountName
			allowed := func(verb, resource, namespace string) bool {
				sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User:               "system:serviceaccount:" + ns + ":" + sa,
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Namespace: namespace},
				}}
				got, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return got.Status.Allowed
			}
			for _, verb := range []string{"get", "list", "watch"} {
				if !allowed(verb, "namespaces", "") {
					t.Errorf("the webhook may not %s namespaces", verb)
				}
			}
			for _, a := range [][3]string{{"get", "secrets", ns}, {"list", "secrets", ""}, {"get", "pods", ns}, {"update", "namespaces", ""}, {"create", "events", ns}} {
				if allowed(a[0], a[1], a[2]) {
					t.Errorf("the webhook may %s %s in %q: more than it needs", a[0], a[1], a[2])
				}
			}

			// The stored webhook configuration is what the chart says (no
			// defaulting surprises), then it goes, so that a fail-closed
			// webhook with no server behind it cannot block the next set.
			mwc, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, r.fullname, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := r.webhook(t).Webhooks[0]
			got := mwc.Webhooks[0]
			if *got.FailurePolicy != *want.FailurePolicy || *got.TimeoutSeconds != *want.TimeoutSeconds || *got.MatchPolicy != *want.MatchPolicy ||
				got.ObjectSelector.Size() != 0 || !slices.Equal(got.NamespaceSelector.MatchExpressions[0].Values, want.NamespaceSelector.MatchExpressions[0].Values) {
				t.Errorf("stored webhook differs: %+v", got)
			}
			if err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, r.fullname, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if r.has("APIService") {
				checkAPIOnServer(t, c, r)
			}
		})
	}

	t.Run("examples", func(t *testing.T) {
		root := render.RepoRoot(t)
		minio := decodeFile(t, filepath.Join(root, "deploy", "examples", "minio.yaml"))
		c.warnings.Take()
		c.apply(t, minio)
		if w := c.warnings.Take(); len(w) > 0 {
			t.Errorf("warnings: %q", w)
		}
		// Both pods of the example pass the "restricted" namespace.
		for _, o := range minio {
			var tmpl corev1.PodTemplateSpec
			switch o.GetKind() {
			case "Deployment":
				var d appsv1.Deployment
				render.Decode(t, o, &d)
				tmpl = d.Spec.Template
			case "Job":
				var j batchv1.Job
				render.Decode(t, o, &j)
				tmpl = j.Spec.Template
			default:
				continue
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "example-", Labels: tmpl.Labels}, Spec: tmpl.Spec}
			if _, err := c.client.CoreV1().Pods("minio").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s %s: pod rejected: %v", o.GetKind(), o.GetName(), err)
			}
		}
		c.namespace(t, "oom-demo", nil)
		secret := decodeFile(t, filepath.Join(root, "deploy", "examples", "credentials-secret.yaml"))
		for _, o := range secret {
			o.SetNamespace("oom-demo")
		}
		c.apply(t, secret)
		got, err := c.client.CoreV1().Secrets("oom-demo").Get(ctx, "dumpcatcher-s3", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Data[storage.FileAccessKeyID]) == 0 || len(got.Data[storage.FileSecretAccessKey]) == 0 {
			t.Errorf("the credentials Secret lacks %s or %s: %v", storage.FileAccessKeyID, storage.FileSecretAccessKey, slices.Sorted(maps.Keys(got.Data)))
		}
	})

	// helm itself installs the chart (its own ordering and apply), and the
	// notes tell the user how to opt in and where dumps go.
	t.Run("helm install and NOTES", func(t *testing.T) {
		if !c.crds {
			t.Skip("needs the cert-manager CRDs")
		}
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kubeconfig, c.api.Env.KubeConfig, 0o600); err != nil {
			t.Fatal(err)
		}
		root := render.RepoRoot(t)
		for _, tc := range []struct {
			name  string
			extra []string
			want  []string
		}{
			{"notes-default", nil, []string{
				"kubectl label namespace NAMESPACE dumpcatcher.io/inject=enabled",
				`dumpcatcher.io/inject: "true"`,
				"No default destination is set (config.destination)",
				"Never injected: namespaces notes-default, kube-system.",
				"Certificate notes-default/notes-default-dumpcatcher-tls",
				"The dumps API is off (api.enabled=false).",
			}},
			{"notes-minio", []string{"-f", filepath.Join(root, "deploy", "examples", "values-minio.yaml")}, []string{
				"Heap dumps go to: s3://heap-dumps/demo?endpoint=http://minio.minio.svc:9000&path-style=true",
				`Storage credentials: the Secret "dumpcatcher-s3" in each app namespace`,
			}},
		} {
			args := append([]string{"install", tc.name, render.ChartDir(t), "--namespace", tc.name, "--create-namespace", "--kubeconfig", kubeconfig, "--timeout", "60s"}, tc.extra...)
			out, err := render.Run(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s: NOTES lack %q:\n%s", tc.name, w, out)
				}
			}
			if _, err := c.client.AppsV1().Deployments(tc.name).Get(context.Background(), tc.name+"-dumpcatcher", metav1.GetOptions{}); err != nil {
				t.Errorf("after helm install: %v", err)
			}
			// Its webhook has no server here; remove it like the others.
			if err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), tc.name+"-dumpcatcher", metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("helm install with the API", func(t *testing.T) { helmInstallAPI(t, c) })
}

func decodeFile(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs := render.Objects(t, string(b))
	if len(objs) == 0 {
		t.Fatalf("%s: no objects", file)
	}
	return objs
}
