package chart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite charts/dumpcatcher/README.md and deploy/dumpcatcher.yaml from the chart")

func readFile(name string) ([]byte, error) { return os.ReadFile(name) }

func TestLint(t *testing.T) {
	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			out, err := vs.release.Lint(t)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			// --strict turns warnings into failures; only the icon hint may remain.
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[INFO] Chart.yaml: icon is recommended") {
					t.Errorf("helm lint: %s", line)
				}
			}
		})
	}
}

func TestValueSets(t *testing.T) {
	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			r := renderSet(t, vs)
			if got := r.has("Certificate"); got != vs.certManager {
				t.Errorf("cert-manager objects rendered: %v, want %v", got, vs.certManager)
			}
			if got := r.has("ServiceMonitor"); got != vs.serviceMonitor {
				t.Errorf("ServiceMonitor rendered: %v, want %v", got, vs.serviceMonitor)
			}
			for _, o := range r.objs {
				if o.GetKind() == "Secret" {
					t.Errorf("the chart renders a Secret (%s): keys never go into a chart", o.GetName())
				}
			}
			// The configuration always parses, and the Deployment's checksum
			// is the checksum of exactly that file.
			r.config(t)
			var cm corev1.ConfigMap
			render.Decode(t, r.find(t, "ConfigMap"), &cm)
			sum := sha256.Sum256([]byte(strings.TrimSuffix(cm.Data["config.yaml"], "\n")))
			if got := r.deployment(t).Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
				t.Errorf("checksum/config = %s, want the sha256 of config.yaml %x", got, sum)
			}
			vs.check(t, r)
		})
	}
}

