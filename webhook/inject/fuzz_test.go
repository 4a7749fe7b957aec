package inject

import (
	"errors"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// chooser turns fuzz bytes into choices; past the end every choice is 0.
type chooser struct {
	b []byte
	i int
}

func (c *chooser) n(max int) int {
	if c.i >= len(c.b) || max <= 1 {
		return 0
	}
	v := int(c.b[c.i]) % max
	c.i++
	return v
}

func (c *chooser) pick(opts ...string) string { return opts[c.n(len(opts))] }

func (c *chooser) uid() *int64 {
	switch c.n(4) {
	case 1:
		return ptr(int64(0))
	case 2:
		return ptr(int64(1000))
	case 3:
		return ptr(int64(2000))
	}
	return nil
}

// absent marks an annotation that is not set.
const absent = "\x00"

func (c *chooser) annotate(m map[string]string, key string, values ...string) {
	if v := c.pick(append([]string{absent}, values...)...); v != absent {
		m[key] = v
	}
}

func (c *chooser) container(name string) corev1.Container {
	ct := corev1.Container{Name: name, Image: "app:1"}
	yes, no := true, false
	opt := []*bool{nil, &yes, &no}[c.n(3)]
	for i, n := 0, c.n(4); i < n; i++ {
		e := corev1.EnvVar{Name: c.pick(JTOEnv, JTOEnv, OriginalJTOEnv, "OTHER", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")}
		switch c.n(6) {
		case 0:
			e.Value = c.pick("", "-Xmx1g", `-Dq="a b" -XX:HeapDumpPath=/x`, `'unterminated -XX:+HeapDumpOnOutOfMemoryError`, "$(JAVA_TOOL_OPTIONS) -Xss1m", "$(OTHER)", "-XX:-HeapDumpOnOutOfMemoryError\t-Xmx1g", `-XX:ErrorFile=/tmp/e%p.log -XX:ErrorFile='/x y'`, "-XX:ErrorFile=/dumpcatcher/dumps/hs_err_pid%p.log")
		case 1:
			e.ValueFrom = &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "k", Optional: opt}}
		case 2:
			e.ValueFrom = &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k", Optional: opt}}
		case 3:
			e.ValueFrom = &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}
		case 4:
			e.ValueFrom = &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{VolumeName: "v", Path: "p", Key: "k", Optional: opt}}
		}
		ct.Env = append(ct.Env, e)
	}
	for i, n := 0, c.n(3); i < n; i++ {
		src := corev1.EnvFromSource{Prefix: c.pick("", "JAVA_", "APP_", "JAVA_TOOL_OPTIONS", "X")}
		if c.n(2) == 0 {
			src.ConfigMapRef = &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}, Optional: opt}
		} else {
			src.SecretRef = &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}, Optional: opt}
		}
		ct.EnvFrom = append(ct.EnvFrom, src)
	}
	for i, n := 0, c.n(3); i < n; i++ {
		ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: c.pick("data", "dumpcatcher"), MountPath: c.pick("/data", "/dumpcatcher", "/dumpcatcher/x", "/dumpcatcher-2", "/", "/dump")})
	}
	switch c.n(5) {
	case 1:
		ct.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 1"}}}}
	case 2:
		ct.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}}
	case 3:
		ct.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"x"}}}}
	case 4:
		ct.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: intstr.Parse(c.pick("http", "admin", "8080", "99999"))}}}
	}
	if c.n(3) == 0 {
		ct.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	}
	if u := c.uid(); u != nil || c.n(2) == 1 {
		ct.SecurityContext = &corev1.SecurityContext{RunAsUser: u, RunAsGroup: c.uid()}
	}
	if c.n(4) == 0 {
		ct.Args = []string{c.pick("-XX:HeapDumpPath=/tmp", "-jar", "-XX:-HeapDumpOnOutOfMemoryError", "-XX:ErrorFile=/tmp/c.log")}
	}
	return ct
}

