// imgbuild builds the project's container images without a Docker engine
// (make images) and pushes them (make push).
//
//	imgbuild build -src . -out bin/images -version 1.2.3 -revision $(git rev-parse HEAD) \
//	  -epoch $(git log -1 --format=%ct) Dockerfile.webhook Dockerfile.sidecar
//	imgbuild push -in bin/images -registry 127.0.0.1:5000/dumpcatcher -tag 1.2.3
//
// Each Dockerfile's final stage says what its image is (see dockerfile.go):
// the binaries it copies (each ./cmd/NAME, cross-built with CGO_ENABLED=0,
// -trimpath, -buildvcs=false for every platform), user, entrypoint, ports
// and labels. The base is not pulled: instead of
// gcr.io/distroless/static-debian12:nonroot imgbuild writes, from scratch,
// what that base gives the static binaries: /etc/passwd and /etc/group with
// root, nobody and nonroot (65532), /etc/nsswitch.conf, the CA bundle of
// this machine's Debian package ca-certificates, /tmp (1777) and
// /home/nonroot (65532, the working directory).
//
// Reproducible: every tar entry is sorted, owned by uid/gid 0 (65532 for
// /home/nonroot), with a fixed mode and the -epoch time (SOURCE_DATE_EPOCH,
// the commit time), layers are gzipped by the standard library without a
// name or time, and the configurations' created times are -epoch too; the
// same commit and toolchain give the same index digests.
//
// Output per image NAME (the org.opencontainers.image.title label):
// OUT/NAME/, an OCI image layout whose index.json points at the
// multi-platform image index (annotated with the ref name VERSION), and
// OUT/NAME.spdx.json, its SPDX 2.3 SBOM; the image's label
// io.dumpcatcher.sbom carries the SBOM's sha256 digest. OUT/digests.txt
// lists NAME and index digest, one image a line.
//
// push writes each index as REGISTRY/NAME:TAG and the SBOM as an OCI 1.1
// artifact (artifactType application/spdx+json) whose subject is the index,
// found through the referrers API or its fallback tag sha256-<digest>.
// Credentials: REGISTRY_USERNAME and REGISTRY_PASSWORD, else the Docker
// config (~/.docker/config.json) and its credential helpers.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("imgbuild: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: imgbuild build|push [flags] (see the package comment)")
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = buildCmd(os.Args[2:])
	case "push":
		err = pushCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: build or push", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

type buildOpts struct {
	src, out, version, revision string
	epoch                       time.Time
	platforms                   []v1.Platform
	caFile, caPackage           string
}

