package dumpkey

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
)

func TestParse(t *testing.T) {
	ts := time.Date(2026, 11, 29, 19, 4, 5, 123e6, time.UTC)
	for _, tc := range []struct {
		rel  string
		want Parsed
	}{
		{"deployment-web/web-1/app/20261129T190405.123Z-oom-java_pid1.hprof.gz",
			Parsed{Workload: "deployment-web", Pod: "web-1", Container: "app", Reason: "oom", File: "java_pid1.hprof.gz", Time: ts}},
		{"deployment-web/web-1/app/20261129T190405.123Z-gc-pressure-x-y.hprof",
			Parsed{Workload: "deployment-web", Pod: "web-1", Container: "app", Reason: "gc-pressure", File: "x-y.hprof", Time: ts}},
		{"w/p/c/20261129T190405.123Z-weird-f",
			Parsed{Workload: "w", Pod: "p", Container: "c", Reason: "weird", File: "f", Time: ts}},
		{"w/p/c/notatime-oom-f", Parsed{Workload: "w", Pod: "p", Container: "c", File: "notatime-oom-f"}},
		{"w/p/c/20261129T190405.123Z-oom-", Parsed{Workload: "w", Pod: "p", Container: "c", File: "20261129T190405.123Z-oom-"}},
		{"loose.hprof", Parsed{File: "loose.hprof"}},
		{"a/b/loose.hprof", Parsed{File: "loose.hprof"}},
	} {
		if diff := cmp.Diff(tc.want, Parse(tc.rel)); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tc.rel, diff)
		}
	}
}

// TestParseRendered checks Parse against what objectkey renders.
func TestParseRendered(t *testing.T) {
	f := objectkey.Fields{Namespace: "shop", Workload: "statefulset/db", Pod: "db-0", Container: "main",
		Reason: "prestop", File: "java_pid7.hprof.zst", Time: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)}
	key, err := objectkey.MustParse(objectkey.Default).Render(f)
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(key, "shop/")
	want := Parsed{Workload: "statefulset-db", Pod: "db-0", Container: "main", Reason: "prestop", File: "java_pid7.hprof.zst", Time: f.Time}
	if diff := cmp.Diff(want, Parse(rel)); diff != "" {
		t.Errorf("Parse(%q) (-want +got):\n%s", rel, diff)
	}
}

func TestName(t *testing.T) {
	for _, tc := range []struct{ rel, want string }{
		{"deployment-web/web-1/app/20261129T190405.123Z-oom-java_pid1.hprof.gz", "web-1-app-20261129t190405-123z-oom-"},
		{"loose.hprof", "loose-hprof-"},
		{"___", "dump-"},
		{"w/" + strings.Repeat("P", 300) + "/c/x", strings.Repeat("p", 80) + "-"},
	} {
		got := Name("", tc.rel)
		if !strings.HasPrefix(got, tc.want) || len(got) != len(tc.want)+hashLen {
			t.Errorf("Name(%q) = %q, want %q + %d hash characters", tc.rel, got, tc.want, hashLen)
		}
		if Name("", tc.rel) != got {
			t.Errorf("Name(%q) not stable", tc.rel)
		}
	}
	if Name("", "w/p/c/a") == Name("", "w/p/c/b") || Name("", "w/p/c/a") == Name("other", "w/p/c/a") {
		t.Error("different keys give the same name")
	}
}

func TestHiddenAndMatch(t *testing.T) {
	for _, tc := range []struct {
		ns, key string
		ok      bool
	}{
		{"shop", "shop/w/p/c/f", true},
		{"shop", "other/w/p/c/f", false},
		{"shop", "shopping/w/p/c/f", false},
		{"shop", "shop/.dumpcatcher/lock", false},
		{"shop", "shop/w/p/c/.tmp-dumpcatcher-1", false},
		{"shop", "shop/w/p/c/f.meta.json", false},
		{"shop", "shop/../other/w", false},
		{"shop", "shop//w", false},
		{"../x", "../x/w", false},
		{"", "/w", false},
		{"Shop", "Shop/w", false},
	} {
		rel := strings.TrimPrefix(tc.key, tc.ns+"/")
		_, ok := Match("", tc.ns, Name("", rel), tc.key)
		if ok != tc.ok {
			t.Errorf("Match(%q, Name(%q), %q) = %v, want %v", tc.ns, rel, tc.key, ok, tc.ok)
		}
		_, ok = Dump(tc.ns, Object{Key: tc.key})
		if ok != tc.ok {
			t.Errorf("Dump(%q, %q) ok = %v, want %v", tc.ns, tc.key, ok, tc.ok)
		}
	}
}

