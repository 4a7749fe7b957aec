// Package inject is dumpcatcher's pod mutation: a pure function of the pod,
// its namespace and the configuration. The admission handler and the offline
// `inject` command both call Inject and only adapt its result.
package inject

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// defaultGracePeriodSeconds is what Kubernetes uses when a pod sets none.
const defaultGracePeriodSeconds = 30

// Options are the resolved inputs that do not come from the pod.
type Options struct {
	// Config is the validated webhook configuration.
	Config config.Config
	// NativeSidecar: the sidecar is an init container with restartPolicy
	// Always (config "auto" resolved against the API server's version).
	NativeSidecar bool
	// OwnNamespace is the webhook's namespace; its pods are never injected.
	OwnNamespace string
	// Version is the webhook's version, recorded in the status annotation.
	Version string
}

// Input is one pod to decide on and inject.
type Input struct {
	// Pod is not modified.
	Pod *corev1.Pod
	// Namespace is the pod's namespace; empty means Pod.Namespace.
	Namespace string
	// NamespaceLabels are the labels of the pod's namespace.
	NamespaceLabels map[string]string
	// Workload names the pod's owner; zero means: derive it from the pod's
	// controller reference (or its name).
	Workload Workload
}

// Workload is the object that owns a pod, e.g. Deployment "web".
type Workload struct {
	Kind string
	Name string
}

func (w Workload) String() string { return strings.ToLower(w.Kind) + "/" + w.Name }

// Result is what Inject decided and did.
type Result struct {
	// Pod is the injected pod, or an unchanged copy when Injected is false.
	Pod *corev1.Pod
	// Injected reports whether Pod differs from the input.
	Injected bool
	// Reason says why the pod was not injected (empty when it was).
	Reason string
	// Warnings are non-fatal surprises to report to the user.
	Warnings []string
}

// AnnotationError is an invalid annotation value: the pod is denied with it.
type AnnotationError struct {
	Annotation string
	Value      string
	Reason     string
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s: invalid value %q: %s", e.Annotation, e.Value, e.Reason)
}

// Status is the JSON of the dumpcatcher.io/status annotation.
type Status struct {
	Version       string            `json:"version"`
	Containers    []ContainerStatus `json:"containers"`
	Sidecar       string            `json:"sidecar"`
	NativeSidecar bool              `json:"nativeSidecar"`
	Volume        string            `json:"volume"`
	PreStop       string            `json:"preStop"`
	Destination   string            `json:"destination"`
	Secret        string            `json:"secret,omitempty"`
	Workload      string            `json:"workload"`
}

// ContainerStatus says what was injected into one target container.
type ContainerStatus struct {
	Name string `json:"name"`
	// MountPath of the shared volume in this container.
	MountPath string `json:"mountPath"`
	// JavaToolOptions: added, merged, valueFrom or envFrom.
	JavaToolOptions string `json:"javaToolOptions"`
	// PreStop is true when the dump hook was added.
	PreStop bool `json:"preStop"`
}

// podSettings are the per-pod values after annotations override the config.
type podSettings struct {
	targets     []string
	destination string
	secret      string
	preStop     string
	sizeLimit   string
}

// Inject decides whether the pod is to be injected and, if so, returns the
// injected copy. An *AnnotationError means the pod must be denied.
func Inject(in Input, opts Options) (Result, error) {
	pod := in.Pod.DeepCopy()
	ns := in.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	skip := func(reason string, warnings ...string) (Result, error) {
		return Result{Pod: pod, Reason: reason, Warnings: warnings}, nil
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
		return Result{}, &AnnotationError{AnnotationInject, v, `allowed values are "true" and "false"`}
	case !ok && in.NamespaceLabels[LabelInject] != LabelEnabled:
		return skip("not opted in")
	}
	if pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows {
		return skip("Windows pod", "dumpcatcher: Windows pods are not supported; not injected")
	}
	ps, err := resolveSettings(pod, opts.Config)
	if err != nil {
		return Result{}, err
	}
	if ps.destination == "" {
		return skip("no destination", fmt.Sprintf("dumpcatcher: not injected: no storage destination; set the pod annotation %s or destination in the webhook configuration", AnnotationDestination))
	}
	wl := in.Workload
	if wl.Name == "" {
		wl = workloadOf(pod)
	}
	warnings := mutate(pod, ns, wl, ps, opts)
	return Result{Pod: pod, Injected: true, Warnings: warnings}, nil
}

