package execdump

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pod(status string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Annotations: map[string]string{}}}
	if status != "" {
		p.Annotations["dumpcatcher.io/status"] = status
	}
	return p
}

func TestResolve(t *testing.T) {
	one := `{"version":"1","containers":[{"name":"app","mountPath":"/dumpcatcher-1"}]}`
	two := `{"containers":[{"name":"app","mountPath":"/dumpcatcher"},{"name":"batch","mountPath":"/dc"}]}`
	for _, tc := range []struct {
		name, status, container string
		want                    Target
		wantErr                 string
	}{
		{name: "the only container", status: one, want: Target{Container: "app", MountPath: "/dumpcatcher-1"}},
		{name: "named", status: two, container: "batch", want: Target{Container: "batch", MountPath: "/dc"}},
		{name: "several, none named", status: two, wantErr: "several injected containers (app, batch): choose one with -c"},
		{name: "not injected container", status: two, container: "istio-proxy", wantErr: `-c istio-proxy: container "istio-proxy"`},
		{name: "no annotation", wantErr: "has no dumpcatcher.io/status annotation"},
		{name: "bad JSON", status: "{", wantErr: "not the webhook's JSON"},
		{name: "no containers", status: `{"containers":[]}`, wantErr: "no container is injected"},
		{name: "empty mount path: default", status: `{"containers":[{"name":"app"}]}`, want: Target{Container: "app", MountPath: "/dumpcatcher"}},
		{name: "relative mount path", status: `{"containers":[{"name":"app","mountPath":"x/y"}]}`, wantErr: "not a clean absolute path"},
		{name: "dotdot mount path", status: `{"containers":[{"name":"app","mountPath":"/a/../etc"}]}`, wantErr: "not a clean absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(pod(tc.status), tc.container)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	got := Target{Container: "app", MountPath: "/dumpcatcher-1"}.Command()
	want := []string{"/dumpcatcher-1/bin/dumpcatcher", "dump", "--reason=manual", "--container=app"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Command (-want +got):\n%s", diff)
	}
}

func TestParse(t *testing.T) {
	out := "pid 7: under memory pressure (x)\n" +
		"pid 7: heap dump written to /dumpcatcher/dumps/java_pid7.hprof in 1.2s; the dumpcatcher sidecar uploads it to s3://dumps/shop/deployment-web/web-1/app/20261129t100000z-manual-java_pid7.hprof\r\n" +
		"pid 9: heap dump written to /dumpcatcher/dumps/java_pid9.hprof in 3s; the dumpcatcher sidecar uploads it\n" +
		"pid 10: no dump: boom\n" +
		"pid 11: heap dump written to /x in 1s; the dumpcatcher sidecar uploads it to a b\n" // not one URL: ignored
	got, err := Parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Written{
		{PID: 7, Path: "/dumpcatcher/dumps/java_pid7.hprof", URL: "s3://dumps/shop/deployment-web/web-1/app/20261129t100000z-manual-java_pid7.hprof"},
		{PID: 9, Path: "/dumpcatcher/dumps/java_pid9.hprof"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	// A hostile endless line is bounded.
	if _, err := Parse(strings.NewReader(strings.Repeat("x", maxLine+1))); err == nil {
		t.Error("Parse of an over-long line: no error")
	}
}

func TestMatches(t *testing.T) {
	d := dumpobj.Dump{Pod: "web-1", Container: "app", File: "java_pid9.hprof", URL: "s3://b/k"}
	for _, tc := range []struct {
		name string
		w    Written
		want bool
	}{
		{"by URL", Written{URL: "s3://b/k", Path: "/other"}, true},
		{"other URL", Written{URL: "s3://b/k2", Path: "/dumpcatcher/dumps/java_pid9.hprof"}, false},
		{"by file without URL", Written{Path: "/dumpcatcher/dumps/java_pid9.hprof"}, true},
		{"other file", Written{Path: "/dumpcatcher/dumps/java_pid1.hprof"}, false},
	} {
		if got := Matches(d, tc.w, "web-1", "app"); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
	if Matches(d, Written{Path: "/x/java_pid9.hprof"}, "web-2", "app") {
		t.Error("a dump of another pod matches")
	}
}

func TestWait(t *testing.T) {
	w := Written{URL: "s3://b/k"}
	want := dumpobj.Dump{URL: "s3://b/k"}
	transient := errors.New("503")
	calls := 0
	list := func(context.Context) ([]dumpobj.Dump, error) {
		calls++
		switch calls {
		case 1:
			return nil, nil
		case 2:
			return nil, transient
		}
		return []dumpobj.Dump{{URL: "s3://b/other"}, want}, nil
	}
	retry := func(err error) bool { return err == transient }
	got, err := Wait(context.Background(), list, retry, w, nil, "p", "c", time.Millisecond, time.Minute)
	if err != nil || got.URL != want.URL || calls != 3 {
		t.Fatalf("Wait = %+v, %v after %d lists; want the dump after 3", got, err, calls)
	}

	forbidden := errors.New("forbidden")
	_, err = Wait(context.Background(), func(context.Context) ([]dumpobj.Dump, error) { return nil, forbidden }, retry, w, nil, "p", "c", time.Millisecond, time.Minute)
	if !errors.Is(err, forbidden) {
		t.Fatalf("Wait with a permanent error = %v, want it at once", err)
	}

	_, err = Wait(context.Background(), func(context.Context) ([]dumpobj.Dump, error) { return nil, nil }, retry, w, nil, "p", "c", time.Millisecond, 20*time.Millisecond)
	if !errors.Is(err, ErrNotListed) || !strings.Contains(err.Error(), "--pod p") {
		t.Fatalf("Wait timing out = %v, want ErrNotListed naming the list command", err)
	}
}

func TestPrintable(t *testing.T) {
	var b strings.Builder
	n, err := Printable(&b).Write([]byte("pid 1: ok\n\x1b]0;pwned\x07\tdone\r\x7f"))
	if err != nil || n != 27 || b.String() != "pid 1: ok\n?]0;pwned?\tdone??" {
		t.Fatalf("Printable wrote %q (%d, %v)", b.String(), n, err)
	}
}

func TestWaitSkipsEarlierDumpsWithoutURL(t *testing.T) {
	w := Written{Path: "/dumpcatcher/dumps/java_pid1.hprof"}
	old := dumpobj.Dump{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Pod: "p", Container: "c", File: "java_pid1.hprof"}
	fresh := dumpobj.Dump{ObjectMeta: metav1.ObjectMeta{Name: "new"}, Pod: "p", Container: "c", File: "java_pid1.hprof"}
	calls := 0
	list := func(context.Context) ([]dumpobj.Dump, error) {
		calls++
		if calls == 1 {
			return []dumpobj.Dump{old}, nil
		}
		return []dumpobj.Dump{old, fresh}, nil
	}
	got, err := Wait(context.Background(), list, nil, w, map[string]bool{"old": true}, "p", "c", time.Millisecond, time.Minute)
	if err != nil || got.Name != "new" {
		t.Fatalf("Wait = %q, %v; want the dump that was not there before", got.Name, err)
	}
}
