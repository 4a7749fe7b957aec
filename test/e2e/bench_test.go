package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

// BenchmarkPodStartup measures what injection costs a pod on the rig: the
// same small JVM pod, created in a namespace without the label, once with
// dumpcatcher.io/inject: "true" (webhook call, then the uploader as a native
// sidecar that starts before the app) and once without (the webhook is
// still called and skips it). Pairs alternate their order. Per pod kind it
// reports the Create call (admission, webhook included) and the time from
// Create to the pod's Ready condition, seen through a watch.
//
//	sudo make bench   # with the rig: cluster-up, this, cluster-down
func BenchmarkPodStartup(b *testing.B) {
	e := setup(b)
	const ns = "e2e-bench"
	e.namespace(ns, false)
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	pods := cs.CoreV1().Pods(ns)
	ctx := context.Background()

	kinds := []struct {
		name        string
		annotations map[string]any
	}{
		{"plain", nil},
		{"injected", map[string]any{"dumpcatcher.io/inject": "true"}},
	}
	var admit, ready [2]time.Duration
	n := 0
	start := func(k, i int) {
		name := fmt.Sprintf("%s-%d", kinds[k].name, i)
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(mustJSON(b, holdPod(ns, name, kinds[k].annotations))), &pod); err != nil {
			b.Fatal(err)
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Stop()
		t0 := time.Now()
		created, err := pods.Create(ctx, &pod, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		a := time.Since(t0)
		if _, injected := created.Annotations[inject.AnnotationStatus]; injected != (k == 1) {
			b.Fatalf("pod %s: injected %v", name, injected)
		}
		if err := waitPodReady(w, 2*time.Minute); err != nil {
			b.Fatalf("pod %s: %v", name, err)
		}
		r := time.Since(t0)
		if i >= 0 {
			admit[k] += a
			ready[k] += r
		}
		grace := int64(1)
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			b.Fatal(err)
		}
	}
	// One pair first: the images' first use on the node is not measured.
	start(0, -1)
	start(1, -1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first := i % 2
		start(first, i)
		start(1-first, i)
		n++
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(admit[0]), "plain-create-ms")
	b.ReportMetric(ms(admit[1]), "injected-create-ms")
	b.ReportMetric(ms(ready[0]), "plain-ready-ms")
	b.ReportMetric(ms(ready[1]), "injected-ready-ms")
	b.ReportMetric(0, "ns/op")
}

// waitPodReady reads the watch until the pod's Ready condition is true.
func waitPodReady(w watch.Interface, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch ended")
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watch: %v", ev.Object)
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && podReady(p) {
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("not ready within %v", timeout)
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
