package app

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumplock"
	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flags parses args over env as the binary does.
func flags(t *testing.T, args []string, env map[string]string) Flags {
	t.Helper()
	var f Flags
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	f.Bind(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFlagsConfig: every problem is reported at once, each with its field
// path (the flag's name) and, in the message, the flag and its variable.
func TestFlagsConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want field.ErrorList
	}{
		{name: "defaults and a destination", env: map[string]string{contract.EnvDestination: "file:///dumps"}},
		{name: "everything wrong", args: []string{"--dir", "rel", "--compression", "lz4", "--drain-timeout", "0s", "--quiet-period", "later",
			"--key-template", "{pod}", "--metrics-address", "9090", "--containers", "app,../etc", "--log-level", "loud", "--ca-file", "/nonexistent/ca.pem", "--grace-period", "-1"},
			want: field.ErrorList{
				field.Required(field.NewPath("destination"), destinationRequired),
				field.Invalid(field.NewPath("drain-timeout"), "0s", `"0s" is not a positive duration such as 25s or 2m`),
				field.Invalid(field.NewPath("quiet-period"), "later", `"later" is not a positive duration such as 25s or 2m`),
				field.Invalid(field.NewPath("grace-period"), "-1", `"-1" is not a whole number of seconds, 0 or more`),
				field.Invalid(field.NewPath("log-level"), "loud", `unrecognized level: "loud"`),
				field.Invalid(field.NewPath("dir"), "rel", `"rel" is not an absolute path`),
				field.Invalid(field.NewPath("key-template"), "{pod}", `key template "{pod}": must use {file} and {time}, so that two dumps never share a key`),
				{Type: field.ErrorTypeNotSupported, Field: "compression", BadValue: "lz4", Detail: `"lz4" is not one of gzip, zstd, none`},
				field.Invalid(field.NewPath("ca-file"), "/nonexistent/ca.pem", "stat /nonexistent/ca.pem: no such file or directory"),
				field.Invalid(field.NewPath("metrics-address"), "9090", "address 9090: missing port in address"),
				field.Invalid(field.NewPath("containers").Index(1), "../etc", `"../etc" is not a container name`),
			}},
		{name: "a destination with a secret is not echoed", env: map[string]string{contract.EnvDestination: "gs://KEY:SECRET@bucket"},
			want: field.ErrorList{field.Invalid(field.NewPath("destination"), "", "credentials must not be part of the URL (user:password@); put them in the credentials Secret")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := flags(t, tt.args, tt.env).Config()
			var got field.ErrorList
			var ie *InvalidError
			if errors.As(err, &ie) {
				got = ie.Errs
			} else if err != nil {
				t.Fatalf("err = %v, want an *InvalidError", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLockTTLFromGracePeriod: the grace period the webhook injects caps the
// dump lock of a preStop hook at grace + dumplock.Margin; unknown, at
// dumplock.DefaultMaxTTL.
func TestLockTTLFromGracePeriod(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want time.Duration
	}{
		{"", dumplock.DefaultMaxTTL},
		{"0", dumplock.DefaultMaxTTL},
		{"60", 65 * time.Second},
		{"7200", 7205 * time.Second},
	} {
		env := map[string]string{contract.EnvDestination: "file:///dumps", contract.EnvGracePeriod: tt.env}
		c, err := flags(t, nil, env).Config()
		if err != nil {
			t.Fatalf("%s=%q: %v", contract.EnvGracePeriod, tt.env, err)
		}
		if got := c.maxLockTTL(); got != tt.want {
			t.Errorf("%s=%q: lock TTL cap %v, want %v", contract.EnvGracePeriod, tt.env, got, tt.want)
		}
	}
}

func TestInvalidErrorNamesFlagAndVariable(t *testing.T) {
	_, err := flags(t, []string{"--containers", "a,..", "--compression", "lz4"}, nil).Config()
	want := "--destination ($DUMPCATCHER_DESTINATION): " + destinationRequired + "\n" +
		`--compression ($DUMPCATCHER_COMPRESSION): "lz4" is not one of gzip, zstd, none` + "\n" +
		`--containers ($DUMPCATCHER_CONTAINERS): ".." is not a container name`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestRunRefusesAnInvalidConfig(t *testing.T) {
	err := Run(context.Background(), Config{Dir: "rel"}, logr.Discard())
	var ie *InvalidError
	if !errors.As(err, &ie) || len(ie.Errs) != 6 {
		t.Fatalf("err = %v, want the six problems of an empty config", err)
	}
}

// TestRun runs the whole uploader in this process against a file://
// destination: it places the binary and the dump directories, delivers a
// dump, answers the dump command's socket, and returns once ctx is
// cancelled, leaving no goroutine behind.
func TestRun(t *testing.T) {
	dir, store := t.TempDir(), t.TempDir()
	dest, err := contract.ParseDestination("file://" + store)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Dir: dir, Destination: dest, KeyTemplate: "{namespace}/{pod}/{container}/{file}-{time}", Compression: uploader.CompressionNone,
		Drain: 5 * time.Second, QuietPeriod: time.Minute, Containers: []string{"app"},
		Identity: uploader.Identity{Namespace: "shop", Pod: "web-1", Workload: "deployment/web"}, Version: "test",
	}
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, zapr.NewLogger(zap.New(core))) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return within 15s of the cancellation")
		}
	}()
	waitFor(t, "the uploader watching", func() bool { return logs.FilterMessage("watching for heap dumps").Len() > 0 })
	if fi, err := os.Stat(filepath.Join(dir, contract.BinDir, contract.BinaryName)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("placed binary: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, contract.DumpsDir, "app")); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("dump directory: %v %v", fi, err)
	}
	// The pod field is on the sidecar packages' lines too.
	if l := logs.FilterMessage("watching for heap dumps").All()[0]; l.ContextMap()["pod"] != "shop/web-1" {
		t.Errorf("watch log line has no pod: %v", l.ContextMap())
	}
	socket := filepath.Join(dir, contract.BinDir, contract.LockSocketName)
	where, err := dumplock.Where(context.Background(), socket, "", "java_pid1.hprof")
	if err != nil || !strings.HasPrefix(where, "file://"+store+"/shop/web-1/app/java_pid1.hprof-") {
		t.Errorf("socket says the dump goes to %q (%v)", where, err)
	}
	// A whole HPROF header (identifier size, timestamp) and one byte.
	dump := "JAVA PROFILE 1.0.2\x00\x00\x00\x00\x08\x00\x00\x01\x90\x00\x00\x00\x00\x2c"
	if err := os.WriteFile(filepath.Join(dir, contract.DumpsDir, "app", "java_pid1.hprof"), []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	var delivered []string
	defer func() {
		if t.Failed() {
			for _, l := range logs.All() {
				t.Logf("%s %s %v", l.LoggerName, l.Message, l.ContextMap())
			}
		}
	}()
	waitFor(t, "the dump in the store", func() bool {
		delivered = nil
		_ = filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.Contains(p, "java_pid1.hprof") && !strings.HasSuffix(p, ".meta.json") {
				delivered = append(delivered, p)
			}
			return nil
		})
		return len(delivered) == 1
	})
	if got, _ := os.ReadFile(delivered[0]); string(got) != dump {
		t.Errorf("stored %q", got)
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLogLevel: logr has no warn level, so what zap logged as warnings is
// info now; --log-level=warn is taken as info and still shows them.
func TestLogLevel(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want zapcore.Level
	}{{"debug", zapcore.DebugLevel}, {"info", zapcore.InfoLevel}, {"warn", zapcore.InfoLevel}, {"error", zapcore.ErrorLevel}} {
		env := map[string]string{contract.EnvDestination: "file:///dumps", contract.EnvLogLevel: tt.in}
		c, err := flags(t, nil, env).Config()
		if err != nil || c.LogLevel != tt.want {
			t.Errorf("%s=%s: level %v (%v), want %v", contract.EnvLogLevel, tt.in, c.LogLevel, err, tt.want)
		}
	}
}
