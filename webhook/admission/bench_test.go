package admission

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"
)

// BenchmarkAdmissionHTTPS is one admission round trip over HTTPS (keep-alive,
// as the API server's client does) for the typical pod of the injection
// benchmark: encode the review, TLS, decode, inject, JSON patch, answer.
func BenchmarkAdmissionHTTPS(b *testing.B) {
	data, err := os.ReadFile("../inject/testdata/bench-typical.yaml")
	if err != nil {
		b.Fatal(err)
	}
	var c struct {
		Pod json.RawMessage `json:"pod"`
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(j, &c); err != nil {
		b.Fatal(err)
	}
	review, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "bench", Operation: admissionv1.Create, Namespace: "shop",
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Object: runtime.RawExtension{Raw: c.Pod},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{Options: testOptions(b), Namespaces: labels(map[string]map[string]string{"shop": {"dumpcatcher.io/inject": "enabled"}}), Log: logr.Discard()}
	srv := httptest.NewUnstartedServer(&webhook.Admission{Handler: h})
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	lat := make([]time.Duration, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		resp, err := client.Post(srv.URL+Path, "application/json", bytes.NewReader(review))
		if err != nil {
			b.Fatal(err)
		}
		var out admissionv1.AdmissionReview
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
			b.Fatalf("bad answer: %v %+v", err, out.Response)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