// fuzzInput builds a pod, its namespace and options from fuzz bytes.
func fuzzInput(t *testing.T, data []byte) (Input, Options) {
	c := &chooser{b: data}
	ann := map[string]string{}
	c.annotate(ann, AnnotationInject, "true", "true", "false", "yes", "")
	c.annotate(ann, AnnotationContainers, "app", "app,worker", "x", "", " , ", "dumpcatcher", "init")
	c.annotate(ann, AnnotationPreStop, "always", "on-pressure", "never", "sometimes")
	c.annotate(ann, AnnotationSizeLimit, "1Gi", "0", "lots", "-1")
	c.annotate(ann, AnnotationDestination, "s3://other-bucket/p", "gs://x", "file:///mnt/dumps", "",
		"s3://KEY:SECRET@dumps/p", "s3://KEY:SE/CRET@dumps/p", "s3://dumps?endpoint=https://KEY:SECRET@minio:9000", "s3://dumps?endpoint=https://minio:9000/SECRET")
	c.annotate(ann, AnnotationSecret, "creds", "Bad_Name", "")
	c.annotate(ann, AnnotationStatus, "{}", "garbage")
	c.annotate(ann, AnnotationAllowSharedPID, "true", "false", "yes")
	c.annotate(ann, AnnotationCompression, "zstd", "none", "gzip", "lz4")
	c.annotate(ann, AnnotationMetricsPort, "0", "9464", "8080", "http")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: c.pick("p", "", "web-1"), GenerateName: c.pick("", "web-abc-"), Annotations: ann,
		Labels: map[string]string{"pod-template-hash": "abc"}}}
	if c.n(3) == 0 {
		pod.OwnerReferences = []metav1.OwnerReference{{Kind: c.pick("ReplicaSet", "Job", "StatefulSet"), Name: c.pick("web-abc", "web", "job-1"), Controller: ptr(c.n(2) == 0)}}
	}
	names := []string{"app", "worker", "dumpcatcher", "sidecar"}
	for i, n := 0, 1+c.n(3); i < n; i++ {
		pod.Spec.Containers = append(pod.Spec.Containers, c.container(names[c.n(len(names))]))
	}
	for i, n := 0, c.n(3); i < n; i++ {
		ic := c.container(c.pick("init", "dumpcatcher"))
		if c.n(3) == 0 {
			ic.Command = []string{contract.BinaryPath, contract.CmdUpload}
		}
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, ic)
	}
	for i, n := 0, c.n(3); i < n; i++ {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: c.pick("dumpcatcher", "data", "dumpcatcher-credentials", "dumpcatcher-2")})
	}
	if c.n(2) == 0 {
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: c.uid(), RunAsGroup: c.uid()}
	}
	if g := c.n(4); g > 0 {
		pod.Spec.TerminationGracePeriodSeconds = ptr([]int64{0, 5, 90}[g-1])
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicy(c.pick("", "Always", "Never", "OnFailure"))
	switch c.n(8) {
	case 0:
		pod.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
	case 1:
		pod.Spec.NodeSelector = map[string]string{corev1.LabelOSStable: "windows"}
	}
	switch c.n(6) {
	case 0:
		pod.Spec.ShareProcessNamespace = ptr(true)
	case 1:
		pod.Spec.HostPID = true
	}
	cfg := config.Default("fuzz")
	cfg.Destination = c.pick("s3://dumps", "", "s3://dumps/a?endpoint=http://minio:9000")
	cfg.CredentialsSecret = c.pick("", "creds")
	cfg.SizeLimit = c.pick("", "1Gi")
	cfg.MountPath = c.pick("/dumpcatcher", "/var/dump")
	cfg.PreStop = c.pick(contract.Policies()...)
	cfg.MinTerminationGracePeriodSeconds = []int64{0, 60}[c.n(2)]
	cfg.ExcludedNamespaces = []string{"monitoring"}
	cfg.Upload = config.Upload{Compression: c.pick("", "zstd"), MetricsPort: []int32{0, 9464, 8080}[c.n(3)], DrainTimeout: c.pick("", "25s", "1m")}
	if c.n(6) == 0 {
		pod.Spec.HostNetwork = true
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("fuzz config invalid: %v", err)
	}
	labels := map[string]string{}
	c.annotate(labels, LabelInject, LabelEnabled, LabelDisabled, "on")
	in := Input{Pod: pod, Namespace: c.pick("default", "kube-system", "dumpcatcher-system", "monitoring", "shop"), NamespaceLabels: labels}
	return in, Options{Config: cfg, NativeSidecar: c.n(2) == 0, OwnNamespace: "dumpcatcher-system", Version: "fuzz"}
}

// FuzzInject: the injection never panics, never changes its input, denies
// only with an *AnnotationError that repeats no secret, never injects a
// destination with credentials, is idempotent, and never hands the JVM a
// reference to a variable that may be undefined.
func FuzzInject(f *testing.F) {
	for _, seed := range [][]byte{
		{}, {1}, {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 3, 0, 1, 2, 1, 1, 1, 2},
		[]byte("dumpcatcher injects java pods"), []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 1, 4},
		[]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x03\x00\x01\x01\x02\x01\x02\x01\x02\x02\x01\x00\x01"),
		// An injected container without a JAVA_TOOL_OPTIONS (checkErrorFile).
		[]byte("10020001020000000000000000100000002"),
		// An injected container whose literal JAVA_TOOL_OPTIONS sets its own
		// -XX:ErrorFile elsewhere (checkErrorFile).
		[]byte("\b\x00\x06\x00\x01\x00\x00\b\x00\x05\x00\x00\x04\x00\x00\x06\x05\x00\x00\a\x03\x00\x00\x00\x00\x00\x00\a\x03\x04\x00\x01\x06\x05\x02\b\x03\x05\x00\x06\x05"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, opts := fuzzInput(t, data)
		before := in.Pod.DeepCopy()
		res, err := Inject(in, opts)
		if diff := cmp.Diff(before, in.Pod); diff != "" {
			t.Fatalf("Inject changed its input:\n%s", diff)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("denial repeats a secret: %v", err)
		}
		if err == nil && res.Injected && strings.Contains(res.Pod.Annotations[AnnotationStatus], "SECRET") {
			t.Fatalf("a destination with a secret was injected: %s", res.Pod.Annotations[AnnotationStatus])
		}
		checkInvariants(t, in, opts, func() goldenResult {
			if err != nil {
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("error is not an *AnnotationError: %v", err)
				}
				return goldenResult{Error: err.Error()}
			}
			return goldenResult{Injected: res.Injected, Pod: res.Pod}
		}())
	})
}
