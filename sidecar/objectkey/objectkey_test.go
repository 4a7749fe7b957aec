package objectkey

import (
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 11, 12, 345_000_000, time.FixedZone("CET", 3600))
	f := Fields{Namespace: "shop", Workload: "deployment/web", Pod: "web-6d4cf56db6-x2k9p", Container: "app", Node: "node-1", Reason: "oom", File: "java_pid1.hprof.gz", Time: at}
	tests := []struct {
		tmpl string
		f    Fields
		want string
	}{
		{Default, f, "shop/deployment-web/web-6d4cf56db6-x2k9p/app/20261123T091112.345Z-oom-java_pid1.hprof.gz"},
		{"dumps/{date}/{node}/{pod}-{time}-{file}", f, "dumps/2026-11-23/node-1/web-6d4cf56db6-x2k9p-20261123T091112.345Z-java_pid1.hprof.gz"},
		{Default, Fields{Namespace: "..", Workload: "a/../../b", Pod: "../../etc", Container: "", Reason: "oom", File: "x y/z?.hprof", Time: at},
			"__/a-..-..-b/.._.._etc/unknown/20261123T091112.345Z-oom-x_y_z_.hprof"},
		{Default, Fields{Namespace: "ns", Workload: "pod/p", Pod: "p", Container: "c", Reason: "oom", File: "ünïcödé.hprof", Time: at},
			"ns/pod-p/p/c/20261123T091112.345Z-oom-_n_c_d_.hprof"},
		// Names an app may give its dumps: spaces, control characters,
		// very long ones (the extension survives the cut).
		{Default, Fields{Namespace: "ns", Workload: "pod/p", Pod: "p", Container: "c", Reason: "oom", File: " ünïcode name .hprof.gz", Time: at},
			"ns/pod-p/p/c/20261123T091112.345Z-oom-__n_code_name_.hprof.gz"},
		{Default, Fields{Namespace: "ns", Workload: "pod/p", Pod: "p", Container: "c", Reason: "oom", File: "tab\tnew\nline\x01\x7f .hprof ", Time: at},
			"ns/pod-p/p/c/20261123T091112.345Z-oom-tab_new_line___.hprof_"},
		{Default, Fields{Namespace: "ns", Workload: "pod/p", Pod: "p", Container: "c", Reason: "oom", File: strings.Repeat("ü", 120) + ".hprof.gz", Time: at},
			"ns/pod-p/p/c/20261123T091112.345Z-oom-" + strings.Repeat("_", 96) + ".hprof.gz"}, // 95 ü and half of one,
		{Default, Fields{Namespace: "ns", Workload: "pod/p", Pod: "p", Container: "c", Reason: "oom", File: strings.Repeat("x", 300), Time: at},
			"ns/pod-p/p/c/20261123T091112.345Z-oom-" + strings.Repeat("x", 200)},
	}
	for _, tt := range tests {
		got, err := MustParse(tt.tmpl).Render(tt.f)
		if err != nil || got != tt.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tt.tmpl, got, err, tt.want)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Errorf("Render(%q) = %q has segment %q", tt.tmpl, got, seg)
			}
		}
	}
	long := Fields{Namespace: strings.Repeat("n", 300), Workload: strings.Repeat("w", 300), Pod: strings.Repeat("p", 300), Container: strings.Repeat("c", 300), Reason: "oom", File: strings.Repeat("f", 300), Time: at}
	if k, err := MustParse(Default).Render(long); err == nil {
		t.Errorf("a key of %d bytes rendered without error", len(k))
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ tmpl, want string }{
		{"{namespace}/{pod}", "must use {file} and {time}"},
		{"{time}-{file", "unclosed {"},
		{"{time}-{file}-{uid}", "unknown placeholder {uid}"},
		{"/{time}-{file}", "empty, . or .. path segment"},
		{"a//{time}-{file}", "empty, . or .. path segment"},
		{"../{time}-{file}", "empty, . or .. path segment"},
		{"a b/{time}-{file}", `character ' ' is not allowed`},
		{"{time}-{file}/", "empty, . or .. path segment"},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.tmpl); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %q", tt.tmpl, err, tt.want)
		}
	}
}

func FuzzRender(f *testing.F) {
	f.Add("shop", "deployment/web", "web-1", "app", "oom", "java_pid1.hprof")
	f.Add("..", "../..", "/", "", ".", "a/b")
	f.Fuzz(func(t *testing.T, ns, wl, pod, c, reason, file string) {
		key, err := MustParse(Default).Render(Fields{Namespace: ns, Workload: wl, Pod: pod, Container: c, Reason: reason, File: file, Time: time.Unix(0, 0)})
		if err != nil {
			return
		}
		segs := strings.Split(key, "/")
		if len(segs) != 5 {
			t.Fatalf("key %q has %d segments, want 5", key, len(segs))
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." {
				t.Fatalf("key %q has segment %q", key, s)
			}
		}
	})
}
