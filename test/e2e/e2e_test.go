// Package e2e runs dumpcatcher on a real cluster: the chart, the images of
// the Dockerfiles, MinIO, and JVMs: one that runs out of memory, healthy ones
// that are dumped on demand, rolled and admitted with the webhook down
// (scenarios_test.go). The tests share one setup of MinIO and the chart,
// made by the first test and removed by TestMain. It needs a
// cluster with the images of test/cluster/images.sh (test/cluster/up.sh
// makes one) and is skipped unless DUMPCATCHER_E2E_KUBECONFIG names its
// kubeconfig:
//
//	sudo make cluster-up cluster-smoke cluster-down
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
)

const (
	release   = "dumpcatcher" // also the chart's full name, hence the Service's
	webhookNS = "dumpcatcher"
	minioNS   = "minio" // deploy/examples/minio.yaml's
	appNS     = "oom-demo"
	bucket    = "heap-dumps"
	prefix    = "e2e"

	// Tags of test/cluster/images.sh.
	imageTag   = "e2e"
	minioImage = "local/minio:e2e"
	jreImage   = "local/jre17:e2e"
)

// cluster is what the tests of the package share: the tools, and once the
// first test has set it up, MinIO and the chart (setupCluster).
type cluster struct {
	root       string
	kubeconfig string
	helm, mc   string
	home       string // caches and configuration of kubectl, helm and mc; temporary files
	mcHost     string // MC_HOST_e2e: MinIO's root user at its ClusterIP

	minioDir    string   // MinIO's data on this machine (a hostPath)
	destination string   // the chart's config.destination
	namespaces  []string // app namespaces the tests made, deleted at the end
	installed   bool     // something was installed that the end removes
	ok          bool     // setupCluster completed
}

var (
	shared    cluster
	setupOnce sync.Once
)

// env is a test's view of the shared cluster.
type env struct {
	t testing.TB
	*cluster
}

// TestMain removes what the tests installed (unless DUMPCATCHER_E2E_KEEP
// is set) once all of them have run.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.installed && os.Getenv("DUMPCATCHER_E2E_KEEP") == "" {
		_, _ = shared.run(nil, shared.helm, "uninstall", release, "-n", webhookNS, "--wait", "--timeout", "2m")
		args := append([]string{"delete", "namespace"}, shared.namespaces...)
		args = append(args, minioNS, webhookNS, "--ignore-not-found", "--wait", "--timeout", "3m")
		if _, err := shared.run(nil, "kubectl", args...); err != nil {
			fmt.Fprintln(os.Stderr, "e2e cleanup:", err)
		}
		if _, err := shared.run(nil, "kubectl", "delete", "persistentvolume", minioVolume, "--ignore-not-found", "--wait", "--timeout", "1m"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e cleanup:", err)
		}
	}
	if shared.home != "" {
		_ = os.RemoveAll(shared.home)
	}
	if shared.minioDir != "" && os.Getenv("DUMPCATCHER_E2E_KEEP") == "" {
		_ = os.RemoveAll(shared.minioDir)
	}
	os.Exit(code)
}

// setup skips the test without a cluster; the first test to call it sets
// up MinIO and the chart for all of them.
func setup(t testing.TB) *env {
	kubeconfig := os.Getenv("DUMPCATCHER_E2E_KUBECONFIG")
	if kubeconfig == "" {
		t.Skip("DUMPCATCHER_E2E_KUBECONFIG is not set (sudo make cluster-up cluster-smoke)")
	}
	e := &env{t: t, cluster: &shared}
	setupOnce.Do(func() {
		start := time.Now()
		e.setupCluster(kubeconfig)
		shared.ok = true
		t.Logf("shared setup (MinIO, chart) done in %.0fs", time.Since(start).Seconds())
	})
	if !shared.ok {
		t.Fatal("the shared setup (MinIO, chart) failed in an earlier test; see its log")
	}
	return e
}

