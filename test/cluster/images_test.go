// Package cluster holds the e2e rig (up.sh, down.sh, images.sh); its test
// checks that the images images.sh assembles without Docker are the images
// the Dockerfiles describe.
package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// imagesDir is where images.sh writes its archives (env.sh's E2E_IMAGES).
func imagesDir() string {
	if d := os.Getenv("DUMPCATCHER_E2E_IMAGES"); d != "" {
		return d
	}
	root := os.Getenv("DUMPCATCHER_E2E_ROOT")
	if root == "" {
		root = "/var/lib/dumpcatcher-e2e"
	}
	return filepath.Join(root, "images")
}

// finalStage parses a Dockerfile with BuildKit's parser and returns its
// last stage, with words unquoted as a build would (variables the
// Dockerfile does not set, like $VERSION, stay as written).
func finalStage(t *testing.T, file string) instructions.Stage {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil || len(stages) == 0 {
		t.Fatalf("%s: %d stages, %v", file, len(stages), err)
	}
	final := stages[len(stages)-1]
	lex := shell.NewLex(res.EscapeToken)
	lex.SkipUnsetEnv = true
	expand := func(word string) (string, error) {
		s, _, err := lex.ProcessWord(word, shell.EnvsFromSlice(nil))
		return s, err
	}
	for _, c := range final.Commands {
		if e, ok := c.(instructions.SupportsSingleWordExpansion); ok {
			if err := e.Expand(expand); err != nil {
				t.Fatalf("%s: %s: %v", file, c, err)
			}
		}
	}
	return final
}