func buildCmd(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	src := fs.String("src", ".", "the repository (module root)")
	out := fs.String("out", "bin/images", "output directory")
	version := fs.String("version", "", "version: the binaries' main.version, the version label and the layout's ref name")
	revision := fs.String("revision", "", "the commit (org.opencontainers.image.revision)")
	epoch := fs.Int64("epoch", -1, "SOURCE_DATE_EPOCH: the commit time in seconds, every timestamp in the images")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH list")
	caFile := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to ship (from the Debian package -ca-package)")
	caPackage := fs.String("ca-package", "ca-certificates", "Debian package the CA bundle comes from (its version goes into the SBOM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || *revision == "" || *epoch < 0 || fs.NArg() == 0 {
		return fmt.Errorf("build: -version, -revision, -epoch and at least one Dockerfile are required")
	}
	o := buildOpts{src: *src, out: *out, version: *version, revision: *revision,
		epoch: time.Unix(*epoch, 0).UTC(), caFile: *caFile, caPackage: *caPackage}
	for _, p := range strings.Split(*platforms, ",") {
		os, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok || os != "linux" || arch == "" {
			return fmt.Errorf("-platforms: %q is not linux/ARCH", p)
		}
		o.platforms = append(o.platforms, v1.Platform{OS: os, Architecture: arch})
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	var digests strings.Builder
	for _, df := range fs.Args() {
		title, d, err := buildImage(o, filepath.Join(o.src, df))
		if err != nil {
			return err
		}
		fmt.Fprintf(&digests, "%s %s\n", title, d)
	}
	return os.WriteFile(filepath.Join(o.out, "digests.txt"), []byte(digests.String()), 0o644)
}

// file is one tar entry of a layer.
type file struct {
	path     string // absolute
	mode     int64  // permission bits (and sticky)
	uid      int
	dir      bool
	data     []byte
	isBinary bool
}

func buildImage(o buildOpts, dockerfile string) (string, v1.Hash, error) {
	st, err := parseFinalStage(dockerfile)
	if err != nil {
		return "", v1.Hash{}, err
	}
	title := st.Labels["org.opencontainers.image.title"]
	base, err := baseFiles(o.caFile)
	if err != nil {
		return "", v1.Hash{}, err
	}
	baseLayer, err := layer(base, o.epoch)
	if err != nil {
		return "", v1.Hash{}, err
	}
	sbomFiles := []sbomFile{}
	for _, f := range base {
		if !f.dir {
			sbomFiles = append(sbomFiles, sbomFile{Path: f.path, Data: f.data})
		}
	}
	tmp, err := os.MkdirTemp("", "imgbuild-")
	if err != nil {
		return "", v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	type platformImage struct {
		platform v1.Platform
		files    []file
	}
	var images []platformImage
	for _, p := range o.platforms {
		var files []file
		for _, b := range st.Binaries {
			data, err := goBuild(o, p, b.Name, tmp)
			if err != nil {
				return "", v1.Hash{}, err
			}
			files = append(files, file{path: b.Dest, mode: 0o755, data: data, isBinary: true})
			sbomFiles = append(sbomFiles, sbomFile{Path: b.Dest, Platform: p.OS + "/" + p.Architecture, Data: data, Binary: true})
		}
		images = append(images, platformImage{p, withParents(files)})
	}
	caVersion := ""
	if o.caPackage != "" {
		if caVersion, err = debVersion(o.caPackage); err != nil {
			return "", v1.Hash{}, err
		}
	}
	sbom, err := makeSBOM(title, o.version, o.revision, o.epoch, sbomFiles, o.caPackage, caVersion)
	if err != nil {
		return "", v1.Hash{}, err
	}
	sbomJSON, err := json.MarshalIndent(sbom, "", "  ")
	if err != nil {
		return "", v1.Hash{}, err
	}
	sbomJSON = append(sbomJSON, '\n')
	sbomSum := sha256.Sum256(sbomJSON)

	labels := map[string]string{}
	for k, v := range st.Labels {
		labels[k] = strings.ReplaceAll(strings.ReplaceAll(v, "${VERSION}", o.version), "$VERSION", o.version)
	}
	labels["org.opencontainers.image.revision"] = o.revision
	labels["org.opencontainers.image.created"] = o.epoch.Format(time.RFC3339)
	labels["io.dumpcatcher.sbom"] = "sha256:" + hex.EncodeToString(sbomSum[:])

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pi := range images {
		appLayer, err := layer(pi.files, o.epoch)
		if err != nil {
			return "", v1.Hash{}, err
		}
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		img, err = mutate.Append(img,
			mutate.Addendum{Layer: baseLayer, History: v1.History{Created: v1.Time{Time: o.epoch},
				CreatedBy: "imgbuild: base (distroless/static:nonroot equivalent)", Comment: "passwd, group, nsswitch.conf, CA bundle, /tmp, /home/nonroot"}},
			mutate.Addendum{Layer: appLayer, History: v1.History{Created: v1.Time{Time: o.epoch},
				CreatedBy: "imgbuild: " + filepath.Base(dockerfile) + " binaries"}},
		)
		if err != nil {
			return "", v1.Hash{}, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return "", v1.Hash{}, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = pi.platform.OS, pi.platform.Architecture
		cf.Created = v1.Time{Time: o.epoch}
		cf.Config = v1.Config{
			User:       st.User,
			Entrypoint: st.Entrypoint,
			Cmd:        st.Cmd,
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			WorkingDir: "/home/nonroot",
			Labels:     labels,
		}
		if len(st.Expose) > 0 {
			cf.Config.ExposedPorts = map[string]struct{}{}
			for _, p := range st.Expose {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				cf.Config.ExposedPorts[p] = struct{}{}
			}
		}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return "", v1.Hash{}, err
		}
		p := pi.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	dir := filepath.Join(o.out, title)
	if err := os.RemoveAll(dir); err != nil {
		return "", v1.Hash{}, err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", v1.Hash{}, err
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": o.version})); err != nil {
		return "", v1.Hash{}, err
	}
	if err := os.WriteFile(filepath.Join(o.out, title+".spdx.json"), sbomJSON, 0o644); err != nil {
		return "", v1.Hash{}, err
	}
	d, err := idx.Digest()
	if err != nil {
		return "", v1.Hash{}, err
	}
	log.Printf("%s %s (%d platforms, SBOM %s.spdx.json)", title, d, len(images), title)
	return title, d, nil
}

// goBuild cross-builds ./cmd/NAME of the repository for p and returns the
// binary.
func goBuild(o buildOpts, p v1.Platform, name, tmp string) ([]byte, error) {
	out := filepath.Join(tmp, p.OS+"-"+p.Architecture, name)
	cmd := exec.Command("go", "build", "-C", o.src, "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+o.version, "-o", out, "./cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-mod=readonly")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/%s for %s/%s: %v", name, p.OS, p.Architecture, err)
	}
	return os.ReadFile(out)
}

// baseFiles: what gcr.io/distroless/static-debian12:nonroot gives the
// project's static binaries.
func baseFiles(caFile string) ([]file, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-ca-bundle: %v (install the Debian package ca-certificates)", err)
	}
	if !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		return nil, fmt.Errorf("-ca-bundle %s holds no certificate", caFile)
	}
	files := []file{
		{path: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		{path: "/etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		{path: "/tmp", mode: 0o1777, dir: true},
		{path: "/home/nonroot", mode: 0o700, dir: true, uid: 65532},
	}
	return withParents(files), nil
}

// withParents adds the missing parent directories (0755, root) and sorts.
func withParents(files []file) []file {
	have := map[string]bool{}
	for _, f := range files {
		have[f.path] = true
	}
	for _, f := range files {
		for d := path.Dir(f.path); d != "/" && !have[d]; d = path.Dir(d) {
			have[d] = true
			files = append(files, file{path: d, mode: 0o755, dir: true})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	return files
}

// layer writes files (sorted) as a gzipped tar with fixed owners, modes
// and times.
func layer(files []file, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{
			Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode, Uid: f.uid, Gid: f.uid,
			ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(f.data)),
		}
		if f.dir {
			h.Name += "/"
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// debVersion reads the installed version of a Debian package from dpkg's
// status file.
func debVersion(pkg string) (string, error) {
	f, err := os.Open("/var/lib/dpkg/status")
	if err != nil {
		return "", fmt.Errorf("-ca-package %s: %v (set -ca-package= to leave the package out of the SBOM)", pkg, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	in := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "":
			in = false
		case strings.HasPrefix(l, "Package: "):
			in = strings.TrimPrefix(l, "Package: ") == pkg
		case in && strings.HasPrefix(l, "Version: "):
			return strings.TrimPrefix(l, "Version: "), nil
		}
	}
	return "", fmt.Errorf("-ca-package %s: not installed (dpkg)", pkg)
}

func pushCmd(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	in := fs.String("in", "bin/images", "the output directory of imgbuild build")
	registry := fs.String("registry", "", "host[:port]/path the images go to, as REGISTRY/NAME:TAG")
	var tags list
	fs.Var(&tags, "tag", "tag to push (repeatable; default: the layout's ref name, the build's -version)")
	insecure := fs.Bool("insecure", false, "plain http (127.0.0.1 and localhost are plain http anyway)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" {
		return fmt.Errorf("push: -registry (make push REGISTRY=host[:port]/path) is required")
	}
	entries, err := os.ReadDir(*in)
	if err != nil {
		return fmt.Errorf("push: -in %s: %v (run make images first)", *in, err)
	}
	var nopts []name.Option
	if *insecure {
		nopts = append(nopts, name.Insecure)
	}
	var kc authn.Keychain = authn.DefaultKeychain
	if u, p := os.Getenv("REGISTRY_USERNAME"), os.Getenv("REGISTRY_PASSWORD"); u != "" && p != "" {
		kc = staticKeychain{authn.FromConfig(authn.AuthConfig{Username: u, Password: p})}
	}
	pushed := 0
	for _, e := range entries {
		dir := filepath.Join(*in, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			continue
		}
		lp, err := layout.FromPath(dir)
		if err != nil {
			return err
		}
		top, err := lp.ImageIndex()
		if err != nil {
			return err
		}
		im, err := top.IndexManifest()
		if err != nil {
			return err
		}
		if len(im.Manifests) != 1 {
			return fmt.Errorf("%s: %d entries in index.json, want the one image index imgbuild writes", dir, len(im.Manifests))
		}
		desc := im.Manifests[0]
		idx, err := top.ImageIndex(desc.Digest)
		if err != nil {
			return err
		}
		ts := tags
		if len(ts) == 0 {
			ts = list{desc.Annotations["org.opencontainers.image.ref.name"]}
		}
		for _, tag := range ts {
			ref, err := name.NewTag(strings.TrimSuffix(*registry, "/")+"/"+e.Name()+":"+tag, nopts...)
			if err != nil {
				return fmt.Errorf("push: REGISTRY %q or tag %q: %v", *registry, tag, err)
			}
			if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(kc)); err != nil {
				return fmt.Errorf("push %s: %v", ref, err)
			}
			fmt.Printf("%s@%s\n", ref, desc.Digest)
		}
		if err := pushSBOM(filepath.Join(*in, e.Name()+".spdx.json"), strings.TrimSuffix(*registry, "/")+"/"+e.Name(),
			desc, nopts, kc); err != nil {
			return err
		}
		pushed++
	}
	if pushed == 0 {
		return fmt.Errorf("push: no image layout in %s (run make images first)", *in)
	}
	return nil
}

// pushSBOM pushes the image's SBOM as an OCI 1.1 artifact whose subject is
// the image index, so that the registry's referrers API (or the fallback
// tag sha256-<digest>) lists it next to the image: artifactType
// application/spdx+json, the empty config, the SBOM as its one layer.
func pushSBOM(file, repo string, subject v1.Descriptor, nopts []name.Option, kc authn.Keychain) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("push: SBOM: %v (run make images)", err)
	}
	r, err := name.NewRepository(repo, nopts...)
	if err != nil {
		return err
	}
	auth := remote.WithAuthFromKeychain(kc)
	emptyConfig := []byte("{}")
	blobs := []struct {
		data []byte
		mt   types.MediaType
	}{{emptyConfig, emptyMediaType}, {data, sbomArtifactType}}
	var descs []v1.Descriptor
	for _, b := range blobs {
		l := static.NewLayer(b.data, b.mt)
		if err := remote.WriteLayer(r, l, auth); err != nil {
			return fmt.Errorf("push SBOM blob to %s: %v", r, err)
		}
		d, _ := l.Digest()
		descs = append(descs, v1.Descriptor{MediaType: b.mt, Digest: d, Size: int64(len(b.data))})
	}
	raw, err := json.Marshal(artifactManifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: sbomArtifactType,
		Config: descs[0], Layers: descs[1:],
		Subject: &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
	})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	ref := r.Digest("sha256:" + hex.EncodeToString(sum[:]))
	if err := remote.Put(ref, rawManifest{raw, types.OCIManifestSchema1}, auth); err != nil {
		return fmt.Errorf("push SBOM %s: %v", ref, err)
	}
	fmt.Printf("%s (SBOM of %s)\n", ref, subject.Digest)
	return nil
}

const (
	// sbomArtifactType is the artifact type and layer media type of the SBOM.
	sbomArtifactType types.MediaType = "application/spdx+json"
	emptyMediaType   types.MediaType = "application/vnd.oci.empty.v1+json"
)

type artifactManifest struct {
	SchemaVersion int64           `json:"schemaVersion"`
	MediaType     types.MediaType `json:"mediaType"`
	ArtifactType  types.MediaType `json:"artifactType"`
	Config        v1.Descriptor   `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
	Subject       *v1.Descriptor  `json:"subject"`
}

type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }
