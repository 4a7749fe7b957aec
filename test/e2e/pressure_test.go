package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

// pressured is a Deployment of JVMs under memory pressure as the preStop
// policy on-pressure judges it: with the serial collector the old
// generation is two thirds of -Xmx, and Hold keeps mib of it live after a
// full collection (72 of 128 MiB: about 85% of the old generation full,
// above the default 80%).
func pressured(ns, name string, replicas, xmxMiB, mib int) map[string]any {
	d := holdDeployment(ns, name, replicas, mib)
	c := podSpec(d)["containers"].([]any)[0].(map[string]any)
	c["command"] = []any{"java", fmt.Sprintf("-Xmx%dm", xmxMiB), "-XX:+UseSerialGC", "-cp", "/opt/hold", "Hold", fmt.Sprint(mib)}
	return d
}

// waitHeld waits until the Hold JVM of the pod has its live set in the old
// generation: it prints "ready <arrays>" after its full collection.
func (e *env) waitHeld(ns, pod string) {
	e.t.Helper()
	e.eventually("the JVM of "+pod+" holds its heap", time.Minute, func() error {
		out, err := e.run(nil, "kubectl", "-n", ns, "logs", pod, "-c", "app")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "ready ") {
			return fmt.Errorf("app log: %q", out)
		}
		return nil
	})
}

