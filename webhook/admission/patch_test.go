package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/podjson"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	jsonpatchv5 "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// applyPatch applies ops to doc the way the API server does.
func applyPatch(t *testing.T, doc []byte, ops []jsonpatch.JsonPatchOperation) []byte {
	t.Helper()
	b, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatchv5.DecodePatch(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("applying %s: %v", b, err)
	}
	return out
}

// jsonMap is v marshalled and read back as generic JSON.
func jsonMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// at walks a generic JSON value: keys for objects, ints for arrays.
func at(t *testing.T, v any, path ...any) map[string]any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not an object: %v", path, v)
	}
	return m
}

// TestNativeSidecarPatchKeepsUserContainers is the regression test of the
// patch that shifted the user's init containers by index: the sidecar goes
// in with one add at /spec/initContainers/0, and the fields of the user's
// containers the Go types do not know (an API server newer than us) stay on
// the user's containers, never move to the sidecar.
func TestNativeSidecarPatchKeepsUserContainers(t *testing.T) {
	uid := int64(1000)
	typed := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Annotations: map[string]string{inject.AnnotationInject: "true"}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid},
			InitContainers: []corev1.Container{
				{Name: "migrate", Image: "migrate:1", Command: []string{"migrate", "up"}},
				{Name: "warm", Image: "warm:1"},
			},
			Containers: []corev1.Container{{Name: "app", Image: "app:1", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}},
		},
	}
	// The raw object is what the API server sends: the typed pod plus
	// fields of a newer API version.
	future := map[string]any{"mode": "x", "n": 1.0}
	raw := jsonMap(t, typed)
	at(t, raw, "spec")["futureField"] = future
	at(t, raw, "spec", "initContainers", 0)["futureField"] = future
	at(t, raw, "spec", "containers", 0)["futureField"] = future
	at(t, raw, "spec", "containers", 0, "env", 0)["futureField"] = future
	rawJSON, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}

	h := &Handler{Options: testOptions(t), Log: logr.Discard()}
	resp := h.Handle(context.Background(), request(admissionv1.Create, "Pod", "shop", string(rawJSON)))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("not injected: %+v", resp.Result)
	}
	var initOps []jsonpatch.JsonPatchOperation
	for _, op := range resp.Patches {
		if strings.HasPrefix(op.Path, "/spec/initContainers") {
			initOps = append(initOps, op)
		}
	}
	if len(initOps) != 1 || initOps[0].Operation != "add" || initOps[0].Path != "/spec/initContainers/0" {
		t.Errorf("operations on /spec/initContainers = %s, want one add at /spec/initContainers/0", opsString(initOps))
	}

	// Expected: the injected pod, with the unknown fields where the user put
	// them (the user's init containers are now at 1 and 2).
	res, err := inject.Inject(inject.Input{Pod: typed, Namespace: "shop"}, testOptions(t))
	if err != nil || !res.Injected {
		t.Fatalf("inject: %v %v", err, res.Reason)
	}
	want := jsonMap(t, res.Pod)
	at(t, want, "spec")["futureField"] = future
	at(t, want, "spec", "initContainers", 1)["futureField"] = future
	at(t, want, "spec", "containers", 0)["futureField"] = future
	at(t, want, "spec", "containers", 0, "env", envIndex(t, res.Pod.Spec.Containers[0], "A"))["futureField"] = future

	var got map[string]any
	if err := json.Unmarshal(applyPatch(t, rawJSON, resp.Patches), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patched pod (-want +got):\n%s", diff)
	}
}

func envIndex(t *testing.T, c corev1.Container, name string) int {
	t.Helper()
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	if i < 0 {
		t.Fatalf("container %s has no env %s", c.Name, name)
	}
	return i
}

