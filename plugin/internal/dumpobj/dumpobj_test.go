package dumpobj

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestFrom(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "dumps.dumpcatcher.io/v1alpha1", "kind": "Dump",
		"metadata": map[string]any{"name": "web-1-app-x-oom-abcdefghij", "namespace": "shop"},
		"workload": "deployment-web", "pod": "web-1", "podUID": "u1", "node": "n1", "container": "app",
		"reason": "oom", "file": "java_pid1.hprof.zst", "complete": true, "encoding": "zstd",
		"originalSize": int64(100), "size": int64(40), "sha256": "ab", "url": "s3://b/shop/x",
		"destination": "default", "time": "2026-11-29T10:00:00Z",
	}}
	got, err := From(u)
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	want := Dump{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1-app-x-oom-abcdefghij", Namespace: "shop"},
		Workload:   "deployment-web", Pod: "web-1", PodUID: "u1", Node: "n1", Container: "app", Reason: "oom",
		File: "java_pid1.hprof.zst", Complete: &yes, Encoding: "zstd", OriginalSize: 100, Size: 40, SHA256: "ab",
		URL: "s3://b/shop/x", Destination: "default", Time: metav1.NewTime(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("From (-want +got):\n%s", diff)
	}
	if _, err := From(&unstructured.Unstructured{Object: map[string]any{"size": "big"}}); err == nil {
		t.Error("a size that is a string decodes")
	}
}

func TestFileName(t *testing.T) {
	for _, tc := range []struct {
		file, enc, want string
	}{
		{"java_pid1.hprof", "none", "java_pid1.hprof"},
		{"java_pid1.hprof.gz", "gzip", "java_pid1.hprof.gz"},
		{"java_pid1.hprof", "zstd", "java_pid1.hprof.zst"},
		{"../../etc/passwd", "none", "passwd"},
		{"/abs/x.hprof", "none", "x.hprof"},
		{"a\\..\\b.hprof", "none", "b.hprof"},
		{"..", "none", "d1.hprof"},
		{".bashrc", "none", "d1.hprof"},
		{"", "zstd", "d1.hprof.zst"},
		{"x\x1b[2J.hprof", "gzip", "d1.hprof.gz"},
		{"dir/", "none", "dir"},
	} {
		d := Dump{ObjectMeta: metav1.ObjectMeta{Name: "d1"}, File: tc.file, Encoding: tc.enc}
		if got := d.FileName(); got != tc.want {
			t.Errorf("FileName(file %q) = %q, want %q", tc.file, got, tc.want)
		}
	}
}
