package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseServe(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("destination: s3://dumps\npreStop: always\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("preStop: sometimes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, sc serveConfig)
	}{
		{name: "defaults without a config file", env: map[string]string{"POD_NAMESPACE": "dumpcatcher"},
			check: func(t *testing.T, sc serveConfig) {
				if diff := cmp.Diff(config.Default(version), sc.opts.Config); diff != "" {
					t.Error(diff)
				}
				if sc.opts.Port != 9443 || sc.opts.CertDir != "/etc/dumpcatcher/tls" || sc.opts.Namespace != "dumpcatcher" ||
					sc.opts.MetricsAddr != ":8080" || sc.opts.HealthAddr != ":8081" {
					t.Errorf("defaults: %+v", sc.opts)
				}
			}},
		{name: "flags and config file", args: []string{"--config", good, "--port", "10250", "--cert-dir", "/certs", "--namespace", "ops", "--zap-log-level", "debug"},
			check: func(t *testing.T, sc serveConfig) {
				if sc.opts.Config.Destination != "s3://dumps" || sc.opts.Config.PreStop != "always" || sc.opts.Port != 10250 || sc.opts.CertDir != "/certs" || sc.opts.Namespace != "ops" {
					t.Errorf("got %+v", sc.opts)
				}
			}},
		{name: "bad config names the file and the key", args: []string{"--config", bad, "--namespace", "x"}, wantErr: bad + `: preStop: "sometimes" is not one of`},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "nope.yaml"), "--namespace", "x"}, wantErr: "reading config"},
		{name: "no namespace", wantErr: "--namespace: the webhook's own namespace is unknown"},
		{name: "bad port", args: []string{"--port", "70000", "--namespace", "x"}, wantErr: "--port: 70000 is not a port number"},
		{name: "unknown flag", args: []string{"--prot", "1"}, wantErr: "flag provided but not defined: -prot"},
		{name: "stray argument", args: []string{"--namespace", "x", "extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := parseServe(tt.args, &bytes.Buffer{}, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, sc)
		})
	}
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      securityContext: {runAsUser: 1000}
      containers:
      - name: web
        image: web:1
