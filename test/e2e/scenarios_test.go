package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

// The long-running JVM of the rig's JRE image (test/cluster/images.sh):
// holds MiB of heap and sleeps, a healthy app.
func holdContainer(mib int) map[string]any {
	return map[string]any{
		"name": "app", "image": jreImage, "imagePullPolicy": "Never",
		"command": []any{"java", "-Xmx128m", "-cp", "/opt/hold", "Hold", fmt.Sprint(mib)},
		"securityContext": map[string]any{
			"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true, "allowPrivilegeEscalation": false,
			"capabilities": map[string]any{"drop": []any{"ALL"}},
		},
	}
}

func holdPod(ns, name string, annotations map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns, "annotations": annotations},
		"spec": map[string]any{
			// No token volume: the spec of an untouched pod is exactly
			// what was submitted.
			"automountServiceAccountToken":  false,
			"terminationGracePeriodSeconds": 5,
			"containers":                    []any{holdContainer(8)},
		},
	}
}

func holdDeployment(ns, name string, replicas, mib int) map[string]any {
	labels := map[string]any{"app": name}
	return map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{
					"automountServiceAccountToken": false,
					"containers":                   []any{holdContainer(mib)},
				},
			},
		},
	}
}

// create creates objects, retrying while a new namespace has no default
// ServiceAccount yet.
func (e *env) create(what string, objs ...map[string]any) {
	e.t.Helper()
	docs := jsonLines(e.t, objs)
	e.eventually(what, 30*time.Second, func() error {
		_, err := e.run(docs, "kubectl", "apply", "-f", "-")
		return err
	})
}

func (e *env) pod(ns, name string) corev1.Pod {
	e.t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal([]byte(e.kubectl("-n", ns, "get", "pod", name, "-o", "json")), &pod); err != nil {
		e.t.Fatal(err)
	}
	return pod
}

// pods lists the pods of ns that match selector (all of them for "").
func (e *env) pods(ns, selector string) ([]corev1.Pod, error) {
	args := []string{"-n", ns, "get", "pods", "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	out, err := e.run(nil, "kubectl", args...)
	if err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// scaleToZero scales the Deployment to zero replicas and waits until no pod
// matching selector ("": none in ns) is left.
func (e *env) scaleToZero(ns, deployment, selector string, timeout time.Duration) {
	e.t.Helper()
	e.kubectl("-n", ns, "scale", "deployment/"+deployment, "--replicas=0")
	e.eventually("no pod of deployment/"+deployment+" left in "+ns, timeout, func() error {
		left, err := e.pods(ns, selector)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			names := make([]string, len(left))
			for i, p := range left {
				names[i] = p.Name
			}
			return fmt.Errorf("still there: %s", strings.Join(names, " "))
		}
		return nil
	})
}

// ready is nil when the pod runs with all its containers ready.
func ready(p *corev1.Pod) error {
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
	}
	for _, c := range p.Status.ContainerStatuses {
		if !c.Ready {
			return fmt.Errorf("pod %s: container %s not ready (%+v)", p.Name, c.Name, c.State)
		}
	}
	return nil
}

func (e *env) waitReady(ns, name string, timeout time.Duration) corev1.Pod {
	e.t.Helper()
	var pod corev1.Pod
	e.eventually("pod "+ns+"/"+name+" ready", timeout, func() error {
		out, err := e.run(nil, "kubectl", "-n", ns, "get", "pod", name, "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &pod); err != nil {
			return err
		}
		return ready(&pod)
	})
	return pod
}

// diagnoseOnFailure logs, when the test fails, the namespace's pods,
// events and container logs (uploader included) and the webhook's log.
func (e *env) diagnoseOnFailure(ns string) {
	e.t.Cleanup(func() {
		if !e.t.Failed() {
			return
		}
		var b strings.Builder
		show := func(title string, args ...string) {
			out, err := e.run(nil, "kubectl", args...)
			if err != nil {
				out += err.Error()
			}
			fmt.Fprintf(&b, "--- %s:\n%s\n", title, strings.TrimRight(out, "\n"))
		}
		show("pods of "+ns, "-n", ns, "get", "pods", "-o", "wide")
		show("events of "+ns, "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		names, _ := e.run(nil, "kubectl", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}")
		for _, p := range strings.Fields(names) {
			show("logs of "+ns+"/"+p, "-n", ns, "logs", p, "--all-containers", "--prefix", "--tail=40")
		}
		show("webhook log", "-n", webhookNS, "logs", "deployment/"+release, "--tail=40")
		e.t.Logf("diagnostics:\n%s", b.String())
	})
}

