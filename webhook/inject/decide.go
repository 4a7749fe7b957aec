package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// decision is what decide concluded about one pod: inject it as plan says,
// or skip it for reason. warnings go to the user either way.
type decision struct {
	inject   bool
	reason   string
	warnings []string
	plan     plan
}

// plan is what to inject: the per-pod settings after the annotations
// override the configuration, and where the pod belongs.
type plan struct {
	namespace   string
	workload    Workload
	targets     []string
	destination string
	secret      string
	preStop     string
	sizeLimit   string
	// allowSharedPID: the pod accepts injection into a shared process
	// namespace (AnnotationAllowSharedPID).
	allowSharedPID bool
	// upload are the uploader's settings.
	upload config.Upload
}

// decide says whether a pod is to be injected and with which settings and
// targets; it reads the pod and changes nothing. An *AnnotationError means
// the pod must be denied.
func decide(in Input, opts Options) (decision, error) {
	pod := in.Pod
	ns := in.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	skip := func(reason string, warnings ...string) (decision, error) {
		return decision{reason: reason, warnings: warnings}, nil
	}
	switch {
	case ns == "kube-system":
		return skip("namespace kube-system is never injected")
	case ns != "" && ns == opts.OwnNamespace:
		return skip("the webhook's own namespace is never injected")
	case slices.Contains(opts.Config.ExcludedNamespaces, ns):
		return skip(fmt.Sprintf("namespace %s is excluded in the webhook configuration", ns))
	}
	ann := pod.Annotations
	if _, ok := ann[AnnotationStatus]; ok {
		return skip("already injected (" + AnnotationStatus + " is set)")
	}
	if hasOurSidecar(pod) {
		return skip("already injected (sidecar present)",
			fmt.Sprintf("dumpcatcher: pod already has the %q uploader but no %s annotation; not injected again", SidecarName, AnnotationStatus))
	}
	switch v, ok := ann[AnnotationInject]; {
	case ok && v == "false":
		return skip("opted out with " + AnnotationInject + `: "false"`)
	case ok && v != "true":
		return decision{}, &AnnotationError{AnnotationInject, v, `allowed values are "true" and "false"`}
	case !ok && in.NamespaceLabels[LabelInject] != LabelEnabled:
		return skip("not opted in")
	}
	if pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows {
		return skip("Windows pod", "dumpcatcher: Windows pods are not supported; not injected")
	}
	if why := notLinux(&pod.Spec); why != "" {
		return skip("runs only on non-Linux nodes ("+why+")",
			fmt.Sprintf("dumpcatcher: not injected: the pod runs only on non-Linux nodes (%s) and the uploader sidecar is a Linux image; Windows pods are not supported", why))
	}
	p, err := resolveSettings(pod, opts.Config)
	if err != nil {
		return decision{}, err
	}
	var warnings []string
	if shared := sharedPID(&pod.Spec); shared != "" {
		if !p.allowSharedPID {
			return skip("shares a process namespace ("+shared+")",
				fmt.Sprintf("dumpcatcher: not injected: the pod shares a process namespace (%s), so its app containers could read the uploader's storage credentials through /proc/<pid>/root; to inject it anyway and accept that, annotate the pod with %s: \"true\"", shared, AnnotationAllowSharedPID))
		}
		warnings = append(warnings, fmt.Sprintf("dumpcatcher: the pod shares a process namespace (%s) and %s is \"true\": its app containers can read the uploader's storage credentials through /proc/<pid>/root", shared, AnnotationAllowSharedPID))
	}
	if w := dropTakenMetricsPort(pod, &p); w != "" {
		warnings = append(warnings, w)
	}
	if p.destination == "" {
		return skip("no destination", fmt.Sprintf("dumpcatcher: not injected: no storage destination; set the pod annotation %s or destination in the webhook configuration", AnnotationDestination))
	}
	p.namespace = ns
	p.workload = in.Workload
	if p.workload.Name == "" {
		p.workload = workloadOf(pod)
	}
	return decision{inject: true, plan: p, warnings: warnings}, nil
}

// dropTakenMetricsPort turns the uploader's metrics off in a pod where the
// configured port may be taken (the uploader would fail to listen and
// crash-loop), and says so. A port the pod chose with its annotation was
// checked there.
func dropTakenMetricsPort(pod *corev1.Pod, p *plan) string {
	port := p.upload.MetricsPort
	if _, set := pod.Annotations[AnnotationMetricsPort]; set || port == 0 {
		return ""
	}
	var why string
	switch c := portOwner(pod, port); {
	case c != "":
		why = fmt.Sprintf("container %q already declares port %d, the uploader's metrics port in the webhook configuration (upload.metricsPort)", c, port)
	case pod.Spec.HostNetwork:
		why = fmt.Sprintf("the pod uses the host's network, where the uploader's metrics port %d (upload.metricsPort) may be taken", port)
	default:
		return ""
	}
	p.upload.MetricsPort = 0
	return fmt.Sprintf("dumpcatcher: %s; the uploader serves no metrics in this pod; pick a free port with the annotation %s", why, AnnotationMetricsPort)
}

// sharedPID names the fields that put the pod's containers into one process
// namespace with each other (or the node's), or returns "".
func sharedPID(spec *corev1.PodSpec) string {
	var fields []string
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		fields = append(fields, "spec.shareProcessNamespace")
	}
	if spec.HostPID {
		fields = append(fields, "spec.hostPID")
	}
	return strings.Join(fields, " and ")
}

// resolveSettings validates the override annotations and applies them over
// the configuration.
func resolveSettings(pod *corev1.Pod, cfg config.Config) (plan, error) {
	ann := pod.Annotations
	p := plan{destination: cfg.Destination, secret: cfg.CredentialsSecret, preStop: cfg.PreStop, sizeLimit: cfg.SizeLimit, upload: cfg.Upload}
	if v, ok := ann[AnnotationContainers]; ok {
		t, err := parseTargets(pod, v)
		if err != nil {
			return p, err
		}
		p.targets = t
	} else {
		for _, c := range pod.Spec.Containers {
			p.targets = append(p.targets, c.Name)
		}
	}
	if v, ok := ann[AnnotationDestination]; ok {
		if _, err := contract.ParseDestination(v); err != nil {
			return p, &AnnotationError{AnnotationDestination, v, err.Error()}
		}
		p.destination = v
	}
	if v, ok := ann[AnnotationSecret]; ok {
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return p, &AnnotationError{AnnotationSecret, v, "not a Secret name: " + strings.Join(errs, "; ")}
		}
		p.secret = v
	}
	if v, ok := ann[AnnotationPreStop]; ok {
		if !slices.Contains(contract.Policies(), v) {
			return p, &AnnotationError{AnnotationPreStop, v, "allowed values are " + strings.Join(contract.Policies(), ", ")}
		}
		p.preStop = v
	}
	switch v, ok := ann[AnnotationAllowSharedPID]; {
	case !ok || v == "false":
	case v == "true":
		p.allowSharedPID = true
	default:
		return p, &AnnotationError{AnnotationAllowSharedPID, v, `allowed values are "true" and "false"`}
	}
	if v, ok := ann[AnnotationSizeLimit]; ok {
		if err := config.ValidateSizeLimit(v); err != nil {
			return p, &AnnotationError{AnnotationSizeLimit, v, "want a quantity greater than zero, such as 4Gi"}
		}
		p.sizeLimit = v
	}
	if v, ok := ann[AnnotationCompression]; ok {
		if config.ValidateCompression(v) != nil {
			return p, &AnnotationError{AnnotationCompression, v, "allowed values are " + strings.Join(contract.Compressions(), ", ")}
		}
		p.upload.Compression = v
	}
	if v, ok := ann[AnnotationMetricsPort]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || (n != 0 && config.ValidatePort(int32(n)) != nil) {
			return p, &AnnotationError{AnnotationMetricsPort, v, `want a port number (1..65535) for the uploader's metrics, or "0" for none`}
		}
		if c := portOwner(pod, int32(n)); c != "" {
			return p, &AnnotationError{AnnotationMetricsPort, v, fmt.Sprintf("container %q already declares port %d; pick another port, or \"0\" for no uploader metrics", c, n)}
		}
		p.upload.MetricsPort = int32(n)
	}
	return p, nil
}