func opsString(ops []jsonpatch.JsonPatchOperation) string {
	var s []string
	for _, op := range ops {
		s = append(s, op.Operation+" "+op.Path)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// TestPodPatch compares the whole patch and the whole patched object for
// the changes the injection makes, on raw objects with fields the Go types
// do not know ("future") and without the members the types serialise
// anyway (resources: {}).
func TestPodPatch(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sixty := int64(60)
	sidecar := corev1.Container{Name: "up", Image: "up:1", RestartPolicy: &always}
	tests := []struct {
		name   string
		raw    string
		mutate func(p *corev1.Pod)
		ops    string
		want   string
	}{{
		name: "native sidecar goes in front of the user's init containers",
		raw:  `{"spec":{"initContainers":[{"name":"a","image":"a","future":1},{"name":"b","image":"b"}],"containers":[{"name":"app","future":2}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.InitContainers = append([]corev1.Container{sidecar}, p.Spec.InitContainers...)
		},
		ops:  `[{"op":"add","path":"/spec/initContainers/0","value":{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"}}]`,
		want: `{"spec":{"initContainers":[{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"},{"name":"a","image":"a","future":1},{"name":"b","image":"b"}],"containers":[{"name":"app","future":2}]}}`,
	}, {
		name: "no init containers: the list is added",
		raw:  `{"spec":{"containers":[{"name":"app"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar}
		},
		ops:  `[{"op":"add","path":"/spec/initContainers","value":[{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"}]}]`,
		want: `{"spec":{"initContainers":[{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"}],"containers":[{"name":"app"}]}}`,
	}, {
		name: "null init containers are replaced",
		raw:  `{"spec":{"initContainers":null,"containers":[{"name":"app"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar}
		},
		ops:  `[{"op":"add","path":"/spec/initContainers","value":[{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"}]}]`,
		want: `{"spec":{"initContainers":[{"name":"up","image":"up:1","resources":{},"restartPolicy":"Always"}],"containers":[{"name":"app"}]}}`,
	}, {
		name: "classic sidecar is appended, the user's container patched in place",
		raw:  `{"spec":{"containers":[{"name":"app","future":1,"env":[{"name":"A","value":"1","future":2}]}]}}`,
		mutate: func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Env = append([]corev1.EnvVar{{Name: "JAVA_TOOL_OPTIONS", Value: "-X"}}, c.Env...)
			c.VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "up"})
		},
		ops: `[{"op":"add","path":"/spec/containers/0/env/0","value":{"name":"JAVA_TOOL_OPTIONS","value":"-X"}},` +
			`{"op":"add","path":"/spec/containers/0/volumeMounts","value":[{"name":"v","mountPath":"/v"}]},` +
			`{"op":"add","path":"/spec/containers/1","value":{"name":"up","resources":{}}}]`,
		want: `{"spec":{"containers":[{"name":"app","future":1,"env":[{"name":"JAVA_TOOL_OPTIONS","value":"-X"},{"name":"A","value":"1","future":2}],"volumeMounts":[{"name":"v","mountPath":"/v"}]},{"name":"up","resources":{}}]}}`,
	}, {
		name: "a changed env value is replaced alone; an element moved aside keeps its place",
		raw:  `{"spec":{"containers":[{"name":"app","env":[{"name":"JAVA_TOOL_OPTIONS","valueFrom":{"configMapKeyRef":{"name":"jvm","key":"o"}},"future":1},{"name":"B","value":"b"}]}]}}`,
		mutate: func(p *corev1.Pod) {
			e := p.Spec.Containers[0].Env
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "ORIG", ValueFrom: e[0].ValueFrom}, {Name: "JAVA_TOOL_OPTIONS", Value: "$(ORIG) -X"}, e[1]}
		},
		ops: `[{"op":"add","path":"/spec/containers/0/env/0","value":{"name":"ORIG","valueFrom":{"configMapKeyRef":{"name":"jvm","key":"o"}}}},` +
			`{"op":"add","path":"/spec/containers/0/env/1/value","value":"$(ORIG) -X"},` +
			`{"op":"remove","path":"/spec/containers/0/env/1/valueFrom"}]`,
		want: `{"spec":{"containers":[{"name":"app","env":[{"name":"ORIG","valueFrom":{"configMapKeyRef":{"name":"jvm","key":"o"}}},{"name":"JAVA_TOOL_OPTIONS","value":"$(ORIG) -X","future":1},{"name":"B","value":"b"}]}]}}`,
	}, {
		name: "a wrapped preStop: the handler is swapped, the rest of lifecycle kept",
		raw:  `{"spec":{"containers":[{"name":"app","lifecycle":{"postStart":{"exec":{"command":["x"]}},"future":1,"preStop":{"httpGet":{"path":"/stop","port":8080}}}}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"dump"}}}
		},
		ops: `[{"op":"add","path":"/spec/containers/0/lifecycle/preStop/exec","value":{"command":["dump"]}},` +
			`{"op":"remove","path":"/spec/containers/0/lifecycle/preStop/httpGet"}]`,
		want: `{"spec":{"containers":[{"name":"app","lifecycle":{"postStart":{"exec":{"command":["x"]}},"future":1,"preStop":{"exec":{"command":["dump"]}}}}]}}`,
	}, {
		name: "annotations are added to, with the key escaped; grace period and volumes",
		raw:  `{"metadata":{"name":"p","annotations":{"a~b":"1"}},"spec":{"terminationGracePeriodSeconds":30,"volumes":[{"name":"data","future":{}}],"containers":[{"name":"app"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Annotations["dumpcatcher.io/status"] = "{}"
			p.Annotations["a~b"] = "2"
			p.Spec.TerminationGracePeriodSeconds = &sixty
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "dc", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		},
		ops: `[{"op":"replace","path":"/metadata/annotations/a~0b","value":"2"},` +
			`{"op":"add","path":"/metadata/annotations/dumpcatcher.io~1status","value":"{}"},` +
			`{"op":"replace","path":"/spec/terminationGracePeriodSeconds","value":60},` +
			`{"op":"add","path":"/spec/volumes/1","value":{"name":"dc","emptyDir":{}}}]`,
		want: `{"metadata":{"name":"p","annotations":{"a~b":"2","dumpcatcher.io/status":"{}"}},"spec":{"terminationGracePeriodSeconds":60,"volumes":[{"name":"data","future":{}},{"name":"dc","emptyDir":{}}],"containers":[{"name":"app"}]}}`,
	}, {
		name: "no annotations: the map is added",
		raw:  `{"metadata":{"name":"p"},"spec":{"containers":[{"name":"app"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{"dumpcatcher.io/status": "{}"}
		},
		ops:  `[{"op":"add","path":"/metadata/annotations","value":{"dumpcatcher.io/status":"{}"}}]`,
		want: `{"metadata":{"name":"p","annotations":{"dumpcatcher.io/status":"{}"}},"spec":{"containers":[{"name":"app"}]}}`,
	}, {
		name: "a change inside a member raw does not have adds the member whole",
		raw:  `{"spec":{"containers":[{"name":"app"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resourceQuantity(t, "1Gi")}
		},
		ops:  `[{"op":"add","path":"/spec/containers/0/resources","value":{"limits":{"memory":"1Gi"}}}]`,
		want: `{"spec":{"containers":[{"name":"app","resources":{"limits":{"memory":"1Gi"}}}]}}`,
	}, {
		name: "unnamed list elements are aligned by value",
		raw:  `{"spec":{"containers":[{"name":"app","command":["a","b"]}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"x", "a", "y", "b", "z"}
		},
		ops: `[{"op":"add","path":"/spec/containers/0/command/0","value":"x"},{"op":"add","path":"/spec/containers/0/command/2","value":"y"},` +
			`{"op":"add","path":"/spec/containers/0/command/4","value":"z"}]`,
		want: `{"spec":{"containers":[{"name":"app","command":["x","a","y","b","z"]}]}}`,
	}, {
		name: "removed list elements",
		raw:  `{"spec":{"containers":[{"name":"app","command":["a","b","c"]},{"name":"gone"}]}}`,
		mutate: func(p *corev1.Pod) {
			p.Spec.Containers = p.Spec.Containers[:1]
			p.Spec.Containers[0].Command = []string{"b"}
		},
		ops: `[{"op":"remove","path":"/spec/containers/0/command/0"},{"op":"remove","path":"/spec/containers/0/command/1"},` +
			`{"op":"remove","path":"/spec/containers/1"}]`,
		want: `{"spec":{"containers":[{"name":"app","command":["b"]}]}}`,
	}, {
		name:   "nothing changed: no operation",
		raw:    `{"spec":{"containers":[{"name":"app","future":1}]}}`,
		mutate: func(p *corev1.Pod) {},
		ops:    `null`,
		want:   `{"spec":{"containers":[{"name":"app","future":1}]}}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before corev1.Pod
			if err := json.Unmarshal([]byte(tt.raw), &before); err != nil {
				t.Fatal(err)
			}
			after := before.DeepCopy()
			tt.mutate(after)
			ops, err := podPatch([]byte(tt.raw), &before, after)
			if err != nil {
				t.Fatal(err)
			}
			gotOps, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(decodeAny(t, tt.ops), decodeAny(t, string(gotOps))); diff != "" {
				t.Errorf("patch (-want +got):\n%s\ngot %s", diff, gotOps)
			}
			got := applyPatch(t, []byte(tt.raw), ops)
			if diff := cmp.Diff(decodeAny(t, tt.want), decodeAny(t, string(got))); diff != "" {
				t.Errorf("patched object (-want +got):\n%s", diff)
			}
		})
	}
}

func decodeAny(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func resourceQuantity(t *testing.T, s string) resource.Quantity {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestPatchOfEveryGoldenInput injects each pod of the injection's golden
// inputs (native and classic sidecar) with a made-up field added to the pod
// spec and to every container, init container, env entry and volume of the
// user's: applied to that raw object, the patch gives exactly the injected
// pod, every made-up field is still on the user's object it was put on, and
// none is on anything of ours.
func TestPatchOfEveryGoldenInput(t *testing.T) {
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
				podjson.Mark(c.Pod, "futureField")
				marks := podjson.Marks(c.Pod, "futureField")
				raw, err := json.Marshal(c.Pod)
				if err != nil {
					t.Fatal(err)
				}
				var before corev1.Pod
				if err := json.Unmarshal(raw, &before); err != nil {
					t.Fatal(err)
				}
				opts := testOptions(t)
				opts.NativeSidecar = native
				res, err := inject.Inject(inject.Input{Pod: &before, Namespace: c.Namespace, NamespaceLabels: c.NamespaceLabels}, opts)
				if err != nil || !res.Injected {
					return // denied or skipped: nothing to patch
				}
				injected++
				ops, err := podPatch(raw, &before, res.Pod)
				if err != nil {
					t.Fatal(err)
				}
				patched := applyPatch(t, raw, ops)
				var got corev1.Pod
				if err := json.Unmarshal(patched, &got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(res.Pod, &got); diff != "" {
					t.Errorf("patched pod differs from the injected one (-want +got):\n%s", diff)
				}
				var gotRaw map[string]any
				if err := json.Unmarshal(patched, &gotRaw); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(marks, podjson.Marks(gotRaw, "futureField")); diff != "" {
					t.Errorf("made-up fields moved (-before +after):\n%s", diff)
				}
			})
		}
	}
	if injected < 40 {
		t.Errorf("only %d injected cases; the golden inputs moved?", injected)
	}
}
