package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

const configMap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"

const optedIn = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      annotations:
        dumpcatcher.io/inject: "true"
    spec:
      securityContext:
        runAsUser: 1000
      containers:
      - name: web
        image: web:1
`

// TestStream covers how documents are cut and written back.
func TestStream(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		warnings       []string
	}{
		{name: "empty", in: "", want: ""},
		{name: "empty documents are dropped", in: "---\n\n---\n" + configMap + "---\n  \n---\n", want: configMap},
		{name: "comment-only documents are kept", in: "# one\n---\n" + configMap + "---\n# two\n", want: "# one\n---\n" + configMap + "---\n# two\n"},
		{name: "text after the separator starts the document", in: configMap + "--- # a comment\n" + configMap, want: configMap + "---\n# a comment\n" + configMap},
		{name: "--- inside a line is no separator", in: "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: ---x\n", want: "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: ---x\n"},
		{name: "CRLF is kept", in: "apiVersion: v1\r\nkind: ConfigMap\r\n---\r\napiVersion: v1\r\nkind: Secret\r\n", want: "apiVersion: v1\r\nkind: ConfigMap\r\n---\napiVersion: v1\r\nkind: Secret\r\n"},
		{name: "a final newline is added", in: "apiVersion: v1\nkind: ConfigMap", want: "apiVersion: v1\nkind: ConfigMap\n"},
		{name: "scalars and sequences pass", in: "just text\n---\n- a\n- b\n", want: "just text\n---\n- a\n- b\n"},
		{name: "a Deployment of another group passes", in: strings.Replace(optedIn, "apps/v1", "example.com/v1", 1), want: strings.Replace(optedIn, "apps/v1", "example.com/v1", 1)},
		{name: "an object without apiVersion passes", in: strings.Replace(optedIn, "apiVersion: apps/v1\n", "", 1), want: strings.Replace(optedIn, "apiVersion: apps/v1\n", "", 1)},
		{
			name: "a Deployment without a template passes with a warning",
			in:   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n",
			want: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n", warnings: []string{"Deployment/web: no pod template at spec.template; not injected"},
		},
		{name: "a JSON-looking YAML stream is YAML", in: "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\"}\n---\n" + configMap, want: "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\"}\n---\n" + configMap},
		{name: "a JSON stream stays JSON", in: "{\"kind\": \"A\"}  {\"kind\":\n\"B\"}\n", want: "{\"kind\": \"A\"}\n{\"kind\":\n\"B\"}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			warnings, err := Inject(strings.NewReader(tc.in), &out, Params{}, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.warnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestErrors: an error names the document and nothing is written.
func TestErrors(t *testing.T) {
	badAnnotation := strings.Replace(optedIn, `"true"`, `"yes"`, 1)
	for _, tc := range []struct {
		name, in, want string
		annotation     bool
	}{
		{name: "annotation", in: configMap + "---\n" + badAnnotation, annotation: true,
			want: `document 2 (Deployment/web): annotation dumpcatcher.io/inject: invalid value "yes": allowed values are "true" and "false"`},
		{name: "annotation in a List item", annotation: true,
			in:   "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSuffix(badAnnotation, "\n"), "\n", "\n  ") + "\n",
			want: `document 1 (List item 1: Deployment/web): annotation dumpcatcher.io/inject`},
		{name: "pod template of the wrong type", in: configMap + "---\n" + strings.Replace(optedIn, "runAsUser: 1000", "runAsUser: root", 1),
			want: "document 2 (Deployment/web): spec.template: "},
		{name: "pod of the wrong type", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
			want: "document 1 (Pod/p): "},
		{name: "malformed YAML", in: configMap + "---\n\na: [\n", want: "document 2 (line 6): yaml: line 7: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Inject(strings.NewReader(tc.in), &out, Params{}, testOptions(t))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want one starting with %q", err, tc.want)
			}
			var ae *inject.AnnotationError
			if errors.As(err, &ae) != tc.annotation {
				t.Errorf("errors.As(%v, *inject.AnnotationError) = %v", err, !tc.annotation)
			}
			if out.Len() > 0 {
				t.Errorf("wrote %q", out.String())
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	if _, err := Inject(strings.NewReader(configMap), failingWriter{}, Params{}, testOptions(t)); err == nil || err.Error() != "disk full" {
		t.Errorf("got %v, want disk full", err)
	}
}

func TestNamespace(t *testing.T) {
	for _, tc := range []struct {
		params Params
		in     string
		want   string
	}{
		{Params{}, optedIn, "--namespace=default"},
		{Params{Namespace: "shop"}, optedIn, "--namespace=shop"},
		{Params{Namespace: "shop"}, strings.Replace(optedIn, "name: web\n", "name: web\n  namespace: own\n", 1), "--namespace=own"},
	} {
		var out bytes.Buffer
		if _, err := Inject(strings.NewReader(tc.in), &out, tc.params, testOptions(t)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%+v: output lacks %s:\n%s", tc.params, tc.want, out.String())
		}
	}
	// A namespace label stands in for every object's namespace.
	plain := strings.Replace(optedIn, "      annotations:\n        dumpcatcher.io/inject: \"true\"\n", "", 1)
	for _, labels := range []map[string]string{nil, {inject.LabelInject: inject.LabelEnabled}} {
		var out bytes.Buffer
		if _, err := Inject(strings.NewReader(plain), &out, Params{NamespaceLabels: labels}, testOptions(t)); err != nil {
			t.Fatal(err)
		}
		if injected := out.String() != plain; injected != (labels != nil) {
			t.Errorf("labels %v: injected = %v", labels, injected)
		}
	}
}

// TestUnknownFieldsStayPut: fields k8s.io/api does not know stay with their
// container when the sidecar is prepended (native) or appended (classic).
func TestUnknownFieldsStayPut(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  x-top: 1
spec:
  x-spec: 2
  template:
    metadata:
      annotations:
        dumpcatcher.io/inject: "true"
    spec:
      x-pod: 3
      securityContext:
        runAsUser: 1000
      initContainers:
      - name: init
        image: init:1
        x-init: 4
      containers:
      - name: web
        image: web:1
        x-web: 5
        env:
        - name: A
          value: a
          x-env: 6
        resources:
          limits:
            cpu: 0.5
`
	for _, native := range []bool{true, false} {
		opts := testOptions(t)
		opts.NativeSidecar = native
		var out bytes.Buffer
		if _, err := Inject(strings.NewReader(in), &out, Params{}, opts); err != nil {
			t.Fatal(err)
		}
		var obj struct {
			Metadata map[string]any `json:"metadata"`
			Spec     struct {
				XSpec    any `json:"x-spec"`
				Template struct {
					Spec struct {
						XPod           any              `json:"x-pod"`
						InitContainers []map[string]any `json:"initContainers"`
						Containers     []map[string]any `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(out.Bytes(), &obj); err != nil {
			t.Fatal(err)
		}
		byName := map[string]map[string]any{}
		ps := obj.Spec.Template.Spec
		for _, c := range append(ps.InitContainers, ps.Containers...) {
			byName[c["name"].(string)] = c
		}
		web := byName["web"]
		env, _ := web["env"].([]any)
		var envA map[string]any
		for _, e := range env {
			if e.(map[string]any)["name"] == "A" {
				envA = e.(map[string]any)
			}
		}
		got := []any{obj.Metadata["x-top"], obj.Spec.XSpec, ps.XPod, byName["init"]["x-init"], web["x-web"], envA["x-env"],
			web["resources"].(map[string]any)["limits"].(map[string]any)["cpu"], byName["dumpcatcher"]["x-web"], byName["dumpcatcher"]["x-init"]}
		want := []any{1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5, nil, nil}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("native=%v: (-want +got):\n%s\n%s", native, diff, out.String())
		}
		if _, ok := byName["dumpcatcher"]; !ok {
			t.Errorf("native=%v: no sidecar:\n%s", native, out.String())
		}
	}
}
