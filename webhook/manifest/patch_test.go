package manifest

import (
	"bytes"
	"fmt"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/podjson"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// podHead is a Pod that opts in; each case of TestSameAsTyped appends its spec.
const podHead = `apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations:
    dumpcatcher.io/inject: "true"
spec:
  securityContext:
    runAsUser: 1000
`

// TestSameAsTyped: for a pod whose fields k8s.io/api all knows, the offline
// output is exactly the pod inject.Inject returns: the patch reproduces
// list order ($setElementOrder: the native sidecar first among the init
// containers, the env entries where the injection put them, duplicate env
// names included) and removals (a wrapped preStop loses httpGet).
func TestSameAsTyped(t *testing.T) {
	cases := map[string]string{
		"init containers, native sidecar first": `
  initContainers:
  - name: a
    image: a:1
  - name: b
    image: b:1
  containers:
  - name: app
    image: app:1
`,
		"literal JAVA_TOOL_OPTIONS between other env": `
  containers:
  - name: app
    image: app:1
    env:
    - name: Z
      value: z
    - name: JAVA_TOOL_OPTIONS
      value: -Xmx1g
    - name: A
      value: a
`,
		"no JAVA_TOOL_OPTIONS: added first": `
  containers:
  - name: app
    image: app:1
    env:
    - name: Z
      value: z
    - name: A
      value: $(Z)
`,
		"optional valueFrom: two entries of the same name": `
  containers:
  - name: app
    image: app:1
    env:
    - name: B
      value: b
    - name: JAVA_TOOL_OPTIONS
      valueFrom:
        configMapKeyRef: {name: jvm, key: opts, optional: true}
    - name: A
      value: a
`,
		"envFrom: a definition and a reference per source": `
  containers:
  - name: app
    image: app:1
    envFrom:
    - configMapRef: {name: jvm}
    - secretRef: {name: jvm-secret}
    env:
    - name: A
      value: a
`,
		"duplicate user env names": `
  containers:
  - name: app
    image: app:1
    env:
    - name: A
      value: first
    - name: JAVA_TOOL_OPTIONS
      value: -Xms1g
    - name: A
      value: second
    - name: JAVA_TOOL_OPTIONS
      value: -Xmx1g
`,
		"httpGet preStop wrapped": `
  containers:
  - name: app
    image: app:1
    ports:
    - name: http
      containerPort: 8080
    lifecycle:
      preStop:
        httpGet:
          path: /drain
          port: http
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
`,
		"two containers, the second targeted, names taken": `
  containers:
  - name: dumpcatcher
    image: side:1
    volumeMounts:
    - name: dumpcatcher
      mountPath: /dumpcatcher
  - name: app
    image: app:1
  volumes:
  - name: dumpcatcher
    emptyDir: {}
`,
	}
	for name, spec := range cases {
		for _, native := range []bool{true, false} {
			opts := testOptions(t)
			opts.NativeSidecar = native
			in := podHead + strings.TrimPrefix(spec, "\n")
			var pod corev1.Pod
			if err := yaml.UnmarshalStrict([]byte(in), &pod); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			res, err := inject.Inject(inject.Input{Pod: &pod, Namespace: DefaultNamespace}, opts)
			if err != nil || !res.Injected {
				t.Fatalf("%s: typed injection: injected %v, %v", name, res.Injected, err)
			}
			var out bytes.Buffer
			if _, err := Inject(strings.NewReader(in), &out, Params{}, opts); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var got corev1.Pod
			if err := yaml.UnmarshalStrict(out.Bytes(), &got); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, out.String())
			}
			if diff := cmp.Diff(res.Pod, &got); diff != "" {
				t.Errorf("%s, native=%v: offline output differs from inject.Inject (-typed +offline):\n%s", name, native, diff)
			}
		}
	}
}

// TestUnknownFieldsWholeOutput: fields k8s.io/api does not know, on the pod
// spec, on user containers (init and regular), on env entries (one the
// injection rewrites, one of two entries of the same name), on a volume and
// a volume mount, and a value spelled differently from its canonical form
// (cpu: 0.5), survive offline injection; everything else is exactly what
// inject.Inject returns. The whole output is compared.
func TestUnknownFieldsWholeOutput(t *testing.T) {
	const in = `# kept comment
apiVersion: v1
kind: Pod
metadata:
  name: app
  x-meta: m
  annotations:
    dumpcatcher.io/inject: "true"
spec:
  x-pod: p
  securityContext:
    runAsUser: 1000
  initContainers:
  - name: init
    image: init:1
    x-init: i
  containers:
  - name: app
    image: app:1
    x-container: c
    env:
    - name: A
      value: first
      x-env-a0: a0
    - name: JAVA_TOOL_OPTIONS
      value: -Xmx1g
      x-env-jto: j
    - name: A
      value: second
      x-env-a1: a1
    ports:
    - name: http
      containerPort: 8080
    lifecycle:
      preStop:
        httpGet:
          path: /drain
          port: http
    resources:
      limits:
        cpu: 0.5
    volumeMounts:
    - name: data
      mountPath: /data
      x-mount: vm
  volumes:
  - name: data
    emptyDir: {}
    x-volume: v
`
	for _, native := range []bool{true, false} {
		opts := testOptions(t)
		opts.NativeSidecar = native
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(in), &pod); err != nil {
			t.Fatal(err)
		}
		res, err := inject.Inject(inject.Input{Pod: &pod, Namespace: DefaultNamespace}, opts)
		if err != nil || !res.Injected {
			t.Fatalf("typed injection: injected %v, %v", res.Injected, err)
		}
		want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(res.Pod)
		if err != nil {
			t.Fatal(err)
		}
		// What only the typed form writes (empty structs) is not added.
		dropNullCreationTimestamp(want)
		delete(want, "status")
		want["metadata"].(map[string]any)["x-meta"] = "m"
		spec := want["spec"].(map[string]any)
		spec["x-pod"] = "p"
		initC := entry(t, spec, "initContainers", "init", 0)
		initC["x-init"] = "i"
		delete(initC, "resources")
		app := entry(t, spec, "containers", "app", 0)
		app["x-container"] = "c"
		entry(t, app, "env", "A", 0)["x-env-a0"] = "a0"
		entry(t, app, "env", "A", 1)["x-env-a1"] = "a1"
		entry(t, app, "env", "JAVA_TOOL_OPTIONS", 0)["x-env-jto"] = "j"
		app["resources"].(map[string]any)["limits"].(map[string]any)["cpu"] = 0.5
		for _, m := range app["volumeMounts"].([]any) {
			if m := m.(map[string]any); m["mountPath"] == "/data" {
				m["x-mount"] = "vm"
			}
		}
		entry(t, spec, "volumes", "data", 0)["x-volume"] = "v"
		wantText, err := yaml.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := Inject(strings.NewReader(in), &out, Params{}, opts); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff("# kept comment\n"+string(wantText), out.String()); diff != "" {
			t.Errorf("native=%v: (-want +got):\n%s", native, diff)
		}
	}
}

