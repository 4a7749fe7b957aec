package chart

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

type stage struct {
	from, name string
	ins        []instruction
}

// parseDockerfile is enough of the Dockerfile grammar for these checks:
// comments, parser directives, backslash continuations, stages.
func parseDockerfile(data string) ([]stage, error) {
	var stages []stage
	s := bufio.NewScanner(strings.NewReader(data))
	var cur strings.Builder
	start := 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			var image, name string
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					name = f[i+1]
					i++
				default:
					image = f[i]
				}
			}
			stages = append(stages, stage{from: image, name: name})
			return nil
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				return nil // global build arguments
			}
			return fmt.Errorf("line %d: %s before FROM", in.line, in.cmd)
		}
		st := &stages[len(stages)-1]
		st.ins = append(st.ins, in)
		return nil
	}
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments and parser directives
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("continuation at the end of the file")
	}
	return stages, s.Err()
}

func (st stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (st stage) last(cmd string) (instruction, bool) {
	all := st.all(cmd)
	if len(all) == 0 {
		return instruction{}, false
	}
	return all[len(all)-1], true
}

var (
	goBuildRE = regexp.MustCompile(`go build ([^&;|]*)`)
	outputRE  = regexp.MustCompile(`-o (\S+) (\./\S+)`)
	labelRE   = regexp.MustCompile(`(org\.opencontainers\.image\.[a-z]+)=`)
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
			stages, err := parseDockerfile(string(data))
			if err != nil {
				t.Fatal(err)
			}
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a builder and a final stage", len(stages))
			}
			final := stages[len(stages)-1]
			byName := map[string]stage{}
			for _, st := range stages[:len(stages)-1] {
				byName[st.name] = st
			}

			// The final stage: distroless or scratch, a non-root numeric user,
			// the binary at its fixed path, exec-form entrypoint.
			if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
				t.Errorf("final stage FROM %s, want distroless static or scratch", final.from)
			}
			user, ok := final.last("USER")
			if !ok {
				t.Fatal("the final stage has no USER")
			}
			uid, _, _ := strings.Cut(user.args, ":")
			if uid != "65532" {
				t.Errorf("USER %s, want 65532 (non-root, numeric so runAsNonRoot can verify it)", user.args)
			}
			ep, ok := final.last("ENTRYPOINT")
			if !ok {
				t.Fatal("no ENTRYPOINT")
			}
			var argv []string
			if err := json.Unmarshal([]byte(ep.args), &argv); err != nil {
				t.Fatalf("ENTRYPOINT %s is not the exec (JSON) form: %v", ep.args, err)
			}
			if len(argv) != 1 || argv[0] != img.binary {
				t.Errorf("ENTRYPOINT %q, want [%q]", argv, img.binary)
			}
			if len(final.all("RUN")) > 0 {
				t.Error("RUN in the final stage (there is no shell in it)")
			}
			var copied string
			var from stage
			for _, c := range final.all("COPY") {
				f := strings.Fields(c.args)
				if len(f) == 3 && strings.HasPrefix(f[0], "--from=") && f[2] == img.binary {
					copied, from = f[1], byName[strings.TrimPrefix(f[0], "--from=")]
				}
			}
			if copied == "" || from.name == "" {
				t.Fatalf("no COPY --from=<builder> ... %s in the final stage", img.binary)
			}
			labels := map[string]bool{}
			for _, l := range final.all("LABEL") {
				for _, m := range labelRE.FindAllStringSubmatch(l.args, -1) {
					labels[m[1]] = true
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
			if !strings.HasPrefix(from.from, "golang:") {
				t.Errorf("builder FROM %s, want golang", from.from)
			}
			if !hasArg(from, "VERSION") {
				t.Error("the builder has no ARG VERSION")
			}
			var build string
			for _, r := range from.all("RUN") {
				if m := goBuildRE.FindStringSubmatch(r.args); m != nil {
					if build != "" {
						t.Error("more than one go build")
					}
					build = r.args
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
			for _, c := range from.all("COPY") {
				f := strings.Fields(c.args)
				if len(f) >= 2 {
					for _, src := range f[:len(f)-1] {
						dirs[strings.TrimSuffix(src, "/")] = true
					}
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

func hasArg(st stage, name string) bool {
	for _, a := range st.all("ARG") {
		if n, _, _ := strings.Cut(a.args, "="); n == name {
			return true
		}
	}
	return false
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
	stages, err := parseDockerfile("# syntax=docker/dockerfile:1\nARG GO=1.26\nFROM --platform=$BUILDPLATFORM golang:$GO AS build\nRUN a \\\n  b\n\nFROM scratch\nUSER 1:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != 2 || stages[0].name != "build" || stages[0].from != "golang:$GO" || stages[0].ins[0].args != "a    b" || stages[1].ins[0].cmd != "USER" {
		t.Fatalf("%+v", stages)
	}
	if _, err := parseDockerfile("RUN x\n"); err == nil {
		t.Error("RUN before FROM accepted")
	}
}
