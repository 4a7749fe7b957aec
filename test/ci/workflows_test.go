// Package ci checks the GitHub Actions workflows (.github/workflows) with
// actionlint, pinned in test/tools/actionlint and built by
// test/tools/install.sh, and that the CI workflow runs what the project's
// CI promises.
package ci

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
)

// actionlint runs actionlint on the workflow files of dir/.github/workflows
// and returns its findings and whether it succeeded. shellcheck and pyflakes
// are off, so that the result does not depend on what else the machine has.
func actionlint(t *testing.T, dir string) (string, bool) {
	t.Helper()
	bin := realpart.Tool(t, "actionlint")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(dir, ".github", "workflows", "*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflow in %s/.github/workflows (%v)", dir, err)
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"-no-color", "-shellcheck=", "-pyflakes="}, files...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("actionlint: %v", err)
	}
	return out.String(), err == nil
}

// TestWorkflowsLint: actionlint finds nothing in .github/workflows.
func TestWorkflowsLint(t *testing.T) {
	if out, ok := actionlint(t, render.RepoRoot(t)); !ok || out != "" {
		t.Errorf("actionlint .github/workflows:\n%s", out)
	}
}

// TestActionlintFindsErrors: the check above can fail: actionlint reports
// an unknown context and an unknown runner key.
func TestActionlintFindsErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".github", "workflows"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.no_such_thing }}\n    timeout: 5\n"
	if err := os.WriteFile(filepath.Join(dir, ".github", "workflows", "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, ok := actionlint(t, dir)
	if ok || !strings.Contains(out, "no_such_thing") || !strings.Contains(out, "timeout") {
		t.Errorf("actionlint passed a broken workflow or missed a finding (ok=%v):\n%s", ok, out)
	}
}

type workflow struct {
	On   map[string]any `yaml:"on"`
	Jobs map[string]struct {
		If    string `yaml:"if"`
		Needs any    `yaml:"needs"`
		Steps []struct {
			Run string            `yaml:"run"`
			Env map[string]string `yaml:"env"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestCIWorkflow: on pushes (with tags v*) and pull requests, make test;
// make e2e as root after it; on tags make release and make push to ghcr.io
// with the GITHUB_TOKEN, after both.
func TestCIWorkflow(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(render.RepoRoot(t), ".github", "workflows", "ci.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var w workflow
	// YAML 1.2 (yaml/v3): "on" is a key here, not a boolean.
	if err := yaml.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.On["pull_request"]; !ok {
		t.Error("not run on pull requests")
	}
	push, _ := w.On["push"].(map[string]any)
	if tags, _ := push["tags"].([]any); len(tags) != 1 || tags[0] != "v*" {
		t.Errorf("push tags %v, want [v*]", push["tags"])
	}
	runs := func(job string) string {
		var s []string
		for _, st := range w.Jobs[job].Steps {
			s = append(s, st.Run)
		}
		return strings.Join(s, "\n")
	}
	if !strings.Contains(runs("test"), "make test") {
		t.Error("job test does not run make test")
	}
	if r := runs("e2e"); !strings.Contains(r, "sudo ") || !strings.Contains(r, "make e2e") {
		t.Errorf("job e2e does not run make e2e as root: %q", r)
	}
	rel := w.Jobs["release"]
	if !strings.Contains(rel.If, "refs/tags/v") {
		t.Errorf("release runs if %q, want on tags v*", rel.If)
	}
	if r := runs("release"); !strings.Contains(r, "make release") || !strings.Contains(r, "make push") {
		t.Errorf("release job: %q", r)
	}
	token := false
	for _, st := range rel.Steps {
		if strings.Contains(st.Run, "make push") {
			token = strings.Contains(st.Env["REGISTRY_PASSWORD"], "secrets.GITHUB_TOKEN")
		}
	}
	if !token || !strings.Contains(string(b), "registry=ghcr.io/") {
		t.Error("release does not push to ghcr.io with the GITHUB_TOKEN")
	}
}
