package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// parseDockerfile parses a Dockerfile with BuildKit's own parser into its
// build stages. The parser's warnings (e.g. an empty continuation line) and
// the lint rules BuildKit checks while parsing (e.g. FROM ... as with a
// lower-case AS) are errors too.
func parseDockerfile(data []byte) ([]instructions.Stage, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var problems []error
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		problems = append(problems, fmt.Errorf("line %d: %s", line, w.Short))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		problems = append(problems, fmt.Errorf("line %d: %s: %s", firstLine(loc), rule, msg))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, err
	}
	return stages, errors.Join(problems...)
}

func firstLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}

// commands returns the stage's instructions of type T, in order, e.g.
// commands[*instructions.RunCommand](st).
func commands[T instructions.Command](st instructions.Stage) []T {
	var out []T
	for _, c := range st.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// last returns the stage's last instruction of type T.
func last[T instructions.Command](st instructions.Stage) (T, bool) {
	all := commands[T](st)
	if len(all) == 0 {
		var zero T
		return zero, false
	}
	return all[len(all)-1], true
}

var (
	goBuildRE = regexp.MustCompile(`go build ([^&;|]*)`)
	outputRE  = regexp.MustCompile(`-o (\S+) (\./\S+)`)
)

func TestDockerfiles(t *testing.T) {
	root := render.RepoRoot(t)
	images := []struct {
		file, binary, pkg string
	}{
		{"Dockerfile.webhook", "/usr/local/bin/dumpcatcher-webhook", "./cmd/dumpcatcher-webhook"},
		// The webhook injects the uploader as contract.BinaryPath.
		{"Dockerfile.sidecar", contract.BinaryPath, "./cmd/dumpcatcher"},
	}
	for _, img := range images {
		t.Run(img.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, img.file))
			if err != nil {
				t.Fatal(err)
			}
			stages, err := parseDockerfile(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a builder and a final stage", len(stages))
			}
			final := stages[len(stages)-1]
			byName := map[string]instructions.Stage{}
			for _, st := range stages[:len(stages)-1] {
				byName[st.Name] = st
			}

			// The final stage: distroless or scratch, a non-root numeric user,
			// the binary at its fixed path, exec-form entrypoint.
			if !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") && final.BaseName != "scratch" {
				t.Errorf("final stage FROM %s, want distroless static or scratch", final.BaseName)
			}
			user, ok := last[*instructions.UserCommand](final)
			if !ok {
				t.Fatal("the final stage has no USER")
			}
			uid, _, _ := strings.Cut(user.User, ":")
			if uid != "65532" {
				t.Errorf("USER %s, want 65532 (non-root, numeric so runAsNonRoot can verify it)", user.User)
			}
			ep, ok := last[*instructions.EntrypointCommand](final)
			if !ok {
				t.Fatal("no ENTRYPOINT")
			}
			if ep.PrependShell {
				t.Fatalf("%s is not the exec (JSON) form", ep)
			}
			if len(ep.CmdLine) != 1 || ep.CmdLine[0] != img.binary {
				t.Errorf("ENTRYPOINT %q, want [%q]", ep.CmdLine, img.binary)
			}
			if len(commands[*instructions.RunCommand](final)) > 0 {
				t.Error("RUN in the final stage (there is no shell in it)")
			}
			var copied string
			var from instructions.Stage
			for _, c := range commands[*instructions.CopyCommand](final) {
				// No --chown or --chmod: the binary stays root's, not writable
				// by the user it runs as.
				if c.From != "" && len(c.SourcePaths) == 1 && c.DestPath == img.binary && c.Chown == "" && c.Chmod == "" {
					copied, from = c.SourcePaths[0], byName[c.From]
				}
			}
			if copied == "" || from.Name == "" {
				t.Fatalf("no COPY --from=<builder> ... %s in the final stage", img.binary)
			}
			labels := map[string]bool{}
			for _, l := range commands[*instructions.LabelCommand](final) {
				for _, kv := range l.Labels {
					labels[kv.Key] = true
				}
			}
			for _, want := range []string{"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.title", "org.opencontainers.image.licenses"} {
				if !labels[want] {
					t.Errorf("no LABEL %s", want)
				}
			}
			if !hasArg(final, "VERSION") {
				t.Error("the final stage does not declare ARG VERSION for its version label")
			}

			// The builder: a golang image, a static, reproducible build of the
			// right package into the file the final stage copies, versioned
			// through --build-arg VERSION.
			if !strings.HasPrefix(from.BaseName, "golang:") {
				t.Errorf("builder FROM %s, want golang", from.BaseName)
			}
			if !hasArg(from, "VERSION") {
				t.Error("the builder has no ARG VERSION")
			}
			var build string
			for _, r := range commands[*instructions.RunCommand](from) {
				cmdline := strings.Join(r.CmdLine, " ")
				if m := goBuildRE.FindStringSubmatch(cmdline); m != nil {
					if build != "" {
						t.Error("more than one go build")
					}
					build = cmdline
				}
			}
			if build == "" {
				t.Fatal("no go build in the builder")
			}
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=$VERSION"`} {
				if !strings.Contains(build, want) {
					t.Errorf("the build does not use %s: %s", want, build)
				}
			}
			m := outputRE.FindStringSubmatch(build)
			if m == nil || m[1] != copied || m[2] != img.pkg {
				t.Errorf("go build %v: want -o %s %s", m, copied, img.pkg)
			}

			// Every package of this module that the binary needs is copied
			// into the builder.
			dirs := map[string]bool{}
			for _, c := range commands[*instructions.CopyCommand](from) {
				for _, src := range c.SourcePaths {
					dirs[strings.TrimSuffix(src, "/")] = true
				}
			}
			for _, want := range []string{"go.mod", "go.sum"} {
				if !dirs[want] {
					t.Errorf("the builder does not copy %s", want)
				}
			}
			for _, dep := range moduleDeps(t, root, img.pkg) {
				top, _, _ := strings.Cut(dep, "/")
				if !dirs[top] {
					t.Errorf("the binary needs %s but the builder does not COPY %s/", dep, top)
				}
			}
		})
	}
}