// resolveSettings validates the override annotations and applies them over
// the configuration.
func resolveSettings(pod *corev1.Pod, cfg config.Config) (podSettings, error) {
	ann := pod.Annotations
	ps := podSettings{destination: cfg.Destination, secret: cfg.CredentialsSecret, preStop: cfg.PreStop, sizeLimit: cfg.SizeLimit}
	if v, ok := ann[AnnotationContainers]; ok {
		t, err := parseTargets(pod, v)
		if err != nil {
			return ps, err
		}
		ps.targets = t
	} else {
		for _, c := range pod.Spec.Containers {
			ps.targets = append(ps.targets, c.Name)
		}
	}
	if v, ok := ann[AnnotationDestination]; ok {
		if _, err := contract.ParseDestination(v); err != nil {
			return ps, &AnnotationError{AnnotationDestination, v, err.Error()}
		}
		ps.destination = v
	}
	if v, ok := ann[AnnotationSecret]; ok {
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return ps, &AnnotationError{AnnotationSecret, v, "not a Secret name: " + strings.Join(errs, "; ")}
		}
		ps.secret = v
	}
	if v, ok := ann[AnnotationPreStop]; ok {
		if !slices.Contains(contract.Policies(), v) {
			return ps, &AnnotationError{AnnotationPreStop, v, "allowed values are " + strings.Join(contract.Policies(), ", ")}
		}
		ps.preStop = v
	}
	if v, ok := ann[AnnotationSizeLimit]; ok {
		if err := config.ValidateSizeLimit(v); err != nil {
			return ps, &AnnotationError{AnnotationSizeLimit, v, "want a quantity greater than zero, such as 4Gi"}
		}
		ps.sizeLimit = v
	}
	return ps, nil
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
			reason := fmt.Sprintf("no container %q in the pod; containers: %s", n, strings.Join(names, ", "))
			for _, ic := range pod.Spec.InitContainers {
				if ic.Name == n {
					reason = fmt.Sprintf("%q is an init container; only regular containers can be targets: %s", n, strings.Join(names, ", "))
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

// mutate injects the plumbing into pod (in place) and returns warnings.
func mutate(pod *corev1.Pod, ns string, wl Workload, ps podSettings, opts Options) []string {
	cfg := opts.Config
	var warnings []string
	warnf := func(format string, a ...any) { warnings = append(warnings, "dumpcatcher: "+fmt.Sprintf(format, a...)) }

	volName := uniqueVolumeName(pod, VolumeName)
	vol := corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	if ps.sizeLimit != "" {
		q := resource.MustParse(ps.sizeLimit)
		vol.EmptyDir.SizeLimit = &q
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, vol)

	grace := int64(defaultGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	hook := ps.preStop != contract.PolicyNever
	if hook && grace < cfg.MinTerminationGracePeriodSeconds {
		grace = cfg.MinTerminationGracePeriodSeconds
		pod.Spec.TerminationGracePeriodSeconds = &grace
	}

	status := Status{
		Version: opts.Version, NativeSidecar: opts.NativeSidecar, Volume: volName,
		PreStop: ps.preStop, Destination: ps.destination, Secret: ps.secret, Workload: wl.String(),
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if !slices.Contains(ps.targets, c.Name) {
			continue
		}
		base := uniqueMountPath(c, cfg.MountPath)
		if base != cfg.MountPath {
			warnf("container %q already mounts something at or below %s; the shared volume is mounted at %s instead", c.Name, cfg.MountPath, base)
		}
		dumpDir := base + "/" + contract.DumpsDir
		c.VolumeMounts = append(c.VolumeMounts,
			corev1.VolumeMount{Name: volName, MountPath: base + "/" + contract.BinDir, SubPath: contract.BinDir, ReadOnly: true},
			corev1.VolumeMount{Name: volName, MountPath: dumpDir, SubPath: contract.DumpsDir + "/" + c.Name},
		)
		var mode string
		c.Env, mode = mergeJavaToolOptions(c.Env, c.EnvFrom, contract.DumpOptions(dumpDir))
		if where := overridingFlags(c); len(where) > 0 {
			warnf("container %q sets -XX:HeapDumpPath or -XX:-HeapDumpOnOutOfMemoryError in its %s, which overrides JAVA_TOOL_OPTIONS: OOM dumps may not reach %s; remove the option there", c.Name, strings.Join(where, " and "), dumpDir)
		}
		if hook {
			args := []string{
				base + "/" + contract.BinDir + "/" + contract.BinaryName, contract.CmdDump,
				contract.FlagReason + "=" + contract.ReasonPreStop,
				contract.FlagPolicy + "=" + ps.preStop,
				contract.FlagDir + "=" + dumpDir,
				contract.FlagContainer + "=" + c.Name,
				contract.FlagNamespace + "=" + ns,
				contract.FlagWorkload + "=" + wl.String(),
				contract.FlagGracePeriod + "=" + strconv.FormatInt(grace, 10),
			}
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				orig, _ := json.Marshal(c.Lifecycle.PreStop) // a LifecycleHandler always marshals
				args = append(args, contract.FlagThen+"="+string(orig))
			}
			if c.Lifecycle == nil {
				c.Lifecycle = &corev1.Lifecycle{}
			}
			c.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: args}}
		}
		status.Containers = append(status.Containers, ContainerStatus{Name: c.Name, MountPath: base, JavaToolOptions: mode, PreStop: hook})
	}

	sc, scWarnings := sidecarSecurityContext(pod, ps.targets)
	warnings = append(warnings, scWarnings...)
	sidecar := corev1.Container{
		Name:                     uniqueContainerName(pod, SidecarName),
		Image:                    cfg.Sidecar.Image,
		ImagePullPolicy:          cfg.Sidecar.ImagePullPolicy,
		Command:                  []string{contract.BinaryPath, contract.CmdUpload},
		Env:                      sidecarEnv(ps, wl),
		Resources:                *cfg.Sidecar.Resources.DeepCopy(),
		VolumeMounts:             []corev1.VolumeMount{{Name: volName, MountPath: contract.SidecarDir}},
		SecurityContext:          sc,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if ps.secret != "" {
		credName := uniqueVolumeName(pod, CredentialsVolumeName)
		optional := true
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: credName, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: ps.secret, Optional: &optional}}})
		sidecar.VolumeMounts = append(sidecar.VolumeMounts, corev1.VolumeMount{Name: credName, MountPath: contract.CredentialsMountPath, ReadOnly: true})
	}
	status.Sidecar = sidecar.Name
	if opts.NativeSidecar {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, sidecar)
		if pod.Spec.RestartPolicy == corev1.RestartPolicyNever || pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure {
			warnf("the uploader runs as a regular container (nativeSidecar is off), so this run-to-completion pod (restartPolicy %s) keeps running after its app exits; use native sidecars (Kubernetes 1.29+)", pod.Spec.RestartPolicy)
		}
	}

	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationStatus] = status.String()
	return warnings
}

