package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

// TestRestrictedNamespace (scenario 7): in a namespace that enforces the Pod
// Security Standard restricted, the injected pod (uploader, volume and hook
// included) is admitted, runs, and its OOM dump arrives.
func TestRestrictedNamespace(t *testing.T) {
	e := setup(t)
	const ns = "e2e-restricted"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	e.kubectl("label", "--overwrite", "namespace", ns,
		"pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")

	// The API server really enforces it here: a pod that runs as root is
	// refused.
	root := holdPod(ns, "root", nil)
	c := root["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	c["securityContext"] = map[string]any{"runAsUser": 0}
	if out, err := e.run([]byte(mustJSON(t, root)), "kubectl", "create", "--dry-run=server", "-f", "-"); err == nil ||
		!strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
		t.Fatalf("a root pod in %s: want a PodSecurity refusal, got %v %s", ns, err, out)
	}

	e.apply(oomApp(e, ns)...)
	pod := e.onePod(ns, "app=oom-app")
	checkInjected(t, &pod, e.destination, "-XX:+UseSerialGC")
	keyPrefix := fmt.Sprintf("%s/%s/deployment-oom-app/%s/app/", prefix, ns, pod.Name)
	dumps := e.waitDumps("the OOM dump from the restricted namespace is in MinIO", ns, pod.Name, keyPrefix, "-oom-", 1, 4*time.Minute)
	e.checkDump(dumps[0], pod.Name, "app", "oom")
	warnings := e.kubectl("get", "events", "-n", ns, "--field-selector", "reason=FailedCreate", "-o", "jsonpath={.items[*].message}")
	if strings.TrimSpace(warnings) != "" {
		t.Errorf("FailedCreate events in %s: %s", ns, warnings)
	}
}

// TestMinIOStoppedDuringOOM (scenario 9): MinIO is stopped (scaled to zero;
// its data stays on the node) while a JVM runs out of memory, and started
// again a minute later. The uploader keeps the dump and retries; the dump
// arrives complete, and no partial upload is left behind.
func TestMinIOStoppedDuringOOM(t *testing.T) {
	e := setup(t)
	const ns = "e2e-minio-down"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	minio := "deployment/minio"
	t.Cleanup(func() {
		// Back for the other tests, also when this one fails.
		e.kubectl("-n", minioNS, "scale", minio, "--replicas=1")
		e.kubectl("-n", minioNS, "rollout", "status", minio, "--timeout=180s")
	})

	e.apply(oomApp(e, ns)...)
	pod := e.onePod(ns, "app=oom-app")
	checkInjected(t, &pod, e.destination, "-XX:+UseSerialGC")
	keyPrefix := fmt.Sprintf("%s/%s/deployment-oom-app/%s/app/", prefix, ns, pod.Name)
	e.waitDumps("the first OOM dump is in MinIO (MinIO up)", ns, pod.Name, keyPrefix, "-oom-", 1, 4*time.Minute)

	e.scaleToZero(minioNS, "minio", "app.kubernetes.io/name=minio", 2*time.Minute)
	stopped := time.Now()
	p := e.pod(ns, pod.Name)
	restartsAtStop := restarts(&p, "app")
	t.Logf("MinIO stopped; the app container has restarted %d times", restartsAtStop)

	// The container restarts and runs out of memory again; the uploader
	// cannot reach MinIO and says so.
	e.eventually("an OOM while MinIO is down, and the uploader failing to reach it", 3*time.Minute, func() error {
		p := e.pod(ns, pod.Name)
		if n := restarts(&p, "app"); n <= restartsAtStop {
			return fmt.Errorf("app container restarts %d, no new OOM yet", n)
		}
		logs, err := e.run(nil, "kubectl", "-n", ns, "logs", pod.Name, "-c", inject.SidecarName,
			fmt.Sprintf("--since-time=%s", stopped.UTC().Format(time.RFC3339)))
		if err != nil {
			return err
		}
		if !strings.Contains(logs, "storage unavailable: dumps stay on disk") {
			return fmt.Errorf("uploader log since MinIO stopped:\n%s", logs)
		}
		return nil
	})
	if wait := time.Until(stopped.Add(time.Minute)); wait > 0 {
		t.Logf("MinIO stays down %.0fs more", wait.Seconds())
		time.Sleep(wait)
	}

	e.kubectl("-n", minioNS, "scale", minio, "--replicas=1")
	e.kubectl("-n", minioNS, "rollout", "status", minio, "--timeout=180s")
	restarted := time.Now()
	t.Logf("MinIO started again %.0fs after it stopped", restarted.Sub(stopped).Seconds())
	var late []string
	e.eventually("an OOM dump of the outage is in MinIO", 4*time.Minute, func() error {
		late = late[:0]
		keys, listing, err := e.objectsUnder(keyPrefix)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if at, err := keyTime(k); err == nil && strings.Contains(k, "-oom-") && at.After(stopped) && at.Before(restarted) {
				late = append(late, k)
			}
		}
		if len(late) == 0 {
			return fmt.Errorf("no -oom- object claimed while MinIO was down; objects:\n%s", listing)
		}
		return nil
	})

	// No more OOMs; the uploader drains what it holds when the pod ends.
	e.kubectl("-n", ns, "scale", "deployment/oom-app", "--replicas=0")
	e.kubectl("-n", ns, "wait", "--for=delete", "pod/"+pod.Name, "--timeout=120s")
	keys, listing, err := e.objectsUnder(keyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("objects of %s:\n%s", pod.Name, listing)
	for _, k := range keys {
		e.checkDump(k, pod.Name, "app", "oom")
	}
	if left := e.incomplete(keyPrefix); left != "" {
		t.Errorf("partial uploads left under %s:\n%s", keyPrefix, left)
	}
}