// objectsUnder lists the bucket's keys under prefix.
func (e *env) objectsUnder(keyPrefix string) ([]string, string, error) {
	out, err := e.run(nil, e.mc, "ls", "--recursive", "e2e/"+bucket+"/"+keyPrefix)
	if err != nil {
		return nil, out, err
	}
	var keys []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			keys = append(keys, keyPrefix+f[len(f)-1])
		}
	}
	return keys, out, nil
}

// TestAnnotatedPodInUnlabelledNamespace (scenario 2): in a namespace without
// the label, the pod that says dumpcatcher.io/inject: "true" is injected and
// its neighbour without the annotation is admitted exactly as submitted.
func TestAnnotatedPodInUnlabelledNamespace(t *testing.T) {
	e := setup(t)
	const ns = "e2e-unlabelled"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, false)
	e.create("pods created", holdPod(ns, "annotated", map[string]any{"dumpcatcher.io/inject": "true"}),
		holdPod(ns, "plain", nil))

	annotated := e.pod(ns, "annotated")
	checkInjected(t, &annotated, e.destination)

	plain := e.pod(ns, "plain")
	if v, ok := plain.Annotations[inject.AnnotationStatus]; ok {
		t.Errorf("plain pod has %s=%s", inject.AnnotationStatus, v)
	}
	if len(plain.Spec.InitContainers) != 0 {
		t.Errorf("plain pod has init containers %v", plain.Spec.InitContainers)
	}
	if len(plain.Spec.Volumes) != 0 {
		t.Errorf("plain pod has volumes %v", plain.Spec.Volumes)
	}
	if len(plain.Spec.Containers) != 1 {
		t.Fatalf("plain pod has %d containers, want 1", len(plain.Spec.Containers))
	}
	c := plain.Spec.Containers[0]
	if len(c.Env) != 0 || len(c.VolumeMounts) != 0 || c.Lifecycle != nil {
		t.Errorf("plain pod's app changed: env %v, mounts %v, lifecycle %v", c.Env, c.VolumeMounts, c.Lifecycle)
	}
	if strings.Join(c.Command, " ") != "java -Xmx128m -cp /opt/hold Hold 8" {
		t.Errorf("plain pod's command %v", c.Command)
	}
	if g := plain.Spec.TerminationGracePeriodSeconds; g == nil || *g != 5 {
		t.Errorf("plain pod's terminationGracePeriodSeconds %v, want 5 as submitted", g)
	}

	// Untouched by the webhook's decision, not for want of a webhook: it
	// logged the pod's admission.
	e.eventually("the webhook logged the plain pod as not opted in", 15*time.Second, func() error {
		out, err := e.run(nil, "kubectl", "-n", webhookNS, "logs", "deployment/"+release, "--tail=-1")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"namespace":"`+ns+`"`) && strings.Contains(line, `"pod":"plain"`) &&
				strings.Contains(line, `"outcome":"skipped"`) {
				return nil
			}
		}
		return fmt.Errorf("no admission of %s/plain with outcome skipped in the webhook's log", ns)
	})

	// Both run: the injected one with its uploader.
	e.waitReady(ns, "annotated", 2*time.Minute)
	e.waitReady(ns, "plain", time.Minute)
}

// TestOnDemandDump (scenario 6): `kubectl exec POD -c app --
// /dumpcatcher/bin/dumpcatcher dump` against a long-running JVM writes a
// heap dump, says where the uploader puts it, and the object arrives there.
func TestOnDemandDump(t *testing.T) {
	e := setup(t)
	const ns, name = "e2e-manual", "hold"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	e.create("deployment created", holdDeployment(ns, name, 1, 32))
	e.kubectl("-n", ns, "rollout", "status", "deployment/"+name, "--timeout=120s")
	pods, err := e.pods(ns, "app="+name)
	if err != nil || len(pods) != 1 {
		t.Fatalf("pods of %s: %v %v", name, pods, err)
	}
	pod := pods[0]
	checkInjected(t, &pod, e.destination)

	var out string
	start := time.Now()
	e.eventually("dumpcatcher dump ran", time.Minute, func() error {
		// The uploader copies the binary into the shared volume when it
		// starts; the app may be ready a moment earlier.
		out, err = e.run(nil, "kubectl", "-n", ns, "exec", pod.Name, "-c", "app", "--", "/dumpcatcher/bin/dumpcatcher", "dump")
		return err
	})
	t.Logf("dumpcatcher dump (%.1fs):\n%s", time.Since(start).Seconds(), out)
	m := regexp.MustCompile(`heap dump written to \S+ in \S+; the dumpcatcher sidecar uploads it to (s3://\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dumpcatcher dump: no %q ... %q in its output:\n%s", "heap dump written", "uploads it to s3://", out)
	}
	url := m[1]
	wantPrefix := fmt.Sprintf("s3://%s/%s/%s/deployment-%s/%s/app/", bucket, prefix, ns, name, pod.Name)
	if !strings.HasPrefix(url, wantPrefix) || !strings.Contains(url, "<time>-manual-pid") {
		t.Fatalf("dump URL %s: want %s<time>-manual-pid...", url, wantPrefix)
	}
	urlRE := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(url), "<time>", `\d{8}T\d{6}\.\d{3}Z`) + "$")

	keyPrefix := strings.TrimPrefix(wantPrefix, "s3://"+bucket+"/")
	var key string
	e.eventually("the manual dump is in MinIO", 2*time.Minute, func() error {
		keys, listing, err := e.objectsUnder(keyPrefix)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if urlRE.MatchString("s3://" + bucket + "/" + k) {
				key = k
				return nil
			}
		}
		logs, _ := e.run(nil, "kubectl", "-n", ns, "logs", pod.Name, "-c", inject.SidecarName, "--tail=5")
		return fmt.Errorf("no object matching %s yet; under %s:\n%s\nuploader:\n%s", urlRE, keyPrefix, listing, logs)
	})
	t.Logf("uploaded %s:\n%s", key, e.must(nil, e.mc, "stat", "e2e/"+bucket+"/"+key))
	logs := e.kubectl("-n", ns, "logs", pod.Name, "-c", inject.SidecarName)
	if !strings.Contains(logs, strings.TrimPrefix(key, keyPrefix)) {
		t.Errorf("uploader log does not name %s:\n%s", key, logs)
	}
}

// TestRollingUpdateTakesNoDumps (scenario 4): a rolling update of a healthy
// injected Deployment with the default preStop policy on-pressure takes no
// heap dumps: every old pod's preStop hook runs and decides against one
// (the JVM holds 8 of 128 MiB).
func TestRollingUpdateTakesNoDumps(t *testing.T) {
	e := setup(t)
	const ns, name = "e2e-rolling", "steady"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	d := holdDeployment(ns, name, 3, 8)
	c := podSpec(d)["containers"].([]any)[0].(map[string]any)
	c["env"] = []any{map[string]any{"name": "ROLLOUT", "value": "1"}}
	e.create("deployment created", d)
	e.kubectl("-n", ns, "rollout", "status", "deployment/"+name, "--timeout=120s")
	old, err := e.pods(ns, "app="+name)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 3 {
		t.Fatalf("%d pods, want 3", len(old))
	}
	for i := range old {
		checkInjected(t, &old[i], e.destination)
		hook := old[i].Spec.Containers[0].Lifecycle
		if hook == nil || hook.PreStop == nil || hook.PreStop.Exec == nil ||
			!slices.Contains(hook.PreStop.Exec.Command, "--policy=on-pressure") {
			t.Fatalf("pod %s: preStop %+v, want dumpcatcher dump --policy=on-pressure", old[i].Name, hook)
		}
	}

	// The hook's output goes nowhere when it succeeds; its command line run
	// by hand in an old pod shows the decision each hook makes.
	hook := old[0].Spec.Containers[0].Lifecycle.PreStop.Exec.Command
	decision := e.kubectl(append([]string{"-n", ns, "exec", old[0].Name, "-c", "app", "--"}, hook...)...)
	t.Logf("preStop hook run by hand in %s: %s", old[0].Name, strings.TrimSpace(decision))
	if !strings.Contains(decision, "not under memory pressure, no dump") {
		t.Fatalf("preStop hook of a healthy JVM: want %q, got:\n%s", "not under memory pressure, no dump", decision)
	}

	start := time.Now()
	e.kubectl("-n", ns, "set", "env", "deployment/"+name, "ROLLOUT=2")
	e.kubectl("-n", ns, "rollout", "status", "deployment/"+name, "--timeout=180s")
	e.eventually("the old pods are gone", 2*time.Minute, func() error {
		pods, err := e.pods(ns, "app="+name)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if slices.ContainsFunc(old, func(o corev1.Pod) bool { return o.Name == p.Name }) {
				return fmt.Errorf("old pod %s still there (%s)", p.Name, p.Status.Phase)
			}
		}
		return nil
	})
	t.Logf("rolling update done in %.0fs", time.Since(start).Seconds())

	keyPrefix := fmt.Sprintf("%s/%s/deployment-%s/", prefix, ns, name)
	keys, listing, err := e.objectsUnder(keyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(k, "-prestop-") }) {
		t.Errorf("the rolling update left prestop dumps:\n%s", listing)
	}
	if len(keys) != 0 {
		t.Logf("objects under %s:\n%s", keyPrefix, listing)
	}
	events := e.kubectl("-n", ns, "get", "events", "--field-selector", "reason=FailedPreStopHook", "-o", "name")
	if strings.TrimSpace(events) != "" {
		t.Errorf("FailedPreStopHook events:\n%s", events)
	}
}

// TestWebhookDownPodsStartUninjected (scenario 8): with the webhook scaled to
// zero, failurePolicy Ignore admits a new pod of an opted-in namespace
// unchanged. The webhook is scaled back afterwards, also when the test
// fails.
func TestWebhookDownPodsStartUninjected(t *testing.T) {
	e := setup(t)
	const ns = "e2e-webhook-down"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	deploy := "deployment/" + release
	replicas := strings.TrimSpace(e.kubectl("-n", webhookNS, "get", deploy, "-o", "jsonpath={.spec.replicas}"))
	if replicas == "" || replicas == "0" {
		t.Fatalf("webhook Deployment has %q replicas before the test", replicas)
	}
	t.Cleanup(func() {
		start := time.Now()
		e.kubectl("-n", webhookNS, "scale", deploy, "--replicas="+replicas)
		e.kubectl("-n", webhookNS, "rollout", "status", deploy, "--timeout=120s")
		e.waitWebhook()
		t.Logf("webhook back with %s replicas in %.0fs", replicas, time.Since(start).Seconds())
	})

	e.scaleToZero(webhookNS, release, "", 2*time.Minute)

	start := time.Now()
	e.create("pod created with the webhook down", holdPod(ns, "unguarded", nil))
	t.Logf("pod admitted in %.1fs", time.Since(start).Seconds())
	pod := e.pod(ns, "unguarded")
	if v, ok := pod.Annotations[inject.AnnotationStatus]; ok {
		t.Errorf("pod injected with the webhook down: %s=%s", inject.AnnotationStatus, v)
	}
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Volumes) != 0 || len(pod.Spec.Containers) != 1 ||
		len(pod.Spec.Containers[0].Env) != 0 || pod.Spec.Containers[0].Lifecycle != nil {
		t.Errorf("pod changed with the webhook down: %+v", pod.Spec)
	}
	e.waitReady(ns, "unguarded", time.Minute)
}