// run runs a command with the cluster's kubeconfig and returns its stdout.
func (c *cluster) run(stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := c.command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// command is a command with the cluster's kubeconfig: kubectl, helm and mc
// keep their caches and configuration in the tests' temporary directory, not
// in the home directory.
func (c *cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "KUBECACHEDIR="+c.home+"/kube",
		"MC_CONFIG_DIR="+c.home+"/mc", "HELM_CACHE_HOME="+c.home+"/helm/cache",
		"HELM_CONFIG_HOME="+c.home+"/helm/config", "HELM_DATA_HOME="+c.home+"/helm/data")
	if c.mcHost != "" {
		cmd.Env = append(cmd.Env, "MC_HOST_e2e="+c.mcHost)
	}
	return cmd
}

func (e *env) must(stdin []byte, name string, args ...string) string {
	e.t.Helper()
	out, err := e.run(stdin, name, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) kubectl(args ...string) string { e.t.Helper(); return e.must(nil, "kubectl", args...) }

func (e *env) apply(objs ...map[string]any) {
	e.t.Helper()
	e.must(jsonLines(e.t, objs), "kubectl", "apply", "-f", "-")
}

// jsonLines is objs as kubectl apply -f - reads them: one JSON document a
// line.
func jsonLines(t testing.TB, objs []map[string]any) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, o := range objs {
		buf.WriteString(mustJSON(t, o))
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// eventually polls f every second until it returns nil or the time is up.
func (e *env) eventually(what string, timeout time.Duration, f func() error) {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := f()
		if err == nil {
			e.t.Logf("%s (%.0fs)", what, time.Since(start).Seconds())
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// objects reads a deploy/examples manifest as generic objects.
func (e *env) objects(name string) []map[string]any {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.root, "deploy/examples", name))
	if err != nil {
		e.t.Fatal(err)
	}
	var objs []map[string]any
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			e.t.Fatalf("%s: %v", name, err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

func kind(o map[string]any) string { s, _ := o["kind"].(string); return s }

// podSpec returns the pod template's spec of a Deployment or Job.
func podSpec(o map[string]any) map[string]any {
	spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec
}

func containers(o map[string]any) []any { return podSpec(o)["containers"].([]any) }

// setupCluster installs what all tests use: MinIO with the bucket and the
// upload user of deploy/examples/minio.yaml, and the chart, whose webhook
// the API server is seen to call; the app namespace appNS opts in.
func (e *env) setupCluster(kubeconfig string) {
	t := e.t
	e.root, e.kubeconfig = render.RepoRoot(t), kubeconfig
	home, err := os.MkdirTemp("", "dumpcatcher-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e.home = home
	out, err := exec.Command("bash", filepath.Join(e.root, "test/tools/install.sh"), "helm", "mc").Output()
	if err != nil {
		t.Fatalf("test/tools/install.sh helm mc: %v", err)
	}
	bin := strings.TrimSpace(string(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
	e.helm, e.mc = filepath.Join(bin, "helm"), filepath.Join(bin, "mc")
	e.installed = true

	// MinIO as deploy/examples/minio.yaml has it, with the rig's image. Its
	// setup Job needs a shell and DNS; the test does the same setup from
	// here with mc.
	var minio []map[string]any
	var setupScript string
	var creds map[string]any // the root and upload users
	for _, o := range e.objects("minio.yaml") {
		switch kind(o) {
		case "Job":
			setupScript = containers(o)[0].(map[string]any)["args"].([]any)[0].(string)
			continue
		case "Deployment":
			c := containers(o)[0].(map[string]any)
			c["image"] = minioImage
			c["imagePullPolicy"] = "Never"
			// The data outlives the pod (the example's emptyDir does not):
			// TestMinIOStoppedDuringOOM stops MinIO and starts it again.
			for _, v := range podSpec(o)["volumes"].([]any) {
				if v := v.(map[string]any); v["name"] == "data" {
					delete(v, "emptyDir")
					v["persistentVolumeClaim"] = map[string]any{"claimName": minioClaim}
				}
			}
		case "Secret":
			creds = o["stringData"].(map[string]any)
		}
		minio = append(minio, o)
	}
	cred := func(k string) string { s, _ := creds[k].(string); return s }
	if setupScript == "" || cred("MINIO_ROOT_USER") == "" || cred("UPLOAD_USER") == "" {
		t.Fatal("minio.yaml: no setup Job or no root Secret")
	}
	e.apply(minio...)
	e.apply(e.minioVolume()...)
	e.diagnoseOnFailure(minioNS)
	e.kubectl("-n", minioNS, "rollout", "status", "deployment/minio", "--timeout=180s")
	minioIP := strings.TrimSpace(e.kubectl("-n", minioNS, "get", "service", "minio", "-o", "jsonpath={.spec.clusterIP}"))
	endpoint := "http://" + minioIP + ":9000"
	t.Logf("MinIO Service at %s", endpoint)

	// The Job's setup: bucket, upload-only policy (the JSON of its script),
	// user.
	policy := regexp.MustCompile(`(?s)<<'EOF'\n(.*?)\n\s*EOF`).FindStringSubmatch(setupScript)
	if policy == nil {
		t.Fatal("minio.yaml: no policy heredoc in the setup Job")
	}
	policyFile := filepath.Join(e.home, "policy.json")
	if err := os.WriteFile(policyFile, []byte(policy[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mcHost = fmt.Sprintf("http://%s:%s@%s:9000", cred("MINIO_ROOT_USER"), cred("MINIO_ROOT_PASSWORD"), minioIP)
	e.eventually("MinIO reachable from the host over its ClusterIP", time.Minute, func() error {
		_, err := e.run(nil, e.mc, "ready", "e2e")
		return err
	})
	e.must(nil, e.mc, "mb", "--ignore-existing", "e2e/"+bucket)
	e.must(nil, e.mc, "admin", "policy", "create", "e2e", "dumpcatcher-upload", policyFile)
	e.must(nil, e.mc, "admin", "user", "add", "e2e", cred("UPLOAD_USER"), cred("UPLOAD_PASSWORD"))
	_, _ = e.run(nil, e.mc, "admin", "policy", "attach", "e2e", "dumpcatcher-upload", "--user", cred("UPLOAD_USER")) // fails when already attached

	// The webhook without cert-manager: a CA and a serving certificate of
	// our own, in the Secret the chart's tls.secretName names.
	caPEM, certPEM, keyPEM := certificates(t, release+"."+webhookNS+".svc")
	dir := e.home
	for name, data := range map[string][]byte{"ca.crt": caPEM, "tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.apply(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": webhookNS}})
	secret := e.must(nil, "kubectl", "-n", webhookNS, "create", "secret", "tls", "dumpcatcher-e2e-tls",
		"--cert", filepath.Join(dir, "tls.crt"), "--key", filepath.Join(dir, "tls.key"), "--dry-run=client", "-o", "json")
	e.must([]byte(secret), "kubectl", "apply", "-f", "-")

	destination := fmt.Sprintf("s3://%s/%s?endpoint=%s&path-style=true", bucket, prefix, endpoint)
	e.destination = destination
	values, err := yaml.Marshal(map[string]any{
		"replicaCount": 1,
		"image":        map[string]any{"tag": imageTag, "pullPolicy": "Never"},
		"certManager":  map[string]any{"enabled": false},
		"tls":          map[string]any{"secretName": "dumpcatcher-e2e-tls", "caBundle": string(caPEM)},
		"config": map[string]any{
			"destination":       destination,
			"credentialsSecret": "dumpcatcher-s3",
			"sidecar":           map[string]any{"image": map[string]any{"tag": imageTag}, "imagePullPolicy": "Never"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must(nil, e.helm, "upgrade", "--install", release, filepath.Join(e.root, "charts/dumpcatcher"), "-n", webhookNS,
		"-f", valuesFile, "--wait", "--timeout", "3m")

	// The app namespace: opted in, with the credentials Secret.
	e.namespace(appNS, true)
	e.waitWebhook()
}

// MinIO's data volume: a PersistentVolume of a directory on this machine,
// owned by the uid of minio.yaml's pod (1000), bound to a claim in MinIO's
// namespace (whose Pod Security restricted allows claims, not hostPath).
const (
	minioClaim  = "minio-data"
	minioVolume = "dumpcatcher-e2e-minio"
)

func (e *env) minioVolume() []map[string]any {
	e.t.Helper()
	if e.minioDir == "" {
		dir, err := os.MkdirTemp("", "dumpcatcher-e2e-minio-")
		if err != nil {
			e.t.Fatal(err)
		}
		e.minioDir = dir
		if err := os.Chown(dir, 1000, 1000); err != nil {
			e.t.Fatal(err)
		}
	}
	size := map[string]any{"storage": "10Gi"}
	return []map[string]any{{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{"name": minioVolume},
		"spec": map[string]any{
			"capacity": size, "accessModes": []any{"ReadWriteOnce"}, "storageClassName": "",
			"persistentVolumeReclaimPolicy": "Retain",
			"hostPath":                      map[string]any{"path": e.minioDir, "type": "Directory"},
			"claimRef":                      map[string]any{"namespace": minioNS, "name": minioClaim},
		},
	}, {
		"apiVersion": "v1", "kind": "PersistentVolumeClaim",
		"metadata": map[string]any{"name": minioClaim, "namespace": minioNS},
		"spec": map[string]any{
			"accessModes": []any{"ReadWriteOnce"}, "storageClassName": "", "volumeName": minioVolume,
			"resources": map[string]any{"requests": size},
		},
	}}
}

// namespace makes an app namespace with the credentials Secret, opted in
// by its label when labelled; the end of the tests deletes it.
func (e *env) namespace(name string, labelled bool) {
	e.t.Helper()
	labels := map[string]any{}
	if labelled {
		labels["dumpcatcher.io/inject"] = "enabled"
	}
	if !slices.Contains(e.namespaces, name) {
		e.namespaces = append(e.namespaces, name)
	}
	e.apply(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{
		"name": name, "labels": labels}})
	for _, o := range e.objects("credentials-secret.yaml") {
		o["metadata"].(map[string]any)["namespace"] = name
		e.apply(o)
	}
}

// waitWebhook waits until the API server calls the webhook: a dry-run pod
// in appNS comes back injected. The API server calls the webhook through
// its Service's ClusterIP; the webhook's readiness is not the API server's
// reach, and with failurePolicy Ignore a pod created before that is
// admitted uninjected.
func (e *env) waitWebhook() {
	e.t.Helper()
	probe := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe","namespace":"` + appNS +
		`"},"spec":{"containers":[{"name":"app","image":"` + jreImage + `"}]}}`)
	e.eventually("the API server calls the webhook", 2*time.Minute, func() error {
		out, err := e.run(probe, "kubectl", "create", "--dry-run=server", "-o", "json", "-f", "-")
		if err != nil {
			return err
		}
		if !strings.Contains(out, inject.AnnotationStatus) {
			return fmt.Errorf("dry-run pod not injected")
		}
		return nil
	})
}

// TestOOMDumpReachesMinIO (scenarios 1 and 10): a Java Deployment in a
// namespace that opts in is injected by the webhook the chart installs; its
// JVM runs out of memory and the uploader sidecar puts the heap dump into
// MinIO, over the MinIO Service's ClusterIP (no cluster DNS on the rig). The
// container restarts, runs out of memory again, and the second dump arrives
// too. Both are complete heap dumps once decompressed, with metadata naming
// the pod and the container. The app image has no shell and no JDK and runs
// as a non-root uid (scenario 10).
func TestOOMDumpReachesMinIO(t *testing.T) {
	e := setup(t)
	e.diagnoseOnFailure(appNS)
	e.apply(oomApp(e, appNS)...)

	pod := e.onePod(appNS, "app=oom-app")
	checkInjected(t, &pod, e.destination, "-XX:+UseSerialGC")
	checkNonRoot(t, &pod)

	// The dumps: java_pid<pid>.hprof, uploaded compressed under
	// <prefix>/<namespace>/deployment-oom-app/<pod>/app/.
	keyPrefix := fmt.Sprintf("%s/%s/deployment-oom-app/%s/app/", prefix, appNS, pod.Name)
	first := e.waitDumps("the OOM heap dump is in MinIO", appNS, pod.Name, keyPrefix, "-oom-", 1, 4*time.Minute)
	e.checkDump(first[0], pod.Name, "app", "oom")

	// The JVM's first OOM ended the container; the kubelet started it again
	// in the same pod (same emptyDir and uploader), and it runs out of memory
	// again.
	e.eventually("the app container restarted after its OOM", 2*time.Minute, func() error {
		p := e.pod(appNS, pod.Name)
		if n := restarts(&p, "app"); n < 1 {
			return fmt.Errorf("app container restarts: %d", n)
		}
		return nil
	})
	both := e.waitDumps("the second OOM's heap dump is in MinIO", appNS, pod.Name, keyPrefix, "-oom-", 2, 4*time.Minute)
	for _, k := range both {
		if k != first[0] {
			e.checkDump(k, pod.Name, "app", "oom")
		}
	}
}

// oomApp returns deploy/examples/oom-app.yaml's objects for namespace ns,
// with the rig's JRE image: its Oom.class is compiled from the same
// ConfigMap at image build time (no JDK in the image).
func oomApp(e *env, ns string) []map[string]any {
	var app []map[string]any
	for _, o := range e.objects("oom-app.yaml") {
		o["metadata"].(map[string]any)["namespace"] = ns
		if kind(o) == "Deployment" {
			c := containers(o)[0].(map[string]any)
			c["image"] = jreImage
			c["imagePullPolicy"] = "Never"
			c["command"] = []any{"java", "-Xmx64m", "-cp", "/opt/oom", "Oom"}
		}
		app = append(app, o)
	}
	return app
}

// checkInjected checks what the webhook put into the pod: the status
// annotation, the uploader as a native sidecar with the configured
// destination, the dump options in the app's JAVA_TOOL_OPTIONS after the
// app's own options (keep).
func checkInjected(t *testing.T, pod *corev1.Pod, destination string, keep ...string) {
	t.Helper()
	if pod.Annotations[inject.AnnotationStatus] == "" {
		t.Fatalf("pod %s not injected: no %s annotation (annotations %v)", pod.Name, inject.AnnotationStatus, pod.Annotations)
	}
	i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.SidecarName })
	if i < 0 {
		t.Fatalf("pod %s: no init container %q (a native sidecar on 1.34)", pod.Name, inject.SidecarName)
	}
	sc := pod.Spec.InitContainers[i]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("uploader restartPolicy %v, want Always", sc.RestartPolicy)
	}
	if sc.Image != "ghcr.io/dumpcatcher/dumpcatcher:"+imageTag {
		t.Errorf("uploader image %s", sc.Image)
	}
	if !slices.Equal(sc.Command, []string{contract.BinaryPath, contract.CmdUpload}) {
		t.Errorf("uploader command %v", sc.Command)
	}
	if got := envValue(sc.Env, contract.EnvDestination); got != destination {
		t.Errorf("uploader %s=%q, want %q", contract.EnvDestination, got, destination)
	}
	app := pod.Spec.Containers[0]
	jto := envValue(app.Env, "JAVA_TOOL_OPTIONS")
	for _, o := range append(keep, "-XX:+HeapDumpOnOutOfMemoryError") {
		if !strings.Contains(jto, o) {
			t.Errorf("app JAVA_TOOL_OPTIONS=%q: no %s", jto, o)
		}
	}
	t.Logf("pod %s injected: %s", pod.Name, pod.Annotations[inject.AnnotationStatus])
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, v := range env {
		if v.Name == name {
			return v.Value
		}
	}
	return ""
}

// certificates returns a CA and a serving certificate and key for dnsName,
// PEM-encoded, valid for a day.
func certificates(t testing.TB, dnsName string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	pair := certs.NewNamedCA(t, "dumpcatcher-e2e-webhook-ca").Serving(t, dnsName)
	return pair.CAPEM, pair.CertPEM, pair.KeyPEM
}