func hasArg(st instructions.Stage, name string) bool {
	return slices.ContainsFunc(commands[*instructions.ArgCommand](st), func(a *instructions.ArgCommand) bool {
		return slices.ContainsFunc(a.Args, func(kv instructions.KeyValuePairOptional) bool { return kv.Key == name })
	})
}

// moduleDeps lists the packages of this module that pkg imports, directly
// or not, relative to the module root (e.g. internal/contract).
func moduleDeps(t *testing.T, root, pkg string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var deps []string
	for _, p := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(p, render.Module+"/"); ok {
			deps = append(deps, rel)
		}
	}
	if len(deps) == 0 {
		t.Fatalf("go list found no package of %s under %s", render.Module, pkg)
	}
	return deps
}

func TestParseDockerfile(t *testing.T) {
	stages, err := parseDockerfile([]byte("# syntax=docker/dockerfile:1\nARG GO=1.26\nFROM --platform=$BUILDPLATFORM golang:$GO AS build\nRUN a \\\n  b\n\nFROM scratch\nUSER 1:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != 2 || stages[0].Name != "build" || stages[0].BaseName != "golang:$GO" || len(stages[1].Commands) != 1 {
		t.Fatalf("%+v", stages)
	}
	if run, ok := last[*instructions.RunCommand](stages[0]); !ok || !slices.Equal(run.CmdLine, []string{"a   b"}) || !run.PrependShell {
		t.Errorf("RUN %+v, want the shell form \"a   b\"", run)
	}
	if user, ok := last[*instructions.UserCommand](stages[1]); !ok || user.User != "1:1" {
		t.Errorf("USER %+v, want 1:1", user)
	}
	for name, bad := range map[string]string{
		"RUN before FROM":     "RUN x\n",
		"lower-case as":       "FROM golang:1.26 as build\nRUN x\n",
		"unknown instruction": "FROM scratch\nCOPYY a b\n",
		"empty continuation":  "FROM scratch\nRUN a \\\n\n b\n",
	} {
		if _, err := parseDockerfile([]byte(bad)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