// portOwner names the container that declares TCP port n, or returns "".
func portOwner(pod *corev1.Pod, n int32) string {
	if n == 0 {
		return ""
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			for _, p := range c.Ports {
				if p.ContainerPort == n && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
					return c.Name
				}
			}
		}
	}
	return ""
}

func parseTargets(pod *corev1.Pod, v string) ([]string, error) {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	var targets []string
	for _, raw := range strings.Split(v, ",") {
		n := strings.TrimSpace(raw)
		if n == "" {
			continue
		}
		if !slices.Contains(names, n) {
			reason := fmt.Sprintf("no container %s in the pod; containers: %s", quote(n), strings.Join(names, ", "))
			for _, ic := range pod.Spec.InitContainers {
				if ic.Name == n {
					reason = fmt.Sprintf("%s is an init container; only regular containers can be targets: %s", quote(n), strings.Join(names, ", "))
				}
			}
			return nil, &AnnotationError{AnnotationContainers, v, reason}
		}
		if !slices.Contains(targets, n) {
			targets = append(targets, n)
		}
	}
	if len(targets) == 0 {
		return nil, &AnnotationError{AnnotationContainers, v, "name at least one container, comma-separated: " + strings.Join(names, ", ")}
	}
	return targets, nil
}

// hasOurSidecar recognises an injected uploader by name and command, so that
// a pod whose status annotation was removed is not injected twice.
func hasOurSidecar(pod *corev1.Pod) bool {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if strings.HasPrefix(c.Name, SidecarName) && len(c.Command) == 2 && c.Command[0] == contract.BinaryPath && c.Command[1] == contract.CmdUpload {
				return true
			}
		}
	}
	return false
}

// workloadOf names the pod's controller: a ReplicaSet with the
// pod-template-hash suffix stands for its Deployment.
func workloadOf(pod *corev1.Pod) Workload {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return Workload{Kind: "Deployment", Name: strings.TrimSuffix(o.Name, "-"+h)}
			}
		}
		return Workload{Kind: o.Kind, Name: o.Name}
	}
	switch {
	case pod.Name != "":
		return Workload{Kind: "Pod", Name: pod.Name}
	case pod.GenerateName != "":
		return Workload{Kind: "Pod", Name: strings.TrimRight(pod.GenerateName, "-")}
	}
	return Workload{Kind: "Pod", Name: "unnamed"}
}

// osLabels are the node labels that carry the node's operating system; the
// kubelet sets kubernetes.io/os on every node, and older selectors still
// use the beta label.
var osLabels = []string{corev1.LabelOSStable, "beta.kubernetes.io/os"}

// notLinux says what keeps the pod off Linux nodes: spec.os, a node
// selector or a required node affinity whose every term excludes Linux (In
// without linux, NotIn with linux, or DoesNotExist on kubernetes.io/os). It
// returns "" when the pod may run on Linux.
func notLinux(spec *corev1.PodSpec) string {
	if spec.OS != nil && spec.OS.Name != "" && spec.OS.Name != corev1.Linux {
		return "spec.os.name " + string(spec.OS.Name)
	}
	for _, key := range osLabels {
		if v, ok := spec.NodeSelector[key]; ok && v != string(corev1.Linux) {
			return "nodeSelector " + key + "=" + v
		}
	}
	if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil || spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return ""
	}
	for _, t := range terms {
		if !excludesLinux(t) {
			return ""
		}
	}
	return "required node affinity on " + corev1.LabelOSStable
}

// excludesLinux reports whether no Linux node can match a node selector
// term because of its operating system requirements.
func excludesLinux(t corev1.NodeSelectorTerm) bool {
	linux := string(corev1.Linux)
	for _, e := range t.MatchExpressions {
		if !slices.Contains(osLabels, e.Key) {
			continue
		}
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			if !slices.Contains(e.Values, linux) {
				return true
			}
		case corev1.NodeSelectorOpNotIn:
			if slices.Contains(e.Values, linux) {
				return true
			}
		case corev1.NodeSelectorOpDoesNotExist:
			if e.Key == corev1.LabelOSStable {
				return true
			}
		}
	}
	return false
}
