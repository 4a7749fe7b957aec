// mkimg assembles a container image without a Docker engine: plain tar
// layers on an empty base plus the image configuration from flags, written
// as a docker-archive tarball that `ctr images import` loads into
// containerd. test/cluster/images.sh uses it for the e2e rig's images.
//
//	mkimg -tag ghcr.io/dumpcatcher/dumpcatcher:e2e -out sidecar.tar \
//	  -layer base.tar -layer bin.tar -user 65532:65532 \
//	  -entrypoint '["/usr/local/bin/dumpcatcher"]' -expose 8080 -label k=v
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	log.SetFlags(0)
	log.SetPrefix("mkimg: ")
	var layers, envs, labels, expose list
	tag := flag.String("tag", "", "image reference the archive carries, e.g. ghcr.io/dumpcatcher/dumpcatcher:e2e")
	out := flag.String("out", "", "docker-archive tarball to write")
	entrypoint := flag.String("entrypoint", "", `entrypoint as a JSON array (the Dockerfile's exec form), e.g. ["/bin/app"]`)
	cmd := flag.String("cmd", "", "command as a JSON array")
	user := flag.String("user", "", "user[:group] the container runs as")
	workdir := flag.String("workdir", "", "working directory")
	flag.Var(&layers, "layer", "uncompressed tar file of one layer, bottom first (repeatable)")
	flag.Var(&envs, "env", "KEY=VALUE (repeatable; PATH has a default)")
	flag.Var(&labels, "label", "KEY=VALUE (repeatable)")
	flag.Var(&expose, "expose", "port[/proto] (repeatable)")
	flag.Parse()
	if *tag == "" || *out == "" || len(layers) == 0 {
		log.Fatal("need -tag, -out and at least one -layer")
	}

	img := empty.Image
	for _, l := range layers {
		layer, err := tarball.LayerFromFile(l)
		if err != nil {
			log.Fatalf("layer %s: %v", l, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			log.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		log.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	// A fixed creation time: the same inputs give the same image ID.
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	c := &cf.Config
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range envs {
		k, _, ok := strings.Cut(e, "=")
		if !ok {
			log.Fatalf("-env %q: want KEY=VALUE", e)
		}
		if k == "PATH" {
			c.Env[0] = e
			continue
		}
		c.Env = append(c.Env, e)
	}
	if c.Entrypoint, err = jsonArray("entrypoint", *entrypoint); err != nil {
		log.Fatal(err)
	}
	if c.Cmd, err = jsonArray("cmd", *cmd); err != nil {
		log.Fatal(err)
	}
	c.User, c.WorkingDir = *user, *workdir
	if len(labels) > 0 {
		c.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				log.Fatalf("-label %q: want KEY=VALUE", l)
			}
			c.Labels[k] = v
		}
	}
	if len(expose) > 0 {
		c.ExposedPorts = map[string]struct{}{}
		for _, p := range expose {
			if !strings.Contains(p, "/") {
				p += "/tcp" // as docker build records EXPOSE 9443
			}
			c.ExposedPorts[p] = struct{}{}
		}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		log.Fatal(err)
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		log.Fatal(err)
	}
	if err := tarball.WriteToFile(*out, ref, img); err != nil {
		log.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "mkimg: %s -> %s (id %s)\n", ref, *out, id)
}

func jsonArray(flagName, s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, fmt.Errorf("-%s %q: want a JSON array of strings: %v", flagName, s, err)
	}
	return a, nil
}