func sidecarEnv(ps podSettings, wl Workload) []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		{Name: contract.EnvDir, Value: contract.SidecarDir},
		{Name: contract.EnvDestination, Value: ps.destination},
	}
	if ps.secret != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvCredentialsDir, Value: contract.CredentialsMountPath})
	}
	return append(env,
		field(contract.EnvPodName, "metadata.name"),
		field(contract.EnvPodNamespace, "metadata.namespace"),
		field(contract.EnvPodUID, "metadata.uid"),
		field(contract.EnvNodeName, "spec.nodeName"),
		corev1.EnvVar{Name: contract.EnvWorkload, Value: wl.String()},
		corev1.EnvVar{Name: contract.EnvContainers, Value: strings.Join(ps.targets, ",")},
	)
}

// sidecarSecurityContext satisfies the Pod Security Standard "restricted"
// and runs the uploader as the targets' uid and gid, because the JVM writes
// heap dumps with mode 0600.
func sidecarSecurityContext(pod *corev1.Pod, targets []string) (*corev1.SecurityContext, []string) {
	var warnings []string
	no, yes := false, true
	sc := &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   &yes,
		RunAsNonRoot:             &yes,
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	var uid, gid *int64
	uidOwner := ""
	for _, c := range pod.Spec.Containers {
		if !slices.Contains(targets, c.Name) {
			continue
		}
		u, g := effectiveIDs(pod, &c)
		switch {
		case u == nil:
			warnings = append(warnings, fmt.Sprintf("dumpcatcher: container %q has no runAsUser (nor has the pod): the uploader can read the OOM dumps the JVM writes with mode 0600 only if it runs as the same uid; set securityContext.runAsUser on the pod or the container", c.Name))
		case uid == nil:
			uid, gid, uidOwner = u, g, c.Name
		case *u != *uid:
			warnings = append(warnings, fmt.Sprintf("dumpcatcher: containers %q (uid %d) and %q (uid %d) run as different users: the uploader runs as uid %d and cannot read OOM dumps of %q; run the targets as one uid or pick one with %s", uidOwner, *uid, c.Name, *u, *uid, c.Name, AnnotationContainers))
		}
	}
	if uid != nil {
		sc.RunAsUser = ptr(*uid)
		if *uid == 0 {
			sc.RunAsNonRoot = nil
		}
	}
	if gid != nil {
		sc.RunAsGroup = ptr(*gid)
	}
	return sc, warnings
}

