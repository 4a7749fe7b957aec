// Package render runs `helm template` over charts/dumpcatcher for tests: the
// chart tests in test/chart, and the envtest suite of webhook/server, which
// registers the webhook through the chart's own MutatingWebhookConfiguration
// rather than a hand-written copy.
//
// Helm (like helm-docs, see Tool) is the binary test/tools/install.sh builds
// into $KUBEBUILDER_ASSETS (else the one on PATH). Without it the calling
// test is skipped, or fails when DUMPCATCHER_REQUIRE_REAL is set (as `make
// test` does).
package render

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Module is the main module's path; RepoRoot looks for its go.mod.
const Module = "github.com/dumpcatcher/dumpcatcher"

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory whose go.mod declares Module.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == Module {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of %s at or above the working directory", Module)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// ChartDir is charts/dumpcatcher in the repository.
func ChartDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "charts", "dumpcatcher")
}

// Helm returns the helm binary, skipping the test when there is none (or
// failing it under DUMPCATCHER_REQUIRE_REAL).
func Helm(t testing.TB) string {
	t.Helper()
	return Tool(t, "helm")
}

// Tool returns the binary name that test/tools/install.sh builds into
// $KUBEBUILDER_ASSETS (else the one on PATH), skipping the test when there
// is none (or failing it under DUMPCATCHER_REQUIRE_REAL); see realpart.
func Tool(t testing.TB, name string) string {
	t.Helper()
	return realpart.ToolOrPath(t, name)
}

// Release is one `helm template` invocation.
type Release struct {
	// Name and Namespace of the release (default dumpcatcher, dumpcatcher).
	Name, Namespace string
	// ValuesFiles are passed with -f, in order, before Values.
	ValuesFiles []string
	// Values are passed last, as a values file.
	Values map[string]any
}

func (r Release) withDefaults() Release {
	if r.Name == "" {
		r.Name = "dumpcatcher"
	}
	if r.Namespace == "" {
		r.Namespace = "dumpcatcher"
	}
	return r
}

// args returns the helm arguments after the subcommand (and release name)
// for the chart in chartDir; Values go through a temporary values file.
func (r Release) args(t testing.TB, chartDir string) []string {
	t.Helper()
	r = r.withDefaults()
	args := []string{chartDir, "--namespace", r.Namespace}
	for _, f := range r.ValuesFiles {
		args = append(args, "-f", f)
	}
	if len(r.Values) > 0 {
		b, err := yaml.Marshal(r.Values)
		if err != nil {
			t.Fatalf("values: %v", err)
		}
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	return args
}

// Run runs helm with the arguments and returns its stdout, or an error that
// holds its stderr. Helm's cache, config and data directories are temporary,
// so no user configuration (repositories, plugins) changes the result.
func Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	helm := Helm(t)
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("helm %s: %v: %s", args[0], err, msg)
	}
	return stdout.String(), nil
}

// TemplateErr renders the chart and returns the manifests, or helm's error
// (a schema rejection, a failed `required`).
func (r Release) TemplateErr(t testing.TB) (string, error) {
	t.Helper()
	r = r.withDefaults()
	return Run(t, append([]string{"template", r.Name}, r.args(t, ChartDir(t))...)...)
}

// Template renders the chart and fails the test on an error.
func (r Release) Template(t testing.TB) string {
	t.Helper()
	out, err := r.TemplateErr(t)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Lint runs `helm lint --strict` with the release's values.
func (r Release) Lint(t testing.TB) (string, error) {
	t.Helper()
	return Run(t, append([]string{"lint", "--strict"}, r.args(t, ChartDir(t))...)...)
}

// Objects decodes a multi-document manifest; empty documents are dropped.
func Objects(t testing.TB, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding the rendered chart: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Find returns the rendered object of that kind and name, failing the test
// when there is none.
func Find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart rendered no %s %q", kind, name)
	return nil
}

// Decode converts a rendered object into a typed one (e.g. *appsv1.Deployment),
// rejecting fields the type does not know, so a misspelt field fails the test.
func Decode(t testing.TB, obj *unstructured.Unstructured, into any) {
	t.Helper()
	b, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

// MutatingWebhook returns the chart's MutatingWebhookConfiguration as
// rendered for a release "dumpcatcher" in namespace with the values.
func MutatingWebhook(t testing.TB, namespace string, values map[string]any) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	objs := Objects(t, Release{Namespace: namespace, Values: values}.Template(t))
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	Decode(t, Find(t, objs, "MutatingWebhookConfiguration", "dumpcatcher"), &mwc)
	return &mwc
}

// ForEnvtest adapts a webhook configuration to envtest's
// WebhookInstallOptions, which points each webhook at its local server as
// "https://host:port/" + service.path: the leading slash of the path is
// removed so the URL has exactly one. Everything else is left as rendered
// (envtest replaces the caBundle).
func ForEnvtest(mwc *admissionregistrationv1.MutatingWebhookConfiguration) *admissionregistrationv1.MutatingWebhookConfiguration {
	mwc = mwc.DeepCopy()
	for i := range mwc.Webhooks {
		if s := mwc.Webhooks[i].ClientConfig.Service; s != nil && s.Path != nil {
			p := strings.TrimPrefix(*s.Path, "/")
			s.Path = &p
		}
	}
	return mwc
}
