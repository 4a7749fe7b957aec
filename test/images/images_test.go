// Package images tests `make images`, `make push` and `make chart-package`
// (the parts of `make release`): the images test/tools/imgbuild builds
// without Docker are reproducible, multi-platform, static, non-root, labelled
// as their Dockerfiles say, come with an SPDX SBOM that lists what the
// binaries were built from, and reach a real registry unchanged.
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"sigs.k8s.io/yaml"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
)

// testVersion is the VERSION the tests build with.
const testVersion = "0.0.0-test"

// platforms make images builds, and the ELF machine of each.
var platforms = map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}

// dockerfiles: every image the repository defines.
func dockerfiles(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(render.RepoRoot(t), "Dockerfile.*"))
	if err != nil || len(m) < 2 {
		t.Fatalf("Dockerfile.*: %v %v", m, err)
	}
	return m
}

type commit struct {
	revision string
	epoch    int64
}

func headCommit(t *testing.T) commit {
	t.Helper()
	out, err := exec.Command("git", "-C", render.RepoRoot(t), "log", "-1", "--format=%H %ct").Output()
	if err != nil {
		t.Fatalf("git log: %v", err)
	}
	f := strings.Fields(string(out))
	epoch, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return commit{f[0], epoch}
}

// makeTarget runs make in the repository root.
func makeTarget(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-s", "--no-print-directory", "-C", render.RepoRoot(t)}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

var built struct {
	sync.Mutex
	dirs map[string]string
}

// buildImages runs `make images` into a directory of its own for key (one
// build per key per test binary) and returns it.
func buildImages(t *testing.T, key string) string {
	t.Helper()
	realpart.Tool(t, "imgbuild")
	built.Lock()
	defer built.Unlock()
	if d, ok := built.dirs[key]; ok {
		return d
	}
	d, err := os.MkdirTemp("", "images-test-"+key+"-")
	if err != nil {
		t.Fatal(err)
	}
	c := headCommit(t)
	makeTarget(t, "images", "IMAGES_OUT="+d, "VERSION="+testVersion,
		"REVISION="+c.revision, "SOURCE_DATE_EPOCH="+strconv.FormatInt(c.epoch, 10))
	if built.dirs == nil {
		built.dirs = map[string]string{}
	}
	built.dirs[key] = d
	return d
}

func TestMain(m *testing.M) {
	rc := m.Run()
	for _, d := range built.dirs {
		os.RemoveAll(d)
	}
	os.Exit(rc)
}

// index opens the image index of the OCI layout out/title.
func index(t *testing.T, out, title string) v1.ImageIndex {
	t.Helper()
	lp, err := layout.FromPath(filepath.Join(out, title))
	if err != nil {
		t.Fatalf("%s: %v", title, err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testVersion {
		t.Fatalf("%s/index.json: %+v, want one index named %s", title, im.Manifests, testVersion)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func digestOf(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestImagesReproducible: two builds of the same commit into two
// directories give the same index digests and the same SBOMs.
func TestImagesReproducible(t *testing.T) {
	a, b := buildImages(t, "a"), buildImages(t, "b")
	for _, df := range dockerfiles(t) {
		title := finalStage(t, df).labels["org.opencontainers.image.title"]
		da, db := digestOf(t, index(t, a, title)), digestOf(t, index(t, b, title))
		if da != db {
			t.Errorf("%s: index %s, then %s", title, da, db)
		}
		sa, _ := os.ReadFile(filepath.Join(a, title+".spdx.json"))
		sb, _ := os.ReadFile(filepath.Join(b, title+".spdx.json"))
		if len(sa) == 0 || !bytes.Equal(sa, sb) {
			t.Errorf("%s.spdx.json: differs between the builds (or is empty)", title)
		}
	}
	la, _ := os.ReadFile(filepath.Join(a, "digests.txt"))
	lb, _ := os.ReadFile(filepath.Join(b, "digests.txt"))
	if len(la) == 0 || !bytes.Equal(la, lb) {
		t.Errorf("digests.txt: %q, then %q", la, lb)
	}
}

// stage: what a test needs of a Dockerfile's final stage (BuildKit's parser).
type stage struct {
	user       string
	entrypoint []string
	expose     []string
	labels     map[string]string // $VERSION as written
	copies     []string          // destinations
}

func finalStage(t *testing.T, file string) stage {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil || len(stages) == 0 {
		t.Fatalf("%s: %v", file, err)
	}
	st := stage{labels: map[string]string{}}
	for _, c := range stages[len(stages)-1].Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			st.user = c.User
		case *instructions.EntrypointCommand:
			st.entrypoint = c.CmdLine
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				st.expose = append(st.expose, p)
			}
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				st.labels[kv.Key] = strings.Trim(kv.Value, `"`)
			}
		case *instructions.CopyCommand:
			st.copies = append(st.copies, c.DestPath)
		}
	}
	sort.Strings(st.expose)
	return st
}

type fileEntry struct {
	hdr  tar.Header
	data []byte
}

// files flattens the layers of img (no whiteouts: imgbuild writes none).
func files(t *testing.T, img v1.Image) map[string]fileEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	fs := map[string]fileEntry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
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
			fs[path.Clean("/"+h.Name)] = fileEntry{*h, b}
		}
		rc.Close()
	}
	return fs
}