func effectiveIDs(pod *corev1.Pod, c *corev1.Container) (uid, gid *int64) {
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			uid = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			gid = csc.RunAsGroup
		}
	}
	return uid, gid
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

func uniqueVolumeName(pod *corev1.Pod, base string) string {
	return unique(base, func(n string) bool {
		for _, v := range pod.Spec.Volumes {
			if v.Name == n {
				return true
			}
		}
		return false
	})
}

func uniqueContainerName(pod *corev1.Pod, base string) string {
	return unique(base, func(n string) bool {
		for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for _, c := range list {
				if c.Name == n {
					return true
				}
			}
		}
		return false
	})
}

// uniqueMountPath returns base, or base-N when the container already mounts
// something at, above or below it.
func uniqueMountPath(c *corev1.Container, base string) string {
	return unique(base, func(p string) bool {
		for _, m := range c.VolumeMounts {
			if overlaps(path.Clean(m.MountPath), p) {
				return true
			}
		}
		return false
	})
}

func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || (a != "/" && strings.HasPrefix(b, a+"/"))
}

func unique(base string, taken func(string) bool) string {
	n := base
	for i := 2; taken(n); i++ {
		n = base + "-" + strconv.Itoa(i)
	}
	return n
}

func ptr[T any](v T) *T { return &v }

// String is the annotation value: compact JSON without HTML escaping, so
// that destination URLs stay readable.
func (s Status) String() string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // plain strings, bools and slices always encode
	return strings.TrimSuffix(b.String(), "\n")
}

// ParseStatus decodes a dumpcatcher.io/status annotation.
func ParseStatus(s string) (Status, error) {
	var st Status
	err := json.Unmarshal([]byte(s), &st)
	return st, err
}