// TestConfigChangeRollsTheWebhook: the checksum follows config.yaml and only it.
func TestConfigChangeRollsTheWebhook(t *testing.T) {
	checksum := func(values map[string]any) string {
		r := renderSet(t, valueSet{release: render.Release{Values: values}})
		return r.deployment(t).Spec.Template.Annotations["checksum/config"]
	}
	base := checksum(nil)
	if got := checksum(map[string]any{"config": map[string]any{"preStop": "never"}}); got == base {
		t.Error("changing config.preStop does not change checksum/config")
	}
	if got := checksum(map[string]any{"webhook": map[string]any{"excludedNamespaces": []string{"x"}}}); got == base {
		t.Error("changing webhook.excludedNamespaces does not change checksum/config")
	}
	if got := checksum(map[string]any{"replicaCount": 3, "logLevel": "debug"}); got != base {
		t.Error("values outside the configuration change checksum/config")
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown top-level key", map[string]any{"replicas": 2}, "additional properties 'replicas' not allowed"},
		{"unknown config key", map[string]any{"config": map[string]any{"prestop": "always"}}, "at '/config': additional properties 'prestop' not allowed"},
		{"wrong type", map[string]any{"replicaCount": "two"}, "at '/replicaCount': got string, want integer"},
		{"unknown preStop policy", map[string]any{"config": map[string]any{"preStop": "sometimes"}}, "at '/config/preStop': value must be one of 'always', 'on-pressure', 'never'"},
		{"destination scheme", map[string]any{"config": map[string]any{"destination": "gs://heap-dumps"}}, "at '/config/destination': 'gs://heap-dumps' does not match pattern"},
		{"destination bucket", map[string]any{"config": map[string]any{"destination": "s3://Heap_Dumps/x"}}, "at '/config/destination': 's3://Heap_Dumps/x' does not match pattern"},
		{"destination endpoint credentials", map[string]any{"config": map[string]any{"destination": "s3://heap-dumps/x?endpoint=https://key:secret@minio:9000"}}, "at '/config/destination'"},
		{"destination relative file", map[string]any{"config": map[string]any{"destination": "file://dumps"}}, "at '/config/destination': 'file://dumps' does not match pattern"},
		{"failurePolicy", map[string]any{"webhook": map[string]any{"failurePolicy": "Retry"}}, "at '/webhook/failurePolicy': value must be one of 'Ignore', 'Fail'"},
		{"timeout too long", map[string]any{"webhook": map[string]any{"timeoutSeconds": 31}}, "at '/webhook/timeoutSeconds': maximum: got 31, want 30"},
		{"excluded namespace name", map[string]any{"webhook": map[string]any{"excludedNamespaces": []string{"Kube_Public"}}}, "at '/webhook/excludedNamespaces/0': 'Kube_Public' does not match pattern"},
		{"nativeSidecar", map[string]any{"config": map[string]any{"nativeSidecar": "yes"}}, "at '/config/nativeSidecar': value must be one of 'auto', 'always', 'never'"},
		{"grace period", map[string]any{"config": map[string]any{"minTerminationGracePeriodSeconds": 7200}}, "at '/config/minTerminationGracePeriodSeconds': maximum: got 7,200, want 3,600"},
		{"sizeLimit", map[string]any{"config": map[string]any{"sizeLimit": "8 GB"}}, "at '/config/sizeLimit': '8 GB' does not match pattern"},
		{"pull policy", map[string]any{"config": map[string]any{"sidecar": map[string]any{"imagePullPolicy": "always"}}}, "at '/config/sidecar/imagePullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"},
		{"image with tag in repository", map[string]any{"config": map[string]any{"sidecar": map[string]any{"image": map[string]any{"repository": "ghcr.io/x/y:v1"}}}}, "at '/config/sidecar/image/repository': 'ghcr.io/x/y:v1' does not match pattern"},
		{"upload compression", map[string]any{"config": map[string]any{"upload": map[string]any{"compression": "brotli"}}}, "at '/config/upload/compression': value must be one of"},
		{"upload key template", map[string]any{"config": map[string]any{"upload": map[string]any{"keyTemplate": "{ns}/{time}-{file}"}}}, "at '/config/upload/keyTemplate': '{ns}/{time}-{file}' does not match pattern"},
		{"upload duration", map[string]any{"config": map[string]any{"upload": map[string]any{"drainTimeout": "25"}}}, "at '/config/upload/drainTimeout': '25' does not match pattern"},
		{"upload metrics port", map[string]any{"config": map[string]any{"upload": map[string]any{"metricsPort": 70000}}}, "at '/config/upload/metricsPort': maximum: got 70,000, want 65,535"},
		{"unknown upload key", map[string]any{"config": map[string]any{"upload": map[string]any{"metricsAddress": ":9090"}}}, "at '/config/upload': additional properties 'metricsAddress' not allowed"},
		{"resources type", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": true}}}, "at '/resources/limits/memory'"},
		{"certManager.enabled type", map[string]any{"certManager": map[string]any{"enabled": "false"}}, "at '/certManager/enabled': got string, want boolean"},
		// Checks of the templates, for what the schema cannot express.
		{"no TLS Secret without cert-manager", map[string]any{"certManager": map[string]any{"enabled": false}, "tls": map[string]any{"caBundle": "Zm9v"}}, "tls.secretName: with certManager.enabled=false, name an existing Secret with tls.crt and tls.key"},
		{"no caBundle without cert-manager", map[string]any{"certManager": map[string]any{"enabled": false}, "tls": map[string]any{"secretName": "x"}}, "tls.caBundle: with certManager.enabled=false, give the PEM of the CA"},
		{"no ServiceAccount name", map[string]any{"serviceAccount": map[string]any{"create": false}}, "serviceAccount.name: name an existing ServiceAccount"},
		// The dumps API.
		{"api.enabled type", map[string]any{"api": map[string]any{"enabled": "true"}}, "at '/api/enabled': got string, want boolean"},
		{"unknown api key", map[string]any{"api": map[string]any{"replicas": 2}}, "at '/api': additional properties 'replicas' not allowed"},
		{"api aggregated into view", map[string]any{"api": map[string]any{"rbac": map[string]any{"aggregateToView": true}}}, "at '/api/rbac': additional properties 'aggregateToView' not allowed"},
		{"api replicas", map[string]any{"api": map[string]any{"replicaCount": 0}}, "at '/api/replicaCount': minimum: got 0, want 1"},
		{"api destination without url", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "x"}}}}, "at '/api/destinations/0': missing property 'url'"},
		{"api destination scheme", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "x", "url": "gs://heap-dumps"}}}}, "at '/api/destinations/0/url': 'gs://heap-dumps' does not match pattern"},
		{"api destination empty url", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "x", "url": ""}}}}, "at '/api/destinations/0/url': '' does not match pattern"},
		{"api destination endpoint credentials", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "x", "url": "s3://heap-dumps?endpoint=https://key:secret@minio:9000"}}}}, "at '/api/destinations/0/url'"},
		{"api destination name", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "Team_B", "url": "s3://heap-dumps"}}}}, "at '/api/destinations/0/name': 'Team_B' does not match pattern"},
		{"api destination unknown key", map[string]any{"api": map[string]any{"destinations": []any{map[string]any{"name": "x", "url": "s3://heap-dumps", "secret": "y"}}}}, "at '/api/destinations/0': additional properties 'secret' not allowed"},
		{"api credentials Secret name", map[string]any{"api": map[string]any{"credentialsSecret": "Read Only"}}, "at '/api/credentialsSecret': 'Read Only' does not match pattern"},
		{"api presign expiry", map[string]any{"api": map[string]any{"presign": map[string]any{"expiry": "10 minutes"}}}, "at '/api/presign/expiry': '10 minutes' does not match pattern"},
		{"api presign type", map[string]any{"api": map[string]any{"presign": map[string]any{"enabled": "no"}}}, "at '/api/presign/enabled': got string, want boolean"},
		{"api service port", map[string]any{"api": map[string]any{"service": map[string]any{"port": 0}}}, "at '/api/service/port': minimum: got 0, want 1"},
		{"api PDB", map[string]any{"api": map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": "half"}}}, "at '/api/podDisruptionBudget/minAvailable'"},
		{"api extra volume mount path", map[string]any{"api": map[string]any{"extraVolumeMounts": []any{map[string]any{"name": "x", "mountPath": "dumps"}}}}, "at '/api/extraVolumeMounts/0/mountPath': 'dumps' does not match pattern"},
		{"api TLS Secret name", map[string]any{"api": map[string]any{"tls": map[string]any{"secretName": "API TLS"}}}, "at '/api/tls/secretName': 'API TLS' does not match pattern"},
		// Checks of the API templates.
		{"api without destination", map[string]any{"api": map[string]any{"enabled": true}}, "api.enabled: the API has no destination to list; set config.destination or add api.destinations"},
		{"api destination named default", map[string]any{"config": map[string]any{"destination": "s3://heap-dumps"}, "api": map[string]any{"enabled": true, "destinations": []any{map[string]any{"name": "default", "url": "s3://other-dumps"}}}}, `api.destinations[0].name: "default" is taken`},
		{"api destination name twice", map[string]any{"api": map[string]any{"enabled": true, "destinations": []any{map[string]any{"name": "a", "url": "s3://aaa"}, map[string]any{"name": "a", "url": "s3://bbb"}}}}, `api.destinations[1].name: "a" is taken`},
		{"no API TLS Secret without cert-manager", map[string]any{"certManager": map[string]any{"enabled": false}, "tls": map[string]any{"secretName": "x", "caBundle": "Zm9v"}, "config": map[string]any{"destination": "s3://heap-dumps"}, "api": map[string]any{"enabled": true}}, "api.tls.secretName: with certManager.enabled=false and api.enabled=true, name an existing Secret"},
		{"no API ServiceAccount name", map[string]any{"config": map[string]any{"destination": "s3://heap-dumps"}, "api": map[string]any{"enabled": true, "serviceAccount": map[string]any{"create": false}}}, "api.serviceAccount.name: name an existing ServiceAccount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := render.Release{Values: tt.values}.TemplateErr(t)
			if err == nil {
				t.Fatalf("accepted:\n%.300s", out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error does not say %q:\n%v", tt.want, err)
			}
		})
	}
}