// spdx is the part of an SPDX 2.3 document the test reads.
type spdx struct {
	SPDXVersion  string `json:"spdxVersion"`
	DataLicense  string `json:"dataLicense"`
	CreationInfo struct {
		Created string `json:"created"`
	} `json:"creationInfo"`
	DocumentDescribes []string `json:"documentDescribes"`
	Packages          []struct {
		SPDXID, Name string
		VersionInfo  string `json:"versionInfo"`
		Purpose      string `json:"primaryPackagePurpose"`
	} `json:"packages"`
	Files []struct {
		SPDXID    string
		FileName  string `json:"fileName"`
		Comment   string `json:"comment"`
		Checksums []struct {
			Algorithm string `json:"algorithm"`
			Value     string `json:"checksumValue"`
		} `json:"checksums"`
	} `json:"files"`
	Relationships []struct {
		Element string `json:"spdxElementId"`
		Type    string `json:"relationshipType"`
		Related string `json:"relatedSpdxElement"`
	} `json:"relationships"`
}

// TestImages: each image has both platforms; per platform its
// configuration is the Dockerfile's final stage (user, entrypoint, ports,
// labels with version, revision, created and the SBOM's digest), its
// binaries are static ELF for that machine, its base is what
// distroless/static:nonroot gives, every timestamp is the commit time; the
// SBOM lists exactly the modules each binary's build info names, the Go
// version, the binaries by checksum and the base files.
func TestImages(t *testing.T) {
	out := buildImages(t, "a")
	c := headCommit(t)
	created := time.Unix(c.epoch, 0).UTC()
	for _, df := range dockerfiles(t) {
		st := finalStage(t, df)
		title := st.labels["org.opencontainers.image.title"]
		t.Run(title, func(t *testing.T) {
			sbomJSON, err := os.ReadFile(filepath.Join(out, title+".spdx.json"))
			if err != nil {
				t.Fatal(err)
			}
			var doc spdx
			if err := json.Unmarshal(sbomJSON, &doc); err != nil {
				t.Fatalf("%s.spdx.json: %v", title, err)
			}
			sum := sha256.Sum256(sbomJSON)

			idx := index(t, out, title)
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			sbomBinaries := map[string]string{} // platform path -> sha256 in the image
			modules := map[string]string{}      // path -> version, from the binaries' build info
			for _, m := range im.Manifests {
				if m.Platform == nil {
					t.Fatalf("manifest %s without platform", m.Digest)
				}
				plat := m.Platform.OS + "/" + m.Platform.Architecture
				got = append(got, plat)
				img, err := idx.Image(m.Digest)
				if err != nil {
					t.Fatal(err)
				}
				cf, err := img.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				if cf.OS+"/"+cf.Architecture != plat {
					t.Errorf("%s: config says %s/%s", plat, cf.OS, cf.Architecture)
				}
				if !cf.Created.Time.Equal(created) {
					t.Errorf("%s: created %v, want the commit time %v", plat, cf.Created.Time, created)
				}
				wantLabels := map[string]string{}
				for k, v := range st.labels {
					wantLabels[k] = strings.ReplaceAll(v, "$VERSION", testVersion)
				}
				wantLabels["org.opencontainers.image.revision"] = c.revision
				wantLabels["org.opencontainers.image.created"] = created.Format(time.RFC3339)
				wantLabels["io.dumpcatcher.sbom"] = "sha256:" + hex.EncodeToString(sum[:])
				var ports []string
				for p := range cf.Config.ExposedPorts {
					ports = append(ports, p)
				}
				sort.Strings(ports)
				type cfgView struct {
					User       string
					Entrypoint []string
					Ports      []string
					Labels     map[string]string
					WorkingDir string
				}
				if d := cmp.Diff(cfgView{st.user, st.entrypoint, st.expose, wantLabels, "/home/nonroot"},
					cfgView{cf.Config.User, cf.Config.Entrypoint, ports, cf.Config.Labels, cf.Config.WorkingDir}); d != "" {
					t.Errorf("%s: configuration (-Dockerfile +image):\n%s", plat, d)
				}
				if uid, _, _ := strings.Cut(cf.Config.User, ":"); uid != "65532" {
					t.Errorf("%s: user %q, want 65532 (nonroot)", plat, cf.Config.User)
				}

				fs := files(t, img)
				for p, e := range fs {
					if !e.hdr.ModTime.Equal(created) {
						t.Errorf("%s: %s dated %v, want the commit time", plat, p, e.hdr.ModTime)
					}
					if base := path.Base(p); base == "sh" || base == "bash" || base == "busybox" {
						t.Errorf("%s: shell %s in the image", plat, p)
					}
				}
				checkBase(t, plat, fs)
				if len(st.copies) == 0 {
					t.Fatal("the Dockerfile copies no binary")
				}
				for _, dest := range st.copies {
					e, ok := fs[dest]
					if !ok {
						t.Errorf("%s: no %s", plat, dest)
						continue
					}
					if e.hdr.Mode != 0o755 || e.hdr.Uid != 0 || e.hdr.Gid != 0 {
						t.Errorf("%s: %s mode %o owner %d:%d, want 0755 root", plat, dest, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid)
					}
					checkStaticELF(t, plat+" "+dest, e.data, platforms[plat])
					bi, err := buildinfo.Read(bytes.NewReader(e.data))
					if err != nil {
						t.Fatalf("%s: %s: %v", plat, dest, err)
					}
					for _, d := range bi.Deps {
						modules[d.Path] = d.Version
					}
					if bi.GoVersion != runtime.Version() {
						t.Errorf("%s: %s built with %s, the test with %s", plat, dest, bi.GoVersion, runtime.Version())
					}
					s := sha256.Sum256(e.data)
					sbomBinaries[plat+" "+dest] = hex.EncodeToString(s[:])
				}
				if title == "dumpcatcher" && !slices.Contains(st.copies, contract.BinaryPath) {
					t.Errorf("the uploader is not at %s, where the webhook runs it", contract.BinaryPath)
				}
			}
			sort.Strings(got)
			if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
				t.Errorf("platforms %v, want %v", got, want)
			}

			// The SBOM.
			if doc.SPDXVersion != "SPDX-2.3" || doc.DataLicense != "CC0-1.0" || doc.CreationInfo.Created != created.Format(time.RFC3339) {
				t.Errorf("SBOM header: %s %s %s", doc.SPDXVersion, doc.DataLicense, doc.CreationInfo.Created)
			}
			wantPkgs := map[string]string{title: testVersion, "stdlib": runtime.Version(), "ca-certificates": debVersion(t, "ca-certificates")}
			for p, v := range modules {
				wantPkgs[p] = v
			}
			gotPkgs := map[string]string{}
			for _, p := range doc.Packages {
				gotPkgs[p.Name] = p.VersionInfo
			}
			if d := cmp.Diff(wantPkgs, gotPkgs); d != "" {
				t.Errorf("SBOM packages (-image's binaries +SBOM):\n%s", d)
			}
			gotBinaries := map[string]string{}
			for _, f := range doc.Files {
				if plat, ok := strings.CutPrefix(f.Comment, "platform "); ok {
					for _, c := range f.Checksums {
						if c.Algorithm == "SHA256" {
							gotBinaries[plat+" "+strings.TrimPrefix(f.FileName, ".")] = c.Value
						}
					}
				}
			}
			if d := cmp.Diff(sbomBinaries, gotBinaries); d != "" {
				t.Errorf("SBOM binaries (-image +SBOM):\n%s", d)
			}
			var names []string
			for _, f := range doc.Files {
				names = append(names, f.FileName)
			}
			for _, f := range []string{"./etc/passwd", "./etc/group", "./etc/ssl/certs/ca-certificates.crt"} {
				if !slices.Contains(names, f) {
					t.Errorf("SBOM: no file %s among %v", f, names)
				}
			}
			if len(doc.DocumentDescribes) != 1 || doc.Packages[0].SPDXID != doc.DocumentDescribes[0] || doc.Packages[0].Purpose != "CONTAINER" {
				t.Errorf("SBOM describes %v, first package %+v", doc.DocumentDescribes, doc.Packages[0])
			}
		})
	}
}

