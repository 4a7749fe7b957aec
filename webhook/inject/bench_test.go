package inject

import (
	"testing"
)

// BenchmarkInject injects a typical two-container pod: an app with a literal
// JAVA_TOOL_OPTIONS, an exec preStop and a few mounts, next to a proxy.
// BenchmarkPodDeepCopy is the floor in the same run: Inject copies its input
// once, so the difference is the injection's own cost.
func BenchmarkInject(b *testing.B) {
	in, opts := loadCase(b, "testdata/bench-typical.yaml")
	b.ReportAllocs()
	for b.Loop() {
		res, err := Inject(in, opts)
		if err != nil || !res.Injected {
			b.Fatalf("not injected: %v %s", err, res.Reason)
		}
	}
}

func BenchmarkPodDeepCopy(b *testing.B) {
	in, _ := loadCase(b, "testdata/bench-typical.yaml")
	b.ReportAllocs()
	for b.Loop() {
		_ = in.Pod.DeepCopy()
	}
}
