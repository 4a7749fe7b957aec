package admission

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	jsonpatchv5 "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func testOptions(t testing.TB) inject.Options {
	t.Helper()
	cfg, err := config.Parse([]byte("destination: s3://dumps\nsidecar: {image: registry.example/dumpcatcher:test}\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	return inject.Options{Config: cfg, NativeSidecar: true, OwnNamespace: "dumpcatcher-system", Version: "test"}
}

const annotatedPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"app","annotations":{"dumpcatcher.io/inject":"true"}},
"spec":{"securityContext":{"runAsUser":1000},"containers":[{"name":"app","image":"app:1"}],"futureField":{"x":1}}}`

const plainPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"app"},"spec":{"containers":[{"name":"app","image":"app:1"}]}}`

func request(op admissionv1.Operation, kind, ns, raw string) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "uid-1", Operation: op, Namespace: ns,
		Kind:   metav1.GroupVersionKind{Version: "v1", Kind: kind},
		Object: runtime.RawExtension{Raw: []byte(raw)},
	}}
}

func labels(m map[string]map[string]string) NamespaceLabels {
	return func(_ context.Context, name string) (map[string]string, error) {
		if name == "broken" {
			return nil, errors.New("apiserver unavailable")
		}
		return m[name], nil
	}
}

// answer is the part of a response the tests compare whole.
type answer struct {
	Allowed  bool
	Code     int32
	Message  string
	Patched  bool
	Warnings []string
}

func summarize(r admission.Response) answer {
	a := answer{Allowed: r.Allowed, Patched: len(r.Patches) > 0, Warnings: r.Warnings}
	if r.Result != nil {
		a.Code, a.Message = r.Result.Code, r.Result.Message
	}
	return a
}

func TestHandle(t *testing.T) {
	noRunAsUser := "dumpcatcher: container \"app\" has no runAsUser (nor has the pod): the uploader can read the OOM dumps the JVM writes with mode 0600 only if it runs as the same uid; set securityContext.runAsUser on the pod or the container"
	tests := []struct {
		name    string
		req     admission.Request
		want    answer
		outcome string
	}{
		{"annotated pod", request(admissionv1.Create, "Pod", "shop", annotatedPod),
			answer{Allowed: true, Code: http.StatusOK, Message: "dumpcatcher injected", Patched: true}, OutcomeInjected},
		{"enabled namespace", request(admissionv1.Create, "Pod", "enabled", plainPod),
			answer{Allowed: true, Code: http.StatusOK, Message: "dumpcatcher injected", Patched: true, Warnings: []string{noRunAsUser}}, OutcomeInjected},
		{"not opted in", request(admissionv1.Create, "Pod", "shop", plainPod),
			answer{Allowed: true, Code: http.StatusOK, Message: "not opted in"}, OutcomeSkipped},
		{"kube-system", request(admissionv1.Create, "Pod", "kube-system", annotatedPod),
			answer{Allowed: true, Code: http.StatusOK, Message: "namespace kube-system is never injected"}, OutcomeSkipped},
		{"update", request(admissionv1.Update, "Pod", "shop", annotatedPod),
			answer{Allowed: true, Code: http.StatusOK, Message: "dumpcatcher only injects at pod creation"}, OutcomeSkipped},
		{"not a pod", request(admissionv1.Create, "ConfigMap", "shop", `{"kind":"ConfigMap"}`),
			answer{Allowed: true, Code: http.StatusOK, Message: "dumpcatcher only injects pods"}, OutcomeSkipped},
		{"no object", request(admissionv1.Create, "Pod", "shop", ""),
			answer{Code: http.StatusBadRequest, Message: "admission request has no object"}, OutcomeError},
		{"malformed object", request(admissionv1.Create, "Pod", "shop", `{"spec":{"containers":"nope"}}`),
			answer{Code: http.StatusBadRequest, Message: "decoding pod: json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container"}, OutcomeError},
		{"namespace lookup fails", request(admissionv1.Create, "Pod", "broken", annotatedPod),
			answer{Code: http.StatusInternalServerError, Message: "reading namespace broken: apiserver unavailable"}, OutcomeError},
		{"invalid annotation", request(admissionv1.Create, "Pod", "shop", strings.Replace(annotatedPod, `"true"`, `"yes"`, 1)),
			answer{Code: http.StatusForbidden, Message: `dumpcatcher: annotation dumpcatcher.io/inject: invalid value "yes": allowed values are "true" and "false"`}, OutcomeDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			h := &Handler{Options: testOptions(t), Namespaces: labels(map[string]map[string]string{"enabled": {"dumpcatcher.io/inject": "enabled"}}), Metrics: m, Log: logr.Discard()}
			resp := h.Handle(context.Background(), tt.req)
			if diff := cmp.Diff(tt.want, summarize(resp)); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			if got := testutil.ToFloat64(m.admissions.WithLabelValues(tt.outcome)); got != 1 {
				t.Errorf("admissions{outcome=%q} = %v, want 1", tt.outcome, got)
			}
			if n := testutil.CollectAndCount(m.latency); n != 1 {
				t.Errorf("latency series = %d, want 1", n)
			}
		})
	}
}

// TestPatchKeepsUnknownFields applies the returned patch to the raw request
// object: the result is the injected pod, and fields the Go types do not
// know survive.
func TestPatchKeepsUnknownFields(t *testing.T) {
	h := &Handler{Options: testOptions(t), Log: logr.Discard()}
	resp := h.Handle(context.Background(), request(admissionv1.Create, "Pod", "shop", annotatedPod))
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatchv5.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply([]byte(annotatedPod))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(patched, &raw); err != nil {
		t.Fatal(err)
	}
	if got := raw["spec"].(map[string]any)["futureField"]; !cmp.Equal(got, map[string]any{"x": 1.0}) {
		t.Errorf("spec.futureField = %v after the patch, want it kept", got)
	}
	var got, orig corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(annotatedPod), &orig); err != nil {
		t.Fatal(err)
	}
	want, err := inject.Inject(inject.Input{Pod: &orig, Namespace: "shop"}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Pod, &got); diff != "" {
		t.Errorf("patched pod differs from the injected pod (-want +got):\n%s", diff)
	}
}