// TestSidecarSBOMNamesMinio: the uploader's SBOM lists the S3 client at the
// version go.mod requires (a fixed fact the generic check above would miss
// if the build info were empty).
func TestSidecarSBOMNamesMinio(t *testing.T) {
	out := buildImages(t, "a")
	gomod, err := os.ReadFile(filepath.Join(render.RepoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, l := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "github.com/minio/minio-go/v7" {
			want = f[1]
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "dumpcatcher.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc spdx
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range doc.Packages {
		found = found || p.Name == "github.com/minio/minio-go/v7" && p.VersionInfo == want && want != ""
	}
	if !found {
		t.Errorf("dumpcatcher.spdx.json does not list github.com/minio/minio-go/v7 %s", want)
	}
}

func checkBase(t *testing.T, plat string, fs map[string]fileEntry) {
	t.Helper()
	if e := fs["/etc/ssl/certs/ca-certificates.crt"]; !bytes.Contains(e.data, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("%s: no CA bundle", plat)
	}
	if !bytes.Contains(fs["/etc/passwd"].data, []byte("nonroot:x:65532:65532:")) ||
		!bytes.Contains(fs["/etc/group"].data, []byte("nonroot:x:65532:")) {
		t.Errorf("%s: passwd/group without nonroot 65532", plat)
	}
	if e, ok := fs["/tmp"]; !ok || e.hdr.Mode != 0o1777 {
		t.Errorf("%s: /tmp missing or not 1777", plat)
	}
	if e, ok := fs["/home/nonroot"]; !ok || e.hdr.Uid != 65532 || e.hdr.Typeflag != tar.TypeDir {
		t.Errorf("%s: /home/nonroot missing or not owned by 65532", plat)
	}
}

// checkStaticELF: an executable for machine without an interpreter or
// dynamic section (the base has no C library).
func checkStaticELF(t *testing.T, what string, data []byte, machine elf.Machine) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: not ELF: %v", what, err)
		return
	}
	if f.Machine != machine || f.Type != elf.ET_EXEC {
		t.Errorf("%s: %v %v, want an executable for %v", what, f.Machine, f.Type, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: dynamically linked (%v)", what, p.Type)
		}
	}
}

func debVersion(t *testing.T, pkg string) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		t.Fatalf("dpkg-query %s: %v", pkg, err)
	}
	return string(out)
}

