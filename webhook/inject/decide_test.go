package inject

import (
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDecide compares decide's whole result, like Istio's injectRequired
// test: whether a pod is injected, why not, and with which plan.
func TestDecide(t *testing.T) {
	cfg := config.Default("test")
	cfg.Destination = "s3://dumps/a"
	cfg.CredentialsSecret = "creds"
	cfg.SizeLimit = "2Gi"
	cfg.ExcludedNamespaces = []string{"monitoring"}
	opts := Options{Config: cfg, OwnNamespace: "dumpcatcher-system"}
	noDest := opts
	noDest.Config.Destination = ""
	metrics := opts
	metrics.Config.Upload = config.Upload{Compression: "zstd", MetricsPort: 9464}

	optedIn := map[string]string{AnnotationInject: "true"}
	pod := func(ann map[string]string, mod ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Annotations: ann},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "setup"}},
				Containers:     []corev1.Container{{Name: "app"}, {Name: "proxy"}},
			},
		}
		for _, m := range mod {
			m(p)
		}
		return p
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{AnnotationInject: "true"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// defaults is the plan of an opted-in pod in "shop" without overrides.
	defaults := plan{
		namespace: "shop", workload: Workload{Kind: "Pod", Name: "web-1"}, targets: []string{"app", "proxy"},
		destination: "s3://dumps/a", secret: "creds", preStop: contract.PolicyOnPressure, sizeLimit: "2Gi",
	}
	injected := func(mod func(*plan)) decision {
		p := defaults
		p.targets = append([]string(nil), defaults.targets...)
		if mod != nil {
			mod(&p)
		}
		return decision{inject: true, plan: p}
	}
	skipped := func(reason string, warnings ...string) decision {
		return decision{reason: reason, warnings: warnings}
	}

	tests := []struct {
		name    string
		in      Input
		opts    Options
		want    decision
		wantErr string
	}{
		{name: "opted in by annotation", in: Input{Pod: pod(optedIn)}, want: injected(nil)},
		{name: "namespace label", in: Input{Pod: pod(nil), NamespaceLabels: map[string]string{LabelInject: LabelEnabled}}, want: injected(nil)},
		{name: "namespace label other than enabled", in: Input{Pod: pod(nil), NamespaceLabels: map[string]string{LabelInject: "on"}}, want: skipped("not opted in")},
		{name: "not opted in", in: Input{Pod: pod(nil)}, want: skipped("not opted in")},
		{name: "opt-out beats the label", in: Input{Pod: pod(map[string]string{AnnotationInject: "false"}), NamespaceLabels: map[string]string{LabelInject: LabelEnabled}},
			want: skipped(`opted out with dumpcatcher.io/inject: "false"`)},
		{name: "input namespace beats the pod's", in: Input{Pod: pod(optedIn), Namespace: "kube-system"}, want: skipped("namespace kube-system is never injected")},
		{name: "own namespace", in: Input{Pod: pod(optedIn), Namespace: "dumpcatcher-system"}, want: skipped("the webhook's own namespace is never injected")},
		{name: "excluded namespace", in: Input{Pod: pod(optedIn), Namespace: "monitoring"}, want: skipped("namespace monitoring is excluded in the webhook configuration")},
		{name: "status annotation", in: Input{Pod: pod(with(AnnotationStatus, "{}"))}, want: skipped("already injected (dumpcatcher.io/status is set)")},
		{name: "sidecar present", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "dumpcatcher-2", Command: []string{contract.BinaryPath, contract.CmdUpload}})
		})}, want: skipped("already injected (sidecar present)", `dumpcatcher: pod already has the "dumpcatcher" uploader but no dumpcatcher.io/status annotation; not injected again`)},
		{name: "spec.os windows", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} })},
			want: skipped("Windows pod", "dumpcatcher: Windows pods are not supported; not injected")},
		{name: "nodeSelector windows", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"} })},
			want: skipped("runs only on non-Linux nodes (nodeSelector kubernetes.io/os=windows)", "dumpcatcher: not injected: the pod runs only on non-Linux nodes (nodeSelector kubernetes.io/os=windows) and the uploader sidecar is a Linux image; Windows pods are not supported")},
		{name: "nodeSelector linux", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"} })}, want: injected(nil)},
		{name: "shareProcessNamespace", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = ptr(true) })},
			want: skipped("shares a process namespace (spec.shareProcessNamespace)", `dumpcatcher: not injected: the pod shares a process namespace (spec.shareProcessNamespace), so its app containers could read the uploader's storage credentials through /proc/<pid>/root; to inject it anyway and accept that, annotate the pod with dumpcatcher.io/allow-shared-pid: "true"`)},
		{name: "shareProcessNamespace false", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = ptr(false) })}, want: injected(nil)},
		{name: "hostPID, allow-shared-pid false", in: Input{Pod: pod(with(AnnotationAllowSharedPID, "false"), func(p *corev1.Pod) { p.Spec.HostPID = true })},
			want: skipped("shares a process namespace (spec.hostPID)", `dumpcatcher: not injected: the pod shares a process namespace (spec.hostPID), so its app containers could read the uploader's storage credentials through /proc/<pid>/root; to inject it anyway and accept that, annotate the pod with dumpcatcher.io/allow-shared-pid: "true"`)},
		{name: "both, allowed", in: Input{Pod: pod(with(AnnotationAllowSharedPID, "true"), func(p *corev1.Pod) { p.Spec.HostPID = true; p.Spec.ShareProcessNamespace = ptr(true) })},
			want: func() decision {
				d := injected(func(p *plan) { p.allowSharedPID = true })
				d.warnings = []string{`dumpcatcher: the pod shares a process namespace (spec.shareProcessNamespace and spec.hostPID) and dumpcatcher.io/allow-shared-pid is "true": its app containers can read the uploader's storage credentials through /proc/<pid>/root`}
				return d
			}()},
		{name: "allowed but not shared", in: Input{Pod: pod(with(AnnotationAllowSharedPID, "true"))}, want: injected(func(p *plan) { p.allowSharedPID = true })},
		{name: "upload settings from the config", in: Input{Pod: pod(optedIn)}, opts: metrics,
			want: injected(func(p *plan) { p.upload = config.Upload{Compression: "zstd", MetricsPort: 9464} })},
		{name: "upload annotations", in: Input{Pod: pod(with(AnnotationCompression, "none", AnnotationMetricsPort, "0"))}, opts: metrics,
			want: injected(func(p *plan) { p.upload = config.Upload{Compression: "none"} })},
		{name: "metrics port annotation", in: Input{Pod: pod(with(AnnotationMetricsPort, "9100"))},
			want: injected(func(p *plan) { p.upload.MetricsPort = 9100 })},
		{name: "configured metrics port taken", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Ports = []corev1.ContainerPort{{ContainerPort: 9464}}
		})}, opts: metrics,
			want: func() decision {
				d := injected(func(p *plan) { p.upload = config.Upload{Compression: "zstd"} })
				d.warnings = []string{`dumpcatcher: container "setup" already declares port 9464, the uploader's metrics port in the webhook configuration (upload.metricsPort); the uploader serves no metrics in this pod; pick a free port with the annotation dumpcatcher.io/metrics-port`}
				return d
			}()},
		{name: "configured metrics port, UDP port of the same number", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 9464, Protocol: corev1.ProtocolUDP}}
		})}, opts: metrics,
			want: injected(func(p *plan) { p.upload = config.Upload{Compression: "zstd", MetricsPort: 9464} })},
		{name: "configured metrics port, host network", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) { p.Spec.HostNetwork = true })}, opts: metrics,
			want: func() decision {
				d := injected(func(p *plan) { p.upload = config.Upload{Compression: "zstd"} })
				d.warnings = []string{`dumpcatcher: the pod uses the host's network, where the uploader's metrics port 9464 (upload.metricsPort) may be taken; the uploader serves no metrics in this pod; pick a free port with the annotation dumpcatcher.io/metrics-port`}
				return d
			}()},
		{name: "metrics port annotation, host network", in: Input{Pod: pod(with(AnnotationMetricsPort, "9100"), func(p *corev1.Pod) { p.Spec.HostNetwork = true })}, opts: metrics,
			want: injected(func(p *plan) { p.upload = config.Upload{Compression: "zstd", MetricsPort: 9100} })},
		{name: "no destination", in: Input{Pod: pod(optedIn)}, opts: noDest,
			want: skipped("no destination", "dumpcatcher: not injected: no storage destination; set the pod annotation dumpcatcher.io/destination or destination in the webhook configuration")},
		{name: "destination annotation without a configured one", in: Input{Pod: pod(with(AnnotationDestination, "file:///mnt/dumps"))}, opts: noDest,
			want: injected(func(p *plan) { p.destination = "file:///mnt/dumps" })},
		{name: "overrides", in: Input{Pod: pod(with(
			AnnotationContainers, " proxy, app ,proxy", AnnotationDestination, "s3://other/b", AnnotationSecret, "other-creds",
			AnnotationPreStop, "never", AnnotationSizeLimit, "8Gi"))},
			want: injected(func(p *plan) {
				p.targets = []string{"proxy", "app"}
				p.destination, p.secret, p.preStop, p.sizeLimit = "s3://other/b", "other-creds", contract.PolicyNever, "8Gi"
			})},
		{name: "workload from the input", in: Input{Pod: pod(optedIn), Workload: Workload{Kind: "CronJob", Name: "nightly"}},
			want: injected(func(p *plan) { p.workload = Workload{Kind: "CronJob", Name: "nightly"} })},
		{name: "workload from the controller", in: Input{Pod: pod(optedIn, func(p *corev1.Pod) {
			yes := true
			p.Labels = map[string]string{"pod-template-hash": "7f9c"}
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7f9c", Controller: &yes}}
		})}, want: injected(func(p *plan) { p.workload = Workload{Kind: "Deployment", Name: "web"} })},
		{name: "invalid inject value", in: Input{Pod: pod(map[string]string{AnnotationInject: "yes"})}, wantErr: "annotation dumpcatcher.io/inject"},
		{name: "invalid target", in: Input{Pod: pod(with(AnnotationContainers, "nope"))}, wantErr: "annotation dumpcatcher.io/containers"},
		{name: "init container target", in: Input{Pod: pod(with(AnnotationContainers, "setup"))}, wantErr: "is an init container"},
		{name: "invalid destination", in: Input{Pod: pod(with(AnnotationDestination, "gs://x"))}, wantErr: "annotation dumpcatcher.io/destination"},
		{name: "invalid secret", in: Input{Pod: pod(with(AnnotationSecret, "Bad_Name"))}, wantErr: "annotation dumpcatcher.io/secret"},
		{name: "invalid prestop", in: Input{Pod: pod(with(AnnotationPreStop, "sometimes"))}, wantErr: "annotation dumpcatcher.io/prestop"},
		{name: "invalid allow-shared-pid", in: Input{Pod: pod(with(AnnotationAllowSharedPID, "True"))}, wantErr: "annotation dumpcatcher.io/allow-shared-pid"},
		{name: "invalid compression", in: Input{Pod: pod(with(AnnotationCompression, "GZIP"))}, wantErr: `annotation dumpcatcher.io/compression: invalid value "GZIP": allowed values are gzip, zstd, none`},
		{name: "metrics port not a number", in: Input{Pod: pod(with(AnnotationMetricsPort, "http"))}, wantErr: "annotation dumpcatcher.io/metrics-port"},
		{name: "metrics port too high", in: Input{Pod: pod(with(AnnotationMetricsPort, "70000"))}, wantErr: "want a port number (1..65535)"},
		{name: "metrics port negative", in: Input{Pod: pod(with(AnnotationMetricsPort, "-1"))}, wantErr: "want a port number (1..65535)"},
		{name: "metrics port taken", in: Input{Pod: pod(with(AnnotationMetricsPort, "8080"), func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
		})}, wantErr: `container "proxy" already declares port 8080`},
		{name: "invalid size limit", in: Input{Pod: pod(with(AnnotationSizeLimit, "0"))}, wantErr: "annotation dumpcatcher.io/size-limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts
			if tt.opts.Config.MountPath != "" {
				o = tt.opts
			}
			before := tt.in.Pod.DeepCopy()
			got, err := decide(tt.in, o)
			if diff := cmp.Diff(before, tt.in.Pod); diff != "" {
				t.Errorf("decide changed the pod:\n%s", diff)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if _, ok := err.(*AnnotationError); !ok {
					t.Errorf("error is a %T, want *AnnotationError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(decision{}, plan{})); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotLinux(t *testing.T) {
	expr := func(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	term := func(e ...corev1.NodeSelectorRequirement) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: e}
	}
	required := func(terms ...corev1.NodeSelectorTerm) corev1.PodSpec {
		return corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}}
	}
	const os, beta = "kubernetes.io/os", "beta.kubernetes.io/os"
	const affinity = "required node affinity on kubernetes.io/os"
	tests := []struct {
		name string
		spec corev1.PodSpec
		want string
	}{
		{"nothing", corev1.PodSpec{}, ""},
		{"spec.os linux", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Linux}}, ""},
		{"spec.os windows", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Windows}}, "spec.os.name windows"},
		{"nodeSelector linux", corev1.PodSpec{NodeSelector: map[string]string{os: "linux"}}, ""},
		{"nodeSelector windows", corev1.PodSpec{NodeSelector: map[string]string{os: "windows", "pool": "win"}}, "nodeSelector kubernetes.io/os=windows"},
		{"nodeSelector beta label", corev1.PodSpec{NodeSelector: map[string]string{beta: "windows"}}, "nodeSelector beta.kubernetes.io/os=windows"},
		{"nodeSelector other label", corev1.PodSpec{NodeSelector: map[string]string{"os": "windows"}}, ""},
		{"In windows", required(term(expr(os, corev1.NodeSelectorOpIn, "windows"))), affinity},
		{"In linux and windows", required(term(expr(os, corev1.NodeSelectorOpIn, "linux", "windows"))), ""},
		{"NotIn linux", required(term(expr(os, corev1.NodeSelectorOpNotIn, "linux"))), affinity},
		{"NotIn windows", required(term(expr(os, corev1.NodeSelectorOpNotIn, "windows"))), ""},
		{"DoesNotExist", required(term(expr(os, corev1.NodeSelectorOpDoesNotExist))), affinity},
		{"DoesNotExist on the beta label", required(term(expr(beta, corev1.NodeSelectorOpDoesNotExist))), ""},
		{"Exists", required(term(expr(os, corev1.NodeSelectorOpExists))), ""},
		{"beta In windows", required(term(expr(beta, corev1.NodeSelectorOpIn, "windows"))), affinity},
		{"every term excludes linux", required(
			term(expr(os, corev1.NodeSelectorOpIn, "windows")),
			term(expr("zone", corev1.NodeSelectorOpIn, "a"), expr(os, corev1.NodeSelectorOpNotIn, "linux"))), affinity},
		{"one term admits linux", required(
			term(expr(os, corev1.NodeSelectorOpIn, "windows")),
			term(expr("zone", corev1.NodeSelectorOpIn, "a"))), ""},
		{"no terms", required(), ""},
		{"preferred only", corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: term(expr(os, corev1.NodeSelectorOpIn, "windows"))}}}}}, ""},
	}
	for _, tt := range tests {
		if got := notLinux(&tt.spec); got != tt.want {
			t.Errorf("%s: notLinux = %q, want %q", tt.name, got, tt.want)
		}
	}
}