// TestLivenessFailureUnderPressure (scenarios 3 and 10): a JVM under memory
// pressure fails its liveness probe; the kubelet runs the injected preStop
// hook before it kills the container, the hook takes a heap dump and the
// uploader, which outlives the container, puts it into MinIO. Then the pod
// is deleted between two probe failures: its last preStop dump is in MinIO
// by the time the pod is gone. The app image has no shell and no JDK and
// runs as a non-root uid (scenario 10).
func TestLivenessFailureUnderPressure(t *testing.T) {
	e := setup(t)
	const ns, name = "e2e-liveness", "sick"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	d := pressured(ns, name, 1, 128, 72)
	c := podSpec(d)["containers"].([]any)[0].(map[string]any)
	// Nothing listens on 8080: the probe fails every time, 20 s after each
	// start of the container.
	c["livenessProbe"] = map[string]any{
		"tcpSocket":           map[string]any{"port": 8080},
		"initialDelaySeconds": 20, "periodSeconds": 5, "failureThreshold": 1, "timeoutSeconds": 1,
	}
	e.create("deployment created", d)
	pod := e.onePod(ns, "app="+name)
	checkInjected(t, &pod, e.destination)
	checkNonRoot(t, &pod)
	e.waitReady(ns, pod.Name, 2*time.Minute)
	e.waitHeld(ns, pod.Name)
	e.checkNoShell(ns, pod.Name)

	keyPrefix := fmt.Sprintf("%s/%s/deployment-%s/%s/app/", prefix, ns, name, pod.Name)
	first := e.waitDumps("the preStop dump of the liveness kill is in MinIO", ns, pod.Name, keyPrefix, "-prestop-", 1, 3*time.Minute)
	// The dump may be in MinIO before the kubelet has stopped the JVM.
	e.eventually("the kubelet restarted the app container", time.Minute, func() error {
		p := e.pod(ns, pod.Name)
		if n := restarts(&p, "app"); n < 1 {
			return fmt.Errorf("app container restarts: %d", n)
		}
		return nil
	})
	unhealthy := e.kubectl("-n", ns, "get", "events", "--field-selector", "reason=Unhealthy,involvedObject.name="+pod.Name,
		"-o", "jsonpath={.items[*].message}")
	if !strings.Contains(unhealthy, "Liveness probe failed") {
		t.Errorf("no Liveness probe failed event for %s: %q", pod.Name, unhealthy)
	}
	e.checkDump(first[0], pod.Name, "app", "prestop")

	// Deleted while the restarted JVM holds its heap again and before the
	// probe fails again: the hook dumps, and the pod only goes once the
	// uploader has put that dump into MinIO.
	e.eventually("the restarted app container runs 3-12 s", 2*time.Minute, func() error {
		p := e.pod(ns, pod.Name)
		for _, s := range p.Status.ContainerStatuses {
			if s.Name != "app" || s.State.Running == nil {
				continue
			}
			if up := time.Since(s.State.Running.StartedAt.Time); s.RestartCount >= 1 && up >= 3*time.Second && up <= 12*time.Second {
				return nil
			}
		}
		return fmt.Errorf("app container of %s not in the window (%+v)", pod.Name, p.Status.ContainerStatuses)
	})
	before, _, err := e.objectsUnder(keyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	e.kubectl("-n", ns, "scale", "deployment/"+name, "--replicas=0")
	e.kubectl("-n", ns, "wait", "--for=delete", "pod/"+pod.Name, "--timeout=120s")
	t.Logf("pod %s gone %.1fs after the scale to 0", pod.Name, time.Since(deleted).Seconds())
	after, listing, err := e.objectsUnder(keyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, k := range after {
		if strings.Contains(k, "-prestop-") && !slices.Contains(before, k) {
			last = k
		}
	}
	if last == "" {
		t.Fatalf("pod %s is gone and its last preStop dump is not in MinIO; objects:\n%s", pod.Name, listing)
	}
	e.checkDump(last, pod.Name, "app", "prestop")
}

// lockEvent is one decision of a pod's uploader on its workload's dump
// lock, from its log.
type lockEvent struct {
	pod  string
	msg  string
	at   time.Time
	line string
}

const (
	msgTaken    = "dump lock taken for this pod's preStop dump"
	msgReleased = "dump lock released"
	msgSkipped  = "dump lock taken by another pod: this pod skips its preStop dump"
)

// TestDeletedReplicasDumpOneAtATime (scenario 5): three replicas under
// memory pressure are deleted at once (scaled to zero). Their preStop hooks
// run together, and the workload's dump lock lets one pod dump at a time:
// each uploader's log says whether its pod took the lock (and when it
// released it) or skipped its dump; no two holds overlap, and MinIO holds
// exactly one complete preStop dump per pod that took the lock.
func TestDeletedReplicasDumpOneAtATime(t *testing.T) {
	e := setup(t)
	const ns, name = "e2e-lock", "crowd"
	e.diagnoseOnFailure(ns)
	e.namespace(ns, true)
	// 300 of 512 MiB: the old generation about 90% full, and dumps that take
	// a moment.
	e.create("deployment created", pressured(ns, name, 3, 512, 300))
	e.kubectl("-n", ns, "rollout", "status", "deployment/"+name, "--timeout=180s")
	pods, err := e.pods(ns, "app="+name)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 3 {
		t.Fatalf("%d pods, want 3", len(pods))
	}
	for i := range pods {
		checkInjected(t, &pods[i], e.destination)
		e.waitHeld(ns, pods[i].Name)
	}

	// Follow the three uploaders' logs until their containers end.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	logs := make([]bytes.Buffer, len(pods))
	for i, p := range pods {
		cmd := e.command(ctx, "kubectl", "-n", ns, "logs", "--follow", p.Name, "-c", inject.SidecarName)
		cmd.Stdout = &logs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = cmd.Wait() }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(2 * time.Second) // the followers are attached

	start := time.Now()
	e.scaleToZero(ns, name, "app="+name, 3*time.Minute)
	wg.Wait()
	t.Logf("scaled to 0; all pods gone after %.1fs", time.Since(start).Seconds())

	var events []lockEvent
	for i, p := range pods {
		sc := bufio.NewScanner(&logs[i])
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				TS  float64 `json:"ts"`
				Msg string  `json:"msg"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			switch l.Msg {
			case msgTaken, msgReleased, msgSkipped:
				sec, frac := math.Modf(l.TS)
				events = append(events, lockEvent{p.Name, l.Msg, time.Unix(int64(sec), int64(frac*1e9)), sc.Text()})
			}
		}
	}
	slices.SortFunc(events, func(a, b lockEvent) int { return a.at.Compare(b.at) })
	var b strings.Builder
	for _, ev := range events {
		fmt.Fprintf(&b, "  %s %s: %s\n", ev.at.UTC().Format("15:04:05.000"), ev.pod, ev.msg)
	}
	t.Logf("the uploaders' dump lock decisions:\n%s", b.String())

	// One decision per pod; holds one after the other.
	holder := ""
	var dumped []string
	skipped := 0
	for _, ev := range events {
		switch ev.msg {
		case msgTaken:
			if holder != "" {
				t.Errorf("%s took the lock while %s held it", ev.pod, holder)
			}
			holder = ev.pod
			dumped = append(dumped, ev.pod)
		case msgReleased:
			if holder != ev.pod {
				t.Errorf("%s released a lock held by %q", ev.pod, holder)
			}
			holder = ""
		case msgSkipped:
			skipped++
		}
	}
	if holder != "" {
		t.Errorf("%s never released the lock", holder)
	}
	for _, p := range pods {
		n := 0
		for _, ev := range events {
			if ev.pod == p.Name && ev.msg != msgReleased {
				n++
			}
		}
		if n != 1 {
			t.Errorf("pod %s: %d lock decisions in its uploader's log, want 1", p.Name, n)
		}
	}
	if len(dumped) == 0 {
		t.Fatal("no pod took the dump lock")
	}
	t.Logf("%d pod(s) dumped one after the other, %d skipped", len(dumped), skipped)

	keyPrefix := fmt.Sprintf("%s/%s/deployment-%s/", prefix, ns, name)
	keys, listing, err := e.objectsUnder(keyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		var mine []string
		for _, k := range keys {
			if strings.HasPrefix(k, keyPrefix+p.Name+"/") && strings.Contains(k, "-prestop-") {
				mine = append(mine, k)
			}
		}
		want := 0
		if slices.Contains(dumped, p.Name) {
			want = 1
		}
		if len(mine) != want {
			t.Errorf("pod %s: %d preStop dumps in MinIO, want %d; objects:\n%s", p.Name, len(mine), want, listing)
			continue
		}
		for _, k := range mine {
			e.checkDump(k, p.Name, "app", "prestop")
		}
	}
	lock := e.must(nil, e.mc, "cat", fmt.Sprintf("e2e/%s/%s/.dumpcatcher/locks/%s/deployment/%s.json", bucket, prefix, ns, name))
	var l struct {
		Holder   string `json:"holder"`
		Released bool   `json:"released"`
	}
	if err := json.Unmarshal([]byte(lock), &l); err != nil || !l.Released || !strings.Contains(l.Holder, dumped[len(dumped)-1]) {
		t.Errorf("lock object: %s (%v); want released by %s", lock, err, dumped[len(dumped)-1])
	}
}