// entry returns the n-th element named name of obj's list.
func entry(t *testing.T, obj map[string]any, list, name string, n int) map[string]any {
	t.Helper()
	for _, e := range obj[list].([]any) {
		if m := e.(map[string]any); m["name"] == name {
			if n == 0 {
				return m
			}
			n--
		}
	}
	t.Fatalf("%s has no %s", list, name)
	return nil
}

// TestEnvNameWithEquals: a name that holds the tag that makes duplicate env
// names unique while patching is refused rather than cut short (Kubernetes
// refuses it too); any other name with "=" goes through unchanged.
func TestEnvNameWithEquals(t *testing.T) {
	in := podHead + `  containers:
  - name: app
    image: app:1
    env:
    - name: A=#1
      value: x
`
	var out bytes.Buffer
	_, err := Inject(strings.NewReader(in), &out, Params{}, testOptions(t))
	want := `document 1 (Pod/app): container "app": env name "A=#1" contains "=", which no environment variable name may (Kubernetes rejects it): rename the variable`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	if out.Len() != 0 {
		t.Errorf("output %q, want none", out.String())
	}
	out.Reset()
	if _, err := Inject(strings.NewReader(strings.Replace(in, "A=#1", "A=B", 1)), &out, Params{}, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "- name: A=B\n") {
		t.Errorf("env A=B lost:\n%s", out.String())
	}
}

// TestEveryInjectGoldenInput runs each pod of webhook/inject's golden inputs
// (native and classic sidecar) through the offline injection with a
// made-up field on the pod spec and on every container, init container,
// env entry, volume mount and volume of the user's: the output is exactly
// the pod inject.Inject returns plus the made-up fields, each still on the
// object it was put on and none on anything of ours; a pod that is not
// injected is written back byte for byte, and a denial is an error here too.
func TestEveryInjectGoldenInput(t *testing.T) {
	files, err := filepath.Glob("../inject/testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	injected := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.yaml") {
			continue
		}
		for _, native := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/native=%v", filepath.Base(f), native), func(t *testing.T) {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var c struct {
					Namespace       string            `json:"namespace"`
					NamespaceLabels map[string]string `json:"namespaceLabels"`
					Pod             map[string]any    `json:"pod"`
				}
				if err := yaml.Unmarshal(data, &c); err != nil {
					t.Fatal(err)
				}
				c.Pod["apiVersion"], c.Pod["kind"] = "v1", "Pod"
				podjson.Mark(c.Pod, "x-future")
				marks := podjson.Marks(c.Pod, "x-future")
				in, err := yaml.Marshal(c.Pod)
				if err != nil {
					t.Fatal(err)
				}
				var pod corev1.Pod
				if err := yaml.Unmarshal(in, &pod); err != nil {
					t.Fatal(err)
				}
				ns := pod.Namespace
				if ns == "" {
					ns = c.Namespace
				}
				if ns == "" {
					ns = DefaultNamespace
				}
				opts := testOptions(t)
				opts.NativeSidecar = native
				res, typedErr := inject.Inject(inject.Input{Pod: &pod, Namespace: ns, NamespaceLabels: c.NamespaceLabels}, opts)
				var out bytes.Buffer
				_, err = Inject(bytes.NewReader(in), &out, Params{Namespace: c.Namespace, NamespaceLabels: c.NamespaceLabels}, opts)
				switch {
				case typedErr != nil:
					if err == nil || !strings.HasSuffix(err.Error(), typedErr.Error()) {
						t.Errorf("error %v, want one ending in %v", err, typedErr)
					}
					return
				case err != nil:
					t.Fatal(err)
				case !res.Injected:
					if out.String() != string(in) {
						t.Errorf("not injected but changed:\n%s", out.String())
					}
					return
				}
				injected++
				var got corev1.Pod
				if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(res.Pod, &got); diff != "" {
					t.Errorf("output differs from the injected pod (-want +got):\n%s", diff)
				}
				var gotRaw map[string]any
				if err := yaml.Unmarshal(out.Bytes(), &gotRaw); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(marks, podjson.Marks(gotRaw, "x-future")); diff != "" {
					t.Errorf("made-up fields moved (-before +after):\n%s", diff)
				}
			})
		}
	}
	if injected < 40 {
		t.Errorf("only %d injected cases; the golden inputs moved?", injected)
	}
}