`

func TestRunInject(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("destination: s3://dumps\nsidecar: {image: dumpcatcher:test}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run([]string{"inject", "-f", "-", "--config", cfg, "--namespace-labels", "dumpcatcher.io/inject=enabled", "--native-sidecar", "never"},
		strings.NewReader(deployment), &out, &errOut, env(nil))
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"dumpcatcher.io/status", "-XX:HeapDumpPath=/dumpcatcher/dumps/", "image: dumpcatcher:test", "deployment/web"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "restartPolicy: Always") {
		t.Errorf("--native-sidecar never still made a native sidecar")
	}
	// Not opted in: byte-for-byte unchanged.
	out.Reset()
	if err := run([]string{"inject", "-f", "-", "--config", cfg}, strings.NewReader(deployment), &out, &errOut, env(nil)); err != nil {
		t.Fatal(err)
	}
	if out.String() != deployment {
		t.Errorf("not opted in, but changed:\n%s", out.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inject"}, "-f FILE (or - for standard input) is required"},
		{[]string{"inject", "-f", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"inject", "-f", "-", "--native-sidecar", "maybe"}, `--native-sidecar: "maybe" is not one of always, never`},
		{[]string{"inject", "-f", "-", "--namespace-labels", "novalue"}, `--namespace-labels: "novalue" is not key=value[,key=value...] of valid labels, e.g. dumpcatcher.io/inject=enabled,team=a: invalid selector: [novalue]`},
	} {
		err := run(tc.args, strings.NewReader(deployment), &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%v) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"version"}, nil, &out, &bytes.Buffer{}, env(nil)); err != nil || out.String() != version+"\n" {
		t.Fatalf("version: %q %v", out.String(), err)
	}
}

// TestHelp: --help lists the commands and the flags of serve, on stdout;
// each command has its own --help.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help", "help"} {
		var out, errOut bytes.Buffer
		if err := run([]string{arg}, nil, &out, &errOut, env(nil)); err != nil {
			t.Errorf("%s: %v", arg, err)
		}
		if !strings.HasPrefix(out.String(), usage+"\nFlags of serve:\n") || errOut.Len() != 0 {
			t.Errorf("%s: stdout:\n%s\nstderr: %s", arg, out.String(), errOut.String())
		}
		for _, flag := range []string{"-config", "-cert-dir", "-port", "-namespace"} {
			if !strings.Contains(out.String(), "\n  "+flag+" ") {
				t.Errorf("%s: no %s in:\n%s", arg, flag, out.String())
			}
		}
	}
	for _, cmd := range []string{"serve", "inject", "version"} {
		if !regexp.MustCompile(`(?m)^  ` + cmd + ` +\S`).MatchString(usage) {
			t.Errorf("usage does not list %s:\n%s", cmd, usage)
		}
	}
	for _, tc := range []struct{ cmd, want string }{
		{"serve", "Usage: dumpcatcher-webhook [serve] [flags]"},
		{"inject", "Usage: dumpcatcher-webhook inject -f FILE|- [flags]"},
	} {
		var errOut bytes.Buffer
		if err := run([]string{tc.cmd, "--help"}, nil, &bytes.Buffer{}, &errOut, env(nil)); err != nil {
			t.Errorf("%s --help: %v", tc.cmd, err)
		}
		if !strings.HasPrefix(errOut.String(), tc.want) {
			t.Errorf("%s --help printed:\n%s", tc.cmd, errOut.String())
		}
	}
}

// TestFlagsAloneServe: the chart's Deployment runs the binary with flags
// and no command; that is serve, as `serve` with the same flags is (both
// stop at the same invalid flag, before anything starts).
func TestFlagsAloneServe(t *testing.T) {
	for _, args := range [][]string{
		{"--config=/nonexistent/config.yaml", "--cert-dir=/etc/dumpcatcher/tls", "--port=9443", "--namespace=x"},
		{"serve", "--config=/nonexistent/config.yaml", "--cert-dir=/etc/dumpcatcher/tls", "--port=9443", "--namespace=x"},
	} {
		err := run(args, nil, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
		if err == nil || !strings.Contains(err.Error(), "reading config") || !strings.Contains(err.Error(), "/nonexistent/config.yaml") {
			t.Errorf("run(%q) = %v, want the serve command's config error", args, err)
		}
	}
}

// TestParseServeConfigProblems: every problem of the config file is a line
// of its own that names the flag, the file and the key.
func TestParseServeConfigProblems(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(bad, []byte("preStop: sometimes\nnativeSidecar: maybe\nupload: {compresion: gzip}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := parseServe([]string{"--config", bad, "--namespace", "x"}, &bytes.Buffer{}, env(nil))
	want := "--config: config " + bad + ": upload.compresion: unknown field: the configuration has no such key\n" +
		"--config: config " + bad + `: preStop: "sometimes" is not one of always, on-pressure, never` + "\n" +
		"--config: config " + bad + `: nativeSidecar: "maybe" is not one of auto, always, never`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

// TestParseServeReportsEveryProblem: one error, a line per problem, each
// naming its flag.
func TestParseServeReportsEveryProblem(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := parseServe([]string{"--port", "0", "--config", missing}, &bytes.Buffer{}, env(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"--port: 0 is not a port number", "--namespace: the webhook's own namespace is unknown; set --namespace or POD_NAMESPACE", "--config: reading config"}
	if len(lines) != len(want) {
		t.Fatalf("error:\n%v\nwant %d lines", err, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], want[i])
		}
	}
}

// TestParseLabels: --namespace-labels is key=value pairs of valid labels
// (k8s.io/apimachinery's labels); an error names the flag and shows the form.
func TestParseLabels(t *testing.T) {
	const form = `is not key=value[,key=value...] of valid labels, e.g. dumpcatcher.io/inject=enabled,team=a: `
	for _, tc := range []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: "", want: map[string]string{}},
		{in: "  ", want: map[string]string{}},
		{in: "dumpcatcher.io/inject=enabled", want: map[string]string{"dumpcatcher.io/inject": "enabled"}},
		{in: " a = b , team=x,empty=", want: map[string]string{"a": "b", "team": "x", "empty": ""}},
		{in: "novalue", wantErr: `--namespace-labels: "novalue" ` + form + `invalid selector: [novalue]`},
		{in: "a=b,", wantErr: `--namespace-labels: "a=b," ` + form + `invalid selector: []`},
		{in: "a=b=c", wantErr: `--namespace-labels: "a=b=c" ` + form + `invalid selector: [a b c]`},
		{in: "bad key=x", wantErr: `--namespace-labels: "bad key=x" ` + form + `labels: Invalid value: "bad key": name part must consist of`},
		{in: "a=not valid", wantErr: `--namespace-labels: "a=not valid" ` + form + `labels[a]: Invalid value: "not valid": a valid label must be`},
	} {
		got, err := parseLabels(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("parseLabels(%q) = %v, %v; want error starting %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseLabels(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseLabels(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}