// TestSchemaCoversValues: every key of values.yaml is declared in
// values.schema.json and the other way round, so an unknown-key check can
// never reject a documented value, and no schema entry is stale.
func TestSchemaCoversValues(t *testing.T) {
	dir := render.ChartDir(t)
	var values map[string]any
	readYAML(t, filepath.Join(dir, "values.yaml"), &values)
	b, err := os.ReadFile(filepath.Join(dir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	var walk func(path string, v map[string]any, s map[string]any)
	walk = func(path string, v map[string]any, s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		if s["additionalProperties"] != false {
			return // a free-form map (labels, resources, ...)
		}
		for k, child := range v {
			ps, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("values.yaml %s%s is not in values.schema.json", path, k)
				continue
			}
			if m, ok := child.(map[string]any); ok {
				walk(path+k+".", m, ps)
			}
		}
		if _, partial := s["$comment"]; partial {
			return // a Kubernetes type: values.yaml shows only some fields
		}
		for k := range props {
			if _, ok := v[k]; !ok && !(path == "" && k == "global") {
				t.Errorf("values.schema.json %s%s is not in values.yaml", path, k)
			}
		}
	}
	walk("", values, schema)
}

// helmDocs renders the chart's documentation with the pinned helm-docs
// from the template files (README.md.gotmpl when none are given), writing
// nothing: --dry-run prints it. Values are listed in the order of
// values.yaml. helm-docs logs a failure (a template error, an unreadable
// values.yaml) as a warning and still exits 0, so any log line fails the
// test.
func helmDocs(t *testing.T, templates ...string) []byte {
	t.Helper()
	bin := render.Tool(t, "helm-docs")
	args := []string{"--chart-search-root", render.ChartDir(t), "--dry-run", "--sort-values-order", "file", "--log-level", "warning"}
	for _, f := range templates {
		args = append(args, "--template-files", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// helm-docs also reads each flag from HELM_DOCS_<FLAG>: none may leak in.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HELM_DOCS_") })
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("helm-docs %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// TestValuesDocumented: every value of values.yaml has a "# --" comment, or
// sits under a documented map or list. helm-docs lists such a value with an
// empty description; a second template prints its rows as JSON.
func TestValuesDocumented(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "rows.gotmpl")
	if err := os.WriteFile(tmpl, []byte("{{ .Values | toJson }}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var rows []struct{ Key, Description, AutoDescription string }
	if err := json.Unmarshal(helmDocs(t, tmpl), &rows); err != nil {
		t.Fatalf("helm-docs rows: %v", err)
	}
	var missing []string
	for _, r := range rows {
		if strings.TrimSpace(r.Description+r.AutoDescription) == "" {
			missing = append(missing, r.Key)
		}
	}
	if len(missing) > 0 {
		t.Errorf("values without a \"# --\" comment in values.yaml: %s", strings.Join(missing, ", "))
	}
	if len(rows) < 40 {
		t.Errorf("only %d documented values: are the comments still in helm-docs' format?", len(rows))
	}
}

// TestReadme: charts/dumpcatcher/README.md is what helm-docs makes of
// README.md.gotmpl, Chart.yaml and values.yaml.
func TestReadme(t *testing.T) {
	got := helmDocs(t)
	compareOrUpdate(t, filepath.Join(render.ChartDir(t), "README.md"), got, "make generate")
	for _, key := range []string{"config.destination", "webhook.failurePolicy", "certManager.enabled", "tls.caBundle"} {
		if !bytes.Contains(got, []byte("\n| "+key+" |")) {
			t.Errorf("README has no row for %s", key)
		}
	}
}

// deployHeader starts deploy/dumpcatcher.yaml.
const deployHeader = `# dumpcatcher: charts/dumpcatcher rendered with its default values, for kubectl.
# Generated; do not edit. Regenerate with
#   go test ./test/chart -run TestDeployManifest -update
# which runs: helm template dumpcatcher charts/dumpcatcher --namespace dumpcatcher
#
# Needs cert-manager (https://cert-manager.io) for the webhook's certificate. No default destination is set, so
# only pods annotated with dumpcatcher.io/destination are injected: to set one, install the chart with
# config.destination, or edit config.yaml in the ConfigMap below (the Deployment does not roll by itself then:
# kubectl -n dumpcatcher rollout restart deployment/dumpcatcher).
#
#   kubectl create namespace dumpcatcher
#   kubectl apply --server-side -f deploy/dumpcatcher.yaml
`

func TestDeployManifest(t *testing.T) {
	out := render.Release{Name: "dumpcatcher", Namespace: "dumpcatcher"}.Template(t)
	compareOrUpdate(t, filepath.Join(render.RepoRoot(t), "deploy", "dumpcatcher.yaml"), []byte(deployHeader+out), "go test ./test/chart -run TestDeployManifest -update")
}

func compareOrUpdate(t *testing.T, file string, want []byte, regenerate string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (generate it: %s)", err, regenerate)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s is stale; regenerate it with `%s` and review the diff:\n%s", file, regenerate, cmp.Diff(string(have), string(want)))
	}
}