// startRegistry runs the distribution registry on 127.0.0.1 with storage
// in a temporary directory and returns host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := realpart.Tool(t, "registry")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "storage"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("registry exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry not ready on %s after 30s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPush: make push to a registry on 127.0.0.1, then pull every image by
// digest: the index digest, both platforms and each platform's manifest
// digest are the local ones; the tag resolves to the same index.
func TestPush(t *testing.T) {
	out := buildImages(t, "a")
	addr := startRegistry(t)
	c := headCommit(t)
	registry := addr + "/dumpcatcher"
	makeTarget(t, "push", "IMAGES_OUT="+out, "REGISTRY="+registry, "VERSION="+testVersion,
		"REVISION="+c.revision, "SOURCE_DATE_EPOCH="+strconv.FormatInt(c.epoch, 10))
	for _, df := range dockerfiles(t) {
		title := finalStage(t, df).labels["org.opencontainers.image.title"]
		local := index(t, out, title)
		ld := digestOf(t, local)
		ref, err := name.NewDigest(registry + "/" + title + "@" + ld.String())
		if err != nil {
			t.Fatal(err)
		}
		remoteIdx, err := remote.Index(ref)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if rd := digestOf(t, remoteIdx); rd != ld {
			t.Errorf("%s: pulled index %s, local %s", title, rd, ld)
		}
		lm, _ := local.IndexManifest()
		rm, err := remoteIdx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(lm.Manifests, rm.Manifests); d != "" || len(rm.Manifests) != len(platforms) {
			t.Errorf("%s: manifests (-local +registry):\n%s", title, d)
		}
		for _, m := range rm.Manifests {
			img, err := remote.Image(ref.Context().Digest(m.Digest.String()), remote.WithPlatform(*m.Platform))
			if err != nil {
				t.Fatalf("pull %s %s: %v", title, m.Platform, err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatalf("%s %s: config: %v", title, m.Platform, err)
			}
			if _, ok := platforms[cf.OS+"/"+cf.Architecture]; !ok || cf.Architecture != m.Platform.Architecture {
				t.Errorf("%s: manifest for %s has a %s/%s configuration", title, m.Platform, cf.OS, cf.Architecture)
			}
			if _, err := img.Layers(); err != nil {
				t.Errorf("%s %s: layers: %v", title, m.Platform, err)
			}
		}
		checkSBOMReferrer(t, ref, filepath.Join(out, title+".spdx.json"))
		tagged, err := name.NewTag(registry + "/" + title + ":" + testVersion)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(tagged)
		if err != nil || desc.Digest != ld {
			t.Errorf("%s: tag %s is %v (%v), want %s", title, tagged, desc, err, ld)
		}
	}
}

// checkSBOMReferrer: the registry lists one artifact referring to the index
// ref (distribution v3.0.0 has no referrers API: go-containerregistry reads
// the fallback tag sha256-<digest>, whose entry carries the config's media
// type), an SPDX artifact whose layer is the SBOM file.
func checkSBOMReferrer(t *testing.T, ref name.Digest, file string) {
	t.Helper()
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := remote.Referrers(ref)
	if err != nil {
		t.Fatalf("referrers of %s: %v", ref, err)
	}
	im, err := refs.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("referrers of %s: %+v, want the SBOM artifact", ref, im.Manifests)
	}
	desc, err := remote.Get(ref.Context().Digest(im.Manifests[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		ArtifactType string
		Layers       []v1.Descriptor
		Subject      *v1.Descriptor
	}
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != "application/spdx+json" || len(m.Layers) != 1 || m.Subject == nil || m.Subject.Digest.String() != ref.DigestStr() {
		t.Fatalf("SBOM artifact: type %q, layers %+v, subject %+v", m.ArtifactType, m.Layers, m.Subject)
	}
	l, err := remote.Layer(ref.Context().Digest(m.Layers[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SBOM artifact of %s: %d bytes, not the %d of %s", ref, len(got), len(want), filepath.Base(file))
	}
}

// TestChartPackage: make chart-package VERSION=x.y.z packages the chart
// with version and appVersion x.y.z, and the packaged chart's images are
// tagged x.y.z: the webhook's and the uploader's it injects.
func TestChartPackage(t *testing.T) {
	render.Helm(t)
	out := t.TempDir()
	const version = "1.2.3"
	makeTarget(t, "chart-package", "VERSION="+version, "RELEASE_OUT="+out)
	tgz := filepath.Join(out, "dumpcatcher-"+version+".tgz")
	f, err := os.Open(tgz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var chart struct {
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("no dumpcatcher/Chart.yaml in the package")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "dumpcatcher/Chart.yaml" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &chart); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if chart.Name != "dumpcatcher" || chart.Version != version || chart.AppVersion != version {
		t.Errorf("Chart.yaml: %+v, want dumpcatcher version and appVersion %s", chart, version)
	}
	manifest, err := render.Run(t, "template", "dumpcatcher", tgz, "--namespace", "dumpcatcher")
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{"ghcr.io/dumpcatcher/dumpcatcher-webhook:" + version, "ghcr.io/dumpcatcher/dumpcatcher:" + version} {
		if !strings.Contains(manifest, img) {
			t.Errorf("the packaged chart does not use %s", img)
		}
	}
	if strings.Contains(manifest, "v0.1.0") {
		t.Error("the packaged chart still names v0.1.0 (the source chart's appVersion)")
	}
}
