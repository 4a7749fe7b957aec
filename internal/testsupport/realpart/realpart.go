// Package realpart decides, in one place, what a test does when a real part
// it needs (a built tool such as minio or kube-apiserver, a JDK, root) is
// missing: it is skipped, naming the command that provides the part, or it
// fails when DUMPCATCHER_REQUIRE_REAL is set (as `make test` does), so that
// a missing tool can never pass silently in CI.
//
//	minio := realpart.Tool(t, "minio")      // $DUMPCATCHER_TOOLS_BIN or $KUBEBUILDER_ASSETS
//	helm := realpart.ToolOrPath(t, "helm")  // also $PATH
//	assets := realpart.Assets(t)           // envtest's BinaryAssetsDirectory
//	java, javac := realpart.Java(t)
//	realpart.Require(t, "root", os.Geteuid() == 0)
package realpart

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Environment variables read here.
const (
	// EnvRequireReal, when non-empty, turns every skip for a missing real
	// part into a failure.
	EnvRequireReal = "DUMPCATCHER_REQUIRE_REAL"
	// EnvToolsBin is a directory of tools built by test/tools/install.sh,
	// looked at before EnvAssets.
	EnvToolsBin = "DUMPCATCHER_TOOLS_BIN"
	// EnvAssets is the directory `make test` sets (envtest's name for it):
	// kube-apiserver, etcd, minio, mc, helm, helm-docs and crds/.
	EnvAssets = "KUBEBUILDER_ASSETS"
)

// Fix is what the skip and failure messages tell the reader to run.
const Fix = "run `make test` (it builds the tools and sets KUBEBUILDER_ASSETS), or set KUBEBUILDER_ASSETS=$(bash test/tools/install.sh)"

// Required reports whether missing parts fail tests (EnvRequireReal is set).
func Required() bool { return os.Getenv(EnvRequireReal) != "" }

// Require skips the test when ok is false, or fails it when
// DUMPCATCHER_REQUIRE_REAL is set; what names the missing part and how to get
// it, e.g. "no minio binary in $KUBEBUILDER_ASSETS (run `make tools`)".
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatalf("%s (%s is set, so this is a failure)", what, EnvRequireReal)
		return
	}
	t.Skipf("%s (set %s=1 to make this a failure)", what, EnvRequireReal)
}

// Missing is Require(t, fmt.Sprintf(format, args...), false).
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	Require(t, fmt.Sprintf(format, args...), false)
}

// Find returns the path of the executable name in $DUMPCATCHER_TOOLS_BIN or
// $KUBEBUILDER_ASSETS, or "" when neither has it.
func Find(name string) string {
	for _, env := range []string{EnvToolsBin, EnvAssets} {
		if dir := os.Getenv(env); dir != "" {
			if p := filepath.Join(dir, name); isExecutable(p) {
				return p
			}
		}
	}
	return ""
}

// Tool returns the path of name in $DUMPCATCHER_TOOLS_BIN or
// $KUBEBUILDER_ASSETS (see Find), or skips/fails the test (see Require).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := Find(name)
	Require(t, fmt.Sprintf("no %s binary in $%s or $%s: %s", name, EnvToolsBin, EnvAssets, Fix), p != "")
	return p
}

// ToolOrPath is Tool that also looks on $PATH, after the tool directories.
func ToolOrPath(t testing.TB, name string) string {
	t.Helper()
	p := Find(name)
	if p == "" {
		p, _ = exec.LookPath(name)
	}
	Require(t, fmt.Sprintf("no %s binary in $%s, $%s or on PATH: %s", name, EnvToolsBin, EnvAssets, Fix), p != "")
	return p
}

// Assets returns $KUBEBUILDER_ASSETS, the directory of kube-apiserver and
// etcd that envtest starts, or skips/fails the test when it is not set.
func Assets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvAssets)
	Require(t, fmt.Sprintf("$%s is not set, so there is no kube-apiserver and etcd: %s", EnvAssets, Fix), dir != "")
	return dir
}

// Java returns the java and javac on PATH, or skips/fails the test.
func Java(t testing.TB) (java, javac string) {
	t.Helper()
	java, errJava := exec.LookPath("java")
	javac, errJavac := exec.LookPath("javac")
	Require(t, fmt.Sprintf("java and javac are needed on PATH (install a JDK, 17 or later): %v %v", errJava, errJavac),
		errJava == nil && errJavac == nil)
	return java, javac
}

// Root skips/fails the test unless it runs as root (tests that switch uids).
func Root(t testing.TB) {
	t.Helper()
	Require(t, "this test must run as root (it starts processes as other uids)", os.Geteuid() == 0)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
