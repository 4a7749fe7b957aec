package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

// onePod waits for the first pod matching selector and returns it.
func (e *env) onePod(ns, selector string) corev1.Pod {
	e.t.Helper()
	var pod corev1.Pod
	e.eventually("a pod "+selector+" is created in "+ns, 2*time.Minute, func() error {
		pods, err := e.pods(ns, selector)
		if err != nil {
			return err
		}
		if len(pods) == 0 {
			return fmt.Errorf("no pod yet")
		}
		pod = pods[0]
		return nil
	})
	return pod
}

// restarts is the restart count of the pod's container name.
func restarts(p *corev1.Pod, name string) int32 {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c.RestartCount
		}
	}
	return 0
}

// checkNoShell checks scenario 10's app image in a running container: no
// shell and no JDK tool to exec (the image is a jlink'd JRE).
func (e *env) checkNoShell(ns, name string) {
	e.t.Helper()
	for _, cmd := range []string{"sh", "jcmd"} {
		out, err := e.run(nil, "kubectl", "-n", ns, "exec", name, "-c", "app", "--", cmd, "-help")
		if err == nil || !strings.Contains(err.Error(), "executable file not found") {
			e.t.Fatalf("pod %s: exec %s in the app container: want %q, got %v %s", name, cmd, "executable file not found", err, out)
		}
	}
	e.t.Logf("pod %s: the app container has no sh and no jcmd", name)
}

// checkNonRoot checks scenario 10's app container: the rig's JRE image, as a
// non-root uid the kubelet enforced (runAsNonRoot: it refuses to start a
// container as uid 0).
func checkNonRoot(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == "app" })
	if i < 0 {
		t.Fatalf("pod %s: no app container", pod.Name)
	}
	c := pod.Spec.Containers[i]
	psc := pod.Spec.SecurityContext
	nonRoot, uid := psc != nil && ptrTrue(psc.RunAsNonRoot), "the image's (65532)"
	if psc != nil && psc.RunAsUser != nil {
		uid = fmt.Sprint(*psc.RunAsUser)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			uid = fmt.Sprint(*sc.RunAsUser)
		}
	}
	if c.Image != jreImage || !nonRoot {
		t.Fatalf("pod %s: app image %s runAsNonRoot %v, want %s as non-root", pod.Name, c.Image, nonRoot, jreImage)
	}
	t.Logf("pod %s: app image %s (a JRE without shell or JDK) as uid %s, runAsNonRoot", pod.Name, c.Image, uid)
}

func ptrTrue(b *bool) bool { return b != nil && *b }

// dumpKey matches the key of a dump under a pod's prefix:
// <time>-<reason>-<file>.
var dumpKey = regexp.MustCompile(`/(\d{8}T\d{6}\.\d{3}Z)-[a-z]+-[^/]+$`)

// waitDumps waits until at least n objects under keyPrefix have infix (e.g.
// "-oom-", "-prestop-") in their names and returns those keys, oldest
// first.
func (e *env) waitDumps(what, ns, pod, keyPrefix, infix string, n int, timeout time.Duration) []string {
	e.t.Helper()
	var found []string
	e.eventually(what, timeout, func() error {
		keys, listing, err := e.objectsUnder(keyPrefix)
		if err != nil {
			return err
		}
		found = found[:0]
		for _, k := range keys {
			if strings.Contains(k[len(keyPrefix):], infix) {
				found = append(found, k)
			}
		}
		if len(found) >= n {
			return nil
		}
		logs, _ := e.run(nil, "kubectl", "-n", ns, "logs", pod, "-c", inject.SidecarName, "--tail=5")
		return fmt.Errorf("%d of %d %s objects under %s; listing:\n%s\nuploader:\n%s", len(found), n, infix, keyPrefix, listing, logs)
	})
	slices.Sort(found) // the keys start with the same prefix and then the time
	return found
}

// meta returns an object's user metadata (x-amz-meta-*, lower case without
// the prefix) as mc stat reports it.
func (e *env) meta(key string) map[string]string {
	e.t.Helper()
	var st struct {
		Size     int64             `json:"size"`
		Metadata map[string]string `json:"metadata"`
	}
	out := e.must(nil, e.mc, "stat", "--json", "e2e/"+bucket+"/"+key)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("mc stat %s: %v\n%s", key, err, out)
	}
	m := map[string]string{}
	for k, v := range st.Metadata {
		if k, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok {
			m[k] = v
		}
	}
	return m
}

// checkDump downloads the object, checks that it is a complete heap dump
// (decompressed when compressed) and that its metadata names the pod, the
// container and the reason. It returns the metadata.
func (e *env) checkDump(key, pod, container, reason string) map[string]string {
	e.t.Helper()
	m := e.meta(key)
	for k, want := range map[string]string{"pod": pod, "container": container, "reason": reason, "complete": "true"} {
		if m[k] != want {
			e.t.Errorf("%s: metadata %s=%q, want %q (all: %v)", key, k, m[k], want, m)
		}
	}
	file := filepath.Join(e.home, filepath.Base(key))
	defer os.Remove(file)
	e.must(nil, e.mc, "cp", "--quiet", "e2e/"+bucket+"/"+key, file)
	rep, err := hprof.InspectFile(file)
	if err != nil {
		e.t.Fatalf("%s: %v", key, err)
	}
	if !rep.Complete || !rep.HeaderValid {
		e.t.Fatalf("%s: not a complete heap dump: %+v", key, rep)
	}
	e.t.Logf("%s: %s heap dump, %s, %d records, %d MiB uncompressed; metadata pod=%s container=%s reason=%s",
		key, rep.Format, rep.Version, rep.Records, rep.Uncompressed>>20, m["pod"], m["container"], m["reason"])
	return m
}

// keyTime is the time at the start of a dump's object name: when the
// uploader claimed the finished file.
func keyTime(key string) (time.Time, error) {
	m := dumpKey.FindStringSubmatch(key)
	if m == nil {
		return time.Time{}, fmt.Errorf("%s: not <time>-<reason>-<file>", key)
	}
	return time.Parse("20060102T150405.000Z", m[1])
}

// incomplete lists the multipart uploads under keyPrefix that were started
// and never completed or aborted.
func (e *env) incomplete(keyPrefix string) string {
	e.t.Helper()
	return strings.TrimSpace(e.must(nil, e.mc, "ls", "--incomplete", "--recursive", "e2e/"+bucket+"/"+keyPrefix))
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
