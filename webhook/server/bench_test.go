package server

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// BenchmarkPodCreation creates pods through a real kube-apiserver with the
// webhook registered, alternating between a namespace with injection and
// one without (the webhook is called for both and skips the second), and
// reports the latency percentiles of each and the p99 the injection adds.
func BenchmarkPodCreation(b *testing.B) {
	r := startRig(b, crzap.New(crzap.WriteTo(os.Stderr), crzap.Level(zapcore.WarnLevel)))
	r.namespace(b, "bench-injected", map[string]string{inject.LabelInject: inject.LabelEnabled})
	r.namespace(b, "bench-plain", nil)
	ctx := context.Background()
	b.Run("create", func(b *testing.B) {
		var injected, plain []time.Duration
		i := 0
		for b.Loop() {
			i++
			for _, ns := range []string{"bench-injected", "bench-plain"} {
				pod := testPod(fmt.Sprintf("p-%d-%d", b.N, i), nil)
				start := time.Now()
				got, err := r.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
				d := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if ns == "bench-injected" {
					if _, ok := got.Annotations[inject.AnnotationStatus]; !ok {
						b.Fatal("not injected")
					}
					injected = append(injected, d)
				} else {
					plain = append(plain, d)
				}
			}
		}
		pi, pp := percentiles(injected), percentiles(plain)
		b.ReportMetric(ms(pi[0]), "injected-p50-ms")
		b.ReportMetric(ms(pi[1]), "injected-p99-ms")
		b.ReportMetric(ms(pp[0]), "plain-p50-ms")
		b.ReportMetric(ms(pp[1]), "plain-p99-ms")
		b.ReportMetric(ms(pi[1]-pp[1]), "added-p99-ms")
	})
}

func percentiles(d []time.Duration) [2]time.Duration {
	if len(d) == 0 {
		return [2]time.Duration{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return [2]time.Duration{d[len(d)/2], d[len(d)*99/100]}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
