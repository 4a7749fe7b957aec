package plugin

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

var now = time.Date(2026, 11, 29, 10, 5, 0, 0, time.UTC)

func testDeps(exec Executor) deps {
	return deps{
		executor:   func(*client) Executor { return exec },
		now:        func() time.Time { return now },
		isTerminal: func(io.Writer) bool { return false },
	}
}

// run runs the plugin with args against the fake.
func run(t *testing.T, f *fakeAPI, d deps, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRoot(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut}, genericclioptions.NewConfigFlags(false), d)
	cmd.SetArgs(append([]string{"--kubeconfig", f.kubeconfig()}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func seed(f *fakeAPI) {
	f.add("shop", "web-1-app-oom-aaaaaaaaaa", []byte("heap one"), map[string]any{"workload": "deployment-web", "pod": "web-1", "container": "app", "reason": "oom", "node": "n1", "file": "java_pid1.hprof"})
	f.add("shop", "web-2-app-manual-bbbbbbbbbb", []byte("heap two"), map[string]any{"workload": "deployment-web", "pod": "web-2", "container": "app", "reason": "manual", "node": "n2"})
	f.add("odd", "odd-aaaaaaaaaa", []byte("x"), map[string]any{"workload": "\x1b[2Jx", "pod": "p", "container": "c", "reason": "oom"})
	f.add("bank", "ledger-0-app-prestop-cccccccccc", []byte("heap three"), map[string]any{"workload": "statefulset-ledger", "pod": "ledger-0", "container": "app", "reason": "prestop", "node": "n3"})
}

func TestList(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		want     string
		wantSel  string
		wantErr  string
		wantErrO string
	}{
		{name: "context namespace", args: []string{"list"},
			want: "NAME                          WORKLOAD         POD     CONTAINER   REASON   SIZE   COMPLETE   AGE\n" +
				"web-1-app-oom-aaaaaaaaaa      deployment-web   web-1   app         oom      8B     true       5m\n" +
				"web-2-app-manual-bbbbbbbbbb   deployment-web   web-2   app         manual   8B     true       5m\n"},
		{name: "reason", args: []string{"list", "--reason", "oom"}, wantSel: "dumpcatcher.io/reason=oom",
			want: "NAME                       WORKLOAD         POD     CONTAINER   REASON   SIZE   COMPLETE   AGE\n" +
				"web-1-app-oom-aaaaaaaaaa   deployment-web   web-1   app         oom      8B     true       5m\n"},
		{name: "all namespaces", args: []string{"list", "-A", "--workload", "statefulset-ledger"}, wantSel: "dumpcatcher.io/workload=statefulset-ledger",
			want: "NAMESPACE   NAME                              WORKLOAD             POD        CONTAINER   REASON    SIZE   COMPLETE   AGE\n" +
				"bank        ledger-0-app-prestop-cccccccccc   statefulset-ledger   ledger-0   app         prestop   10B    true       5m\n"},
		{name: "wide", args: []string{"list", "-n", "bank", "-o", "wide", "--no-headers"},
			want: "ledger-0-app-prestop-cccccccccc   statefulset-ledger   ledger-0   app   prestop   10B   true   5m    n3\n"},
		{name: "names", args: []string{"list", "--pod", "web-2", "-o", "name"}, wantSel: "dumpcatcher.io/pod=web-2",
			want: "dump.dumps.dumpcatcher.io/web-2-app-manual-bbbbbbbbbb\n"},
		{name: "control characters in cells", args: []string{"list", "-n", "odd", "--no-headers"},
			want: "odd-aaaaaaaaaa   ?[2Jx   p     c     oom   1B    true   5m\n"},
		{name: "empty", args: []string{"list", "-n", "empty"}, wantErrO: "No dumps found in namespace empty.\n"},
		{name: "bad reason", args: []string{"list", "--reason", "x"}, wantErr: "--reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			seed(f)
			out, errOut, err := run(t, f, testDeps(nil), tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if errOut != tc.wantErrO {
				t.Errorf("stderr = %q, want %q", errOut, tc.wantErrO)
			}
			if tc.wantSel != "" && (len(f.selectors) != 1 || f.selectors[0] != tc.wantSel) {
				t.Errorf("selectors sent = %q, want [%q]", f.selectors, tc.wantSel)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*fakeAPI)
		args  []string
		want  []string
	}{
		{name: "forbidden list", setup: func(f *fakeAPI) { f.forbidden["shop"] = true }, args: []string{"list"},
			want: []string{`may not list dumps.dumps.dumpcatcher.io in namespace "shop"`, "--clusterrole=dumpcatcher-dumps-reader"}},
		{name: "forbidden download", setup: func(f *fakeAPI) { f.forbidden["shop"] = true }, args: []string{"download", "web-1-app-oom-aaaaaaaaaa", "-o", "-"},
			// The get comes first, so the reader role is named.
			want: []string{`may not get dumps.dumps.dumpcatcher.io in namespace "shop"`}},
		{name: "forbidden delete", setup: func(f *fakeAPI) { f.forbidden["shop"] = true }, args: []string{"delete", "web-1-app-oom-aaaaaaaaaa"},
			want: []string{`verb "delete"`, "dumpcatcher-dumps-admin"}},
		{name: "not installed", setup: func(f *fakeAPI) { f.notInstalled = true }, args: []string{"list"},
			want: []string{"the dumps API is not installed", "--set api.enabled=true"}},
		{name: "not found", args: []string{"get", "nope"},
			want: []string{`dump "nope" not found in namespace "shop"`}},
		{name: "store down", setup: func(f *fakeAPI) { f.storeDown["shop"] = true }, args: []string{"list"},
			want: []string{"cannot reach its object store", "destination default is unreachable"}},
		{name: "APIService down", setup: func(f *fakeAPI) { f.aggDown = true }, args: []string{"get", "web-1-app-oom-aaaaaaaaaa"},
			want: []string{"the dumps API server is not available", "kubectl get apiservice v1alpha1.dumps.dumpcatcher.io"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			seed(f)
			if tc.setup != nil {
				tc.setup(f)
			}
			_, _, err := run(t, f, testDeps(nil), tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestGet(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	out, _, err := run(t, f, testDeps(nil), "get", "web-1-app-oom-aaaaaaaaaa")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Name:         web-1-app-oom-aaaaaaaaaa\n", "Namespace:    shop\n", "Reason:       oom\n", "Time:         2026-11-29T10:00:00Z (5m ago)\n",
		"Size:         8 B stored\n", "Complete:     unknown\n", "Download:     kubectl dumpcatcher download web-1-app-oom-aaaaaaaaaa -n shop\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("summary\n%s\nlacks %q", out, w)
		}
	}
	out, _, err = run(t, f, testDeps(nil), "get", "web-1-app-oom-aaaaaaaaaa", "-o", "yaml")
	if err != nil || !strings.Contains(out, "sha256: ") || !strings.Contains(out, "kind: Dump") {
		t.Fatalf("-o yaml = %q, %v", out, err)
	}
}

func TestDelete(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	out, _, err := run(t, f, testDeps(nil), "delete", "web-1-app-oom-aaaaaaaaaa")
	if err != nil || out != "dump \"web-1-app-oom-aaaaaaaaaa\" deleted from namespace shop\n" || len(f.dumps) != 3 {
		t.Fatalf("delete = %q, %v; %d dumps left", out, err, len(f.dumps))
	}
}

// heap is n bytes that compress little.
func heap(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func zstdOf(t *testing.T, b []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func TestDownload(t *testing.T) {
	plain := heap(10_000)
	stored := zstdOf(t, plain)
	for _, tc := range []struct {
		name       string
		args       []string
		partial    int // bytes of a FILE.part present before
		wrongSum   bool
		want       []byte // the file (or stdout)
		stdout     bool
		wantRanges []string
		wantErr    string
	}{
		{name: "stored bytes in chunks", args: []string{"--chunk-size", "2Ki"}, want: stored,
			wantRanges: ranges(len(stored), 0, 2048)},
		{name: "decompressed", args: []string{"--chunk-size", "2Ki", "--decompress"}, want: plain,
			wantRanges: ranges(len(stored), 0, 2048)},
		{name: "resume", args: []string{"--chunk-size", "2Ki", "--decompress"}, partial: 3000, want: plain,
			wantRanges: ranges(len(stored), 3000, 2048)},
		{name: "stdout decompressed", args: []string{"-o", "-", "--decompress"}, stdout: true, want: plain,
			wantRanges: ranges(len(stored), 0, 64<<20)},
		{name: "checksum mismatch", args: []string{"--chunk-size", "2Ki"}, wrongSum: true, wantErr: "checksum mismatch"},
		{name: "bad chunk size", args: []string{"--chunk-size", "lots"}, wantErr: `--chunk-size "lots"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.add("shop", "d1", stored, map[string]any{"encoding": "zstd", "file": "java_pid1.hprof.zst", "pod": "web-1"})
			if tc.wrongSum {
				f.dumps[0].fields["sha256"] = strings.Repeat("0", 64)
			}
			dir := t.TempDir()
			t.Chdir(dir)
			file := "java_pid1.hprof.zst"
			if tc.want != nil && bytes.Equal(tc.want, plain) {
				file = "java_pid1.hprof"
			}
			if tc.partial > 0 {
				if err := os.WriteFile(file+".part", stored[:tc.partial], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, errOut, err := run(t, f, testDeps(nil), append([]string{"download", "d1"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				if _, serr := os.Stat(file + ".part"); tc.wrongSum && serr == nil {
					t.Error("the .part of a mismatching download is kept (a resume would never match)")
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, errOut)
			}
			got := []byte(out)
			if !tc.stdout {
				if got, err = os.ReadFile(filepath.Join(dir, file)); err != nil {
					t.Fatal(err)
				}
				fi, _ := os.Stat(file)
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("mode %v, want 0600", fi.Mode().Perm())
				}
				if _, err := os.Stat(file + ".part"); err == nil {
					t.Error(".part left behind")
				}
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("downloaded %d bytes, want %d", len(got), len(tc.want))
			}
			if diff := cmp.Diff(tc.wantRanges, f.ranges); diff != "" {
				t.Errorf("Range headers (-want +got):\n%s", diff)
			}
			if !strings.Contains(errOut, "SHA-256 verified") {
				t.Errorf("stderr %q does not say the checksum was verified", errOut)
			}
		})
	}
}

// ranges are the Range headers of a download of n bytes from offset.
func ranges(n, offset, chunk int) []string {
	var r []string
	for p := offset; p < n; p += chunk {
		r = append(r, "bytes="+strconv.Itoa(p)+"-"+strconv.Itoa(min(p+chunk, n)-1))
	}
	return r
}

func TestDownloadRefusesToOverwrite(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	dir := t.TempDir()
	target := filepath.Join(dir, "x.hprof")
	os.WriteFile(target, []byte("mine"), 0o600)
	_, _, err := run(t, f, testDeps(nil), "download", "web-1-app-oom-aaaaaaaaaa", "-o", target)
	if err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("error = %v, want a refusal naming --overwrite", err)
	}
	if _, _, err := run(t, f, testDeps(nil), "download", "web-1-app-oom-aaaaaaaaaa", "-o", target, "--overwrite"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "heap one" {
		t.Fatalf("file = %q", b)
	}
}

// fakeExec plays the in-container dumpcatcher dump: prints what it prints
// and, like the uploader, makes the dump appear in the store.
type fakeExec struct {
	f      *fakeAPI
	got    []string
	output string
	upload func()
}

func (e *fakeExec) Exec(_ context.Context, ns, pod, container string, cmd []string, stdout, _ io.Writer) error {
	e.got = append([]string{ns, pod, container}, cmd...)
	io.WriteString(stdout, e.output)
	if e.upload != nil {
		e.upload()
	}
	return nil
}

func TestDump(t *testing.T) {
	f := newFakeAPI(t)
	f.pods["shop/web-1"] = `{"containers":[{"name":"app","mountPath":"/dumpcatcher-1"}]}`
	url := "s3://dumps/shop/deployment-web/web-1/app/20261129t100000z-manual-java_pid7.hprof"
	e := &fakeExec{f: f,
		output: "\x1b]0;owned\x07pid 7: under memory pressure\n" +
			"pid 7: heap dump written to /dumpcatcher-1/dumps/java_pid7.hprof in 1s; the dumpcatcher sidecar uploads it to " + url + "\n",
		upload: func() {
			f.add("shop", "web-1-app-manual-dddddddddd", []byte("dumped"), map[string]any{"pod": "web-1", "container": "app", "url": url})
		}}
	out, errOut, err := run(t, f, testDeps(e), "dump", "web-1", "--wait", "10s")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	want := []string{"shop", "web-1", "app", "/dumpcatcher-1/bin/dumpcatcher", "dump", "--reason=manual", "--container=app"}
	if diff := cmp.Diff(want, e.got); diff != "" {
		t.Errorf("exec (-want +got):\n%s", diff)
	}
	if strings.ContainsAny(errOut, "\x1b\x07") || !strings.Contains(errOut, "?]0;owned?pid 7: under memory pressure") {
		t.Errorf("the container's output reached the terminal unfiltered: %q", errOut)
	}
	if out != "web-1-app-manual-dddddddddd\n" || !strings.Contains(errOut, "kubectl dumpcatcher download web-1-app-manual-dddddddddd -n shop") {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
	if len(f.selectors) == 0 || f.selectors[0] != "dumpcatcher.io/container=app,dumpcatcher.io/pod=web-1" {
		t.Errorf("selectors = %q", f.selectors)
	}

	// --download fetches it too.
	dir := t.TempDir()
	_, errOut, err = run(t, f, testDeps(&fakeExec{output: e.output}), "dump", "web-1", "--download", "-o", filepath.Join(dir, "h.hprof"))
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "h.hprof")); string(b) != "dumped" {
		t.Errorf("downloaded %q", b)
	}

	// No dump written: say so.
	_, _, err = run(t, f, testDeps(&fakeExec{output: "no JVM runs in this container: nothing to dump\n"}), "dump", "web-1")
	if err == nil || !strings.Contains(err.Error(), "wrote no heap dump") {
		t.Errorf("error = %v, want 'wrote no heap dump'", err)
	}
	// A pod that is not there.
	_, _, err = run(t, f, testDeps(e), "dump", "web-9")
	if err == nil || !strings.Contains(err.Error(), `pod "web-9" not found`) {
		t.Errorf("error = %v", err)
	}
}