func TestDump(t *testing.T) {
	ts := time.Date(2026, 11, 29, 19, 4, 5, 123e6, time.UTC)
	stored := time.Date(2026, 11, 29, 19, 5, 0, 0, time.UTC)
	yes := true
	key := "shop/deployment-web/web-1/app/20261129T190405.123Z-oom-java_pid1.hprof.gz"
	rel := strings.TrimPrefix(key, "shop/")
	labels := map[string]string{
		v1alpha1.LabelWorkload: "deployment-web", v1alpha1.LabelPod: "web-1",
		v1alpha1.LabelContainer: "app", v1alpha1.LabelReason: "oom",
	}
	base := v1alpha1.Dump{
		TypeMeta:   metav1.TypeMeta{Kind: "Dump", APIVersion: "dumps.dumpcatcher.io/v1alpha1"},
		ObjectMeta: metav1.ObjectMeta{Name: Name("", rel), Namespace: "shop", CreationTimestamp: metav1.NewTime(ts), Labels: labels},
		Workload:   "deployment-web", Pod: "web-1", Container: "app", Reason: "oom", File: "java_pid1.hprof.gz",
		Size: 42, URL: "s3://b/" + key, Destination: "default", Time: metav1.NewTime(ts),
	}
	withMeta := base
	withMeta.Workload = "deployment/web"
	withMeta.PodUID, withMeta.Node, withMeta.Complete = "uid-1", "node-a", &yes
	withMeta.Encoding, withMeta.OriginalSize, withMeta.SHA256 = "gzip", 100, "ab"
	withMeta.File = "java pid1.hprof.gz"
	for _, tc := range []struct {
		name string
		o    Object
		want v1alpha1.Dump
	}{
		{"list without metadata", Object{Key: key, Size: 42, LastModified: stored, URL: "s3://b/" + key, Destination: "default"}, base},
		{"metadata", Object{Key: key, Size: 42, LastModified: stored, URL: "s3://b/" + key, Destination: "default", Metadata: map[string]string{
			"workload": "deployment/web", "pod": "web-1", "pod-uid": "uid-1", "node": "node-a", "container": "app",
			"reason": "oom", "file": "java%20pid1.hprof.gz", "complete": "true", "original-size": "100",
			"encoding": "gzip", "sha256": "ab", "dump-id": "x",
		}}, withMeta},
	} {
		got, ok := Dump("shop", tc.o)
		if !ok {
			t.Fatalf("%s: not a dump", tc.name)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	// A key not of the template: the store's time, no labels.
	got, _ := Dump("shop", Object{Key: "shop/x.hprof", Size: 1, LastModified: stored, Metadata: map[string]string{}})
	want := v1alpha1.Dump{
		TypeMeta:   base.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: Name("", "x.hprof"), Namespace: "shop", CreationTimestamp: metav1.NewTime(stored)},
		File:       "x.hprof", Size: 1, Encoding: "none", Time: metav1.NewTime(stored),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loose key (-want +got):\n%s", diff)
	}
}

// FuzzMatch: whatever the namespace, name and key, a match is a key under
// "<namespace>/" and of a valid namespace; names are valid DNS-1123
// subdomains and stable.
func FuzzMatch(f *testing.F) {
	f.Add("shop", "shop/w/p/c/20261129T190405.123Z-oom-f", "")
	f.Add("shop", "other/w/p/c/f", "x")
	f.Add("..", "../shop/f", "")
	f.Add("a", "a/../b/f", "")
	f.Add("a", "a/"+strings.Repeat("é/", 40), "")
	f.Fuzz(func(t *testing.T, ns, key, name string) {
		const salt = "" // the first destination; others only change the hash input
		if i := strings.IndexByte(key, '/'); i >= 0 {
			rel := key[i+1:]
			n := Name(salt, rel)
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Fatalf("Name(%q) = %q: %v", rel, n, errs)
			}
			if n != Name(salt, rel) {
				t.Fatalf("Name(%q) not stable", rel)
			}
			if name == "" {
				name = n
			}
		}
		rel, ok := Match(salt, ns, name, key)
		if !ok {
			return
		}
		if len(validation.IsDNS1123Label(ns)) > 0 {
			t.Fatalf("matched in invalid namespace %q", ns)
		}
		if key != ns+"/"+rel || strings.Contains("/"+rel+"/", "/../") || Hidden(rel) {
			t.Fatalf("Match(%q, %q, %q) = %q outside %q/", ns, name, key, rel, ns)
		}
		if d, ok := Dump(ns, Object{Key: key}); !ok || d.Name != name || d.Namespace != ns {
			t.Fatalf("Dump(%q, %q) = %s/%s, %v; Match gave %q", ns, key, d.Namespace, d.Name, ok, name)
		}
	})
}