type imageConfig struct {
	User         string              `json:"User"`
	Entrypoint   []string            `json:"Entrypoint"`
	Cmd          []string            `json:"Cmd"`
	Env          []string            `json:"Env"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	Labels       map[string]string   `json:"Labels"`
}

type entry struct {
	hdr  *tar.Header
	data []byte // regular files only
}

// image is a docker-archive tarball: its configuration and its file
// system with the layers applied (whiteouts are not needed here).
type image struct {
	tags   []string
	config imageConfig
	files  map[string]entry // by path without leading "/" or "./"
}

func readImage(t *testing.T, file string) *image {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			t.Skipf("%s not there: test/cluster/images.sh (or make cluster-up) writes it", file)
		}
		t.Fatal(err)
	}
	defer f.Close()
	members := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		members[path.Clean(h.Name)] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("%s: manifest.json: %v (%d images)", file, err, len(manifest))
	}
	img := &image{tags: manifest[0].RepoTags, files: map[string]entry{}}
	var cfg struct {
		Config imageConfig `json:"config"`
	}
	if err := json.Unmarshal(members[manifest[0].Config], &cfg); err != nil {
		t.Fatalf("%s: config: %v", file, err)
	}
	img.config = cfg.Config
	for _, l := range manifest[0].Layers {
		var r io.Reader = strings.NewReader(string(members[l]))
		if zr, err := gzip.NewReader(strings.NewReader(string(members[l]))); err == nil {
			r = zr
		}
		lr := tar.NewReader(r)
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: layer %s: %v", file, l, err)
			}
			e := entry{hdr: h}
			if h.Typeflag == tar.TypeReg {
				if e.data, err = io.ReadAll(lr); err != nil {
					t.Fatal(err)
				}
			}
			img.files[strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = e
		}
	}
	return img
}

// passwdUID reports whether /etc/passwd of img names uid.
func (img *image) passwdUID(uid string) bool {
	for _, line := range strings.Split(string(img.files["etc/passwd"].data), "\n") {
		if f := strings.Split(line, ":"); len(f) > 3 && f[2] == uid {
			return true
		}
	}
	return false
}

// TestImagesMatchDockerfiles: the webhook and uploader images images.sh
// assembles have the user, entrypoint, binary, exposed ports and labels of
// the final stage of Dockerfile.webhook and Dockerfile.sidecar, and the base
// the binaries need (CA bundle, passwd, /tmp).
func TestImagesMatchDockerfiles(t *testing.T) {
	root := render.RepoRoot(t)
	for _, tc := range []struct{ dockerfile, archive, repository string }{
		{"Dockerfile.webhook", "webhook.tar", "ghcr.io/dumpcatcher/dumpcatcher-webhook"},
		{"Dockerfile.sidecar", "sidecar.tar", "ghcr.io/dumpcatcher/dumpcatcher"},
	} {
		t.Run(tc.dockerfile, func(t *testing.T) {
			archive := filepath.Join(imagesDir(), tc.archive)
			// An archive older than its Dockerfile is from before an edit
			// (make test must not fail on a stale local build): up.sh
			// rebuilds it.
			if a, err := os.Stat(archive); err == nil {
				if d, err := os.Stat(filepath.Join(root, tc.dockerfile)); err == nil && a.ModTime().Before(d.ModTime()) {
					t.Skipf("%s is older than %s: run test/cluster/images.sh", archive, tc.dockerfile)
				}
			}
			img := readImage(t, archive)
			if len(img.tags) != 1 || !strings.HasPrefix(img.tags[0], tc.repository+":") {
				t.Errorf("tags %v, want %s:<tag>", img.tags, tc.repository)
			}
			var copied []string
			wantLabels := map[string]string{}
			for _, c := range finalStage(t, filepath.Join(root, tc.dockerfile)).Commands {
				switch c := c.(type) {
				case *instructions.UserCommand:
					if img.config.User != c.User {
						t.Errorf("user %q, Dockerfile says %q", img.config.User, c.User)
					}
					uid, _, _ := strings.Cut(c.User, ":")
					if !img.passwdUID(uid) {
						t.Errorf("/etc/passwd has no uid %s", uid)
					}
				case *instructions.EntrypointCommand:
					if c.PrependShell {
						t.Fatalf("%s: not the exec form", c)
					}
					if !slices.Equal(img.config.Entrypoint, c.CmdLine) {
						t.Errorf("entrypoint %q, Dockerfile says %q", img.config.Entrypoint, c.CmdLine)
					}
				case *instructions.ExposeCommand:
					want := map[string]struct{}{}
					for _, p := range c.Ports {
						if !strings.Contains(p, "/") {
							p += "/tcp"
						}
						want[p] = struct{}{}
					}
					if len(want) != len(img.config.ExposedPorts) {
						t.Errorf("exposed ports %v, Dockerfile says %v", img.config.ExposedPorts, want)
					}
					for p := range want {
						if _, ok := img.config.ExposedPorts[p]; !ok {
							t.Errorf("port %s not exposed (Dockerfile %s)", p, c)
						}
					}
				case *instructions.CopyCommand:
					copied = append(copied, c.DestPath)
				case *instructions.LabelCommand:
					for _, kv := range c.Labels {
						wantLabels[kv.Key] = kv.Value
					}
				}
			}
			if len(copied) == 0 {
				t.Fatalf("final stage copies no binary")
			}
			for _, bin := range copied {
				e, ok := img.files[strings.TrimPrefix(bin, "/")]
				switch {
				case !ok:
					t.Errorf("no %s in the image", bin)
				case e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode&0o111 != 0o111 || len(e.data) == 0:
					t.Errorf("%s: not an executable file for everyone (mode %o, %d bytes)", bin, e.hdr.Mode, len(e.data))
				case !strings.HasPrefix(string(e.data), "\x7fELF"):
					t.Errorf("%s: not an ELF binary", bin)
				}
			}
			// The entrypoint runs the first binary copied; the others (the
			// webhook image's dumpcatcher-api) are run by their command.
			bin := copied[0]
			if len(img.config.Entrypoint) == 0 || img.config.Entrypoint[0] != bin {
				t.Errorf("entrypoint %q does not run the copied %s", img.config.Entrypoint, bin)
			}
			if tc.archive == "sidecar.tar" && bin != contract.BinaryPath {
				t.Errorf("uploader binary at %s; the webhook runs %s", bin, contract.BinaryPath)
			}
			for k, v := range wantLabels {
				if got := img.config.Labels[k]; got != v && !strings.Contains(v, "$") {
					t.Errorf("label %s=%q, Dockerfile says %q", k, got, v)
				} else if got == "" {
					t.Errorf("label %s missing", k)
				}
			}
			checkBase(t, img)
		})
	}
}

// checkBase: what distroless/static provides and the binaries use.
func checkBase(t *testing.T, img *image) {
	t.Helper()
	if e := img.files["etc/ssl/certs/ca-certificates.crt"]; !strings.Contains(string(e.data), "BEGIN CERTIFICATE") {
		t.Error("no CA bundle at /etc/ssl/certs/ca-certificates.crt")
	}
	if e, ok := img.files["tmp"]; !ok || e.hdr.Mode&0o7777 != 0o1777 {
		t.Error("/tmp missing or not 1777")
	}
	for _, sh := range []string{"bin/sh", "usr/bin/sh", "bin/bash"} {
		if _, ok := img.files[sh]; ok {
			t.Errorf("/%s in the image; the distroless images have no shell", sh)
		}
	}
}

// TestAppImageHasNoShell: the JRE image runs the OOM example as non-root
// and has no shell, so that the preStop dump has only what the webhook
// brings.
func TestAppImageHasNoShell(t *testing.T) {
	img := readImage(t, filepath.Join(imagesDir(), "jre.tar"))
	uid, _, _ := strings.Cut(img.config.User, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("user %q, want non-root", img.config.User)
	}
	for p, e := range img.files {
		if base := path.Base(p); base == "sh" || base == "bash" || base == "busybox" {
			t.Errorf("/%s in the JRE image (type %c)", p, e.hdr.Typeflag)
		}
	}
	for _, f := range []string{"opt/java/bin/java", "opt/java/lib/server/libjvm.so", "opt/oom/Oom.class"} {
		if _, ok := img.files[f]; !ok {
			t.Errorf("no /%s", f)
		}
	}
}

// TestCertManagerImages: the cert-manager images `images.sh --certmanager`
// assembles run a static binary at the path of cert-manager's own images
// (the chart gives only arguments), as a non-root user of the base.
func TestCertManagerImages(t *testing.T) {
	for _, c := range []string{"controller", "webhook", "cainjector"} {
		t.Run(c, func(t *testing.T) {
			img := readImage(t, filepath.Join(imagesDir(), "cm-"+c+".tar"))
			if repo := "local/cert-manager-" + c; len(img.tags) != 1 || !strings.HasPrefix(img.tags[0], repo+":") {
				t.Errorf("tags %v, want %s:<tag>", img.tags, repo)
			}
			bin := "/app/cmd/" + c + "/" + c
			if !slices.Equal(img.config.Entrypoint, []string{bin}) {
				t.Errorf("entrypoint %q, want [%s]", img.config.Entrypoint, bin)
			}
			uid, _, _ := strings.Cut(img.config.User, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("user %q, want a numeric non-root uid (the chart sets runAsNonRoot)", img.config.User)
			} else if !img.passwdUID(uid) {
				t.Errorf("/etc/passwd has no uid %s", uid)
			}
			e, ok := img.files[strings.TrimPrefix(bin, "/")]
			if !ok || e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode&0o111 != 0o111 {
				t.Fatalf("%s: missing or not executable for everyone", bin)
			}
			f, err := elf.NewFile(bytes.NewReader(e.data))
			if err != nil {
				t.Fatalf("%s: %v", bin, err)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s: dynamically linked (has an interpreter); the base has no C library", bin)
				}
			}
			checkBase(t, img)
		})
	}
}
