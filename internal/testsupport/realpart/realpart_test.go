package realpart

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder records what Require asked of the test instead of doing it.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name         string
		require      string
		ok           bool
		skip, fail   bool
		wantInReport string
	}{
		{name: "present", ok: true},
		{name: "missing skips", skip: true, wantInReport: "set " + EnvRequireReal + "=1"},
		{name: "missing fails when required", require: "1", fail: true, wantInReport: EnvRequireReal + " is set"},
		{name: "present when required", require: "1", ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvRequireReal, tc.require)
			r := &recorder{TB: t}
			Require(r, "no widget: run `make widget`", tc.ok)
			if (r.skipped != "") != tc.skip || (r.failed != "") != tc.fail {
				t.Fatalf("skipped %q, failed %q; want skip=%v fail=%v", r.skipped, r.failed, tc.skip, tc.fail)
			}
			if got := r.skipped + r.failed; tc.wantInReport != "" && (!strings.Contains(got, tc.wantInReport) || !strings.Contains(got, "make widget")) {
				t.Errorf("report %q does not name the fix and %q", got, tc.wantInReport)
			}
		})
	}
}

func TestFind(t *testing.T) {
	bin, assets := t.TempDir(), t.TempDir()
	write := func(dir, name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(bin, "minio", 0o755)
	write(assets, "minio", 0o755)
	write(assets, "mc", 0o755)
	write(assets, "helm", 0o644) // not executable
	t.Setenv(EnvToolsBin, bin)
	t.Setenv(EnvAssets, assets)
	for name, want := range map[string]string{
		"minio": filepath.Join(bin, "minio"), // the tools dir first
		"mc":    filepath.Join(assets, "mc"),
		"helm":  "",
		"etcd":  "",
	} {
		if got := Find(name); got != want {
			t.Errorf("Find(%q) = %q, want %q", name, got, want)
		}
	}
}
