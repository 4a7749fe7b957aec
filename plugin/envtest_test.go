package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
)

// TestRealKubeAPIServer runs the plugin against a REAL kube-apiserver
// (internal/testsupport/apiserver) without the dumps API server, for the errors that come from the
// kube-apiserver itself: the API not installed (no group), forbidden (the
// authorizer answers before routing), and the aggregator's 503 for an
// APIService whose Service is missing. The dumps server's own paths are
// the lead's real-part test (plugintest.Run with a kubeconfig per user).
func TestRealKubeAPIServer(t *testing.T) {
	api := apiserver.Start(t, apiserver.Options{})
	cfg := api.Config
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, api.Kubeconfig(t, "admin", "system:masters"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	expect := func(t *testing.T, want []string, args ...string) {
		t.Helper()
		_, _, err := runWith(ctx, path, args...)
		if err == nil {
			t.Fatalf("%q: no error", args)
		}
		t.Logf("%q: %v", args, err)
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q\nwant it to contain %q", args, err, w)
			}
		}
	}

	t.Run("not installed", func(t *testing.T) {
		expect(t, []string{"the dumps API is not installed", "api.enabled=true"}, "list", "-n", "default")
		expect(t, []string{"the dumps API is not installed"}, "get", "x", "-n", "default")
	})
	t.Run("forbidden", func(t *testing.T) {
		expect(t, []string{`you may not list dumps.dumps.dumpcatcher.io in namespace "shop"`, "dumpcatcher-dumps-reader"}, "--as", "dev", "list", "-n", "shop")
		expect(t, []string{"across all namespaces", "ClusterRoleBinding"}, "--as", "dev", "list", "-A")
		expect(t, []string{`verb "delete"`, "dumpcatcher-dumps-admin"}, "--as", "dev", "delete", "x", "-n", "shop")
	})
	t.Run("APIService without its server", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(cfg)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dumpcatcher-system"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		apiService := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": "v1alpha1.dumps.dumpcatcher.io"},
			"spec": map[string]any{
				"group": "dumps.dumpcatcher.io", "version": "v1alpha1", "groupPriorityMinimum": int64(100), "versionPriority": int64(100),
				"insecureSkipTLSVerify": true,
				"service":               map[string]any{"namespace": "dumpcatcher-system", "name": "dumpcatcher-api", "port": int64(443)},
			},
		}}
		gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
		if _, err := dynamic.NewForConfigOrDie(cfg).Resource(gvr).Create(ctx, apiService, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The aggregator answers 503 once it has seen the APIService.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, _, err := runWith(ctx, path, "list", "-n", "default")
			if err != nil && strings.Contains(err.Error(), "not available") || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		expect(t, []string{"the dumps API server is not available", "kubectl get apiservice v1alpha1.dumps.dumpcatcher.io"}, "list", "-n", "default")
		expect(t, []string{"the dumps API server is not available"}, "download", "x", "-n", "default", "-o", filepath.Join(t.TempDir(), "x"))
	})
}

// runWith is plugintest.Run (which this package's tests cannot import).
func runWith(ctx context.Context, kubeconfig string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	cmd := NewRootCommand(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut}, genericclioptions.NewConfigFlags(false))
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}
