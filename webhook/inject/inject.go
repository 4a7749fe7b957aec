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
	"k8s.io/apimachinery/pkg/util/intstr"
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
//
// Its message ends up in the admission response, the webhook's log and the
// events of the pod's ReplicaSet or Job, so it quotes Value only when it is
// a short enum-like word (see quote) and never for dumpcatcher.io/destination,
// which may carry credentials; Reason must follow the same rule.
type AnnotationError struct {
	Annotation string
	// Value is the annotation's value; Error does not print it unless it is
	// short and harmless.
	Value  string
	Reason string
}

func (e *AnnotationError) Error() string {
	if e.Annotation == AnnotationDestination || !isShortWord(e.Value) {
		return fmt.Sprintf("annotation %s: invalid value: %s", e.Annotation, e.Reason)
	}
	return fmt.Sprintf("annotation %s: invalid value %q: %s", e.Annotation, e.Value, e.Reason)
}

// maxShownValue bounds the annotation values an error may quote: enums
// (on-pressure, gzip), quantities and container names fit; tokens and keys
// do not.
const maxShownValue = 16

// isShortWord reports whether an annotation value (or a part of it) is short
// and made of letters, digits, spaces and . _ , - only, so that quoting it in
// an error cannot leak a secret.
func isShortWord(v string) bool {
	if len(v) > maxShownValue {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" ._,-", r)) {
			return false
		}
	}
	return true
}

// quote is v in quotes when isShortWord, else a description without it.
func quote(v string) string {
	if isShortWord(v) {
		return strconv.Quote(v)
	}
	return fmt.Sprintf("(a value of %d characters, not shown)", len(v))
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

// Inject decides whether the pod is to be injected and, if so, returns the
// injected copy. An *AnnotationError means the pod must be denied.
func Inject(in Input, opts Options) (Result, error) {
	pod := in.Pod.DeepCopy()
	d, err := decide(in, opts)
	if err != nil {
		return Result{}, err
	}
	if !d.inject {
		return Result{Pod: pod, Reason: d.reason, Warnings: d.warnings}, nil
	}
	warnings := mutate(pod, d.plan, opts)
	return Result{Pod: pod, Injected: true, Warnings: append(d.warnings, warnings...)}, nil
}

// warnings collects the non-fatal surprises of one injection.
type warnings []string

func (w *warnings) addf(format string, a ...any) {
	*w = append(*w, "dumpcatcher: "+fmt.Sprintf(format, a...))
}

// mutate injects the plumbing that p describes into pod (in place), one
// named step after the other, and returns warnings.
func mutate(pod *corev1.Pod, p plan, opts Options) []string {
	var w warnings
	cfg := opts.Config
	volName := addVolume(pod, p.sizeLimit)
	hook := p.preStop != contract.PolicyNever
	grace := raiseGracePeriod(pod, hook, cfg.MinTerminationGracePeriodSeconds)
	status := Status{
		Version: opts.Version, NativeSidecar: opts.NativeSidecar, Volume: volName,
		PreStop: p.preStop, Destination: p.destination, Secret: p.secret, Workload: p.workload.String(),
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if slices.Contains(p.targets, c.Name) {
			status.Containers = append(status.Containers, injectTarget(c, volName, grace, hook, p, cfg.MountPath, &w))
		}
	}
	sidecar := newSidecar(pod, volName, grace, p, cfg, &w)
	addCredentials(pod, &sidecar, p.secret)
	status.Sidecar = sidecar.Name
	placeSidecar(pod, sidecar, opts.NativeSidecar, &w)
	setStatus(pod, status)
	return w
}

// addVolume adds the shared emptyDir and returns its name.
func addVolume(pod *corev1.Pod, sizeLimit string) string {
	name := uniqueVolumeName(pod, VolumeName)
	vol := corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	if sizeLimit != "" {
		q := resource.MustParse(sizeLimit) // validated by decide
		vol.EmptyDir.SizeLimit = &q
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, vol)
	return name
}

// raiseGracePeriod raises the pod's termination grace period to min when a
// preStop dump is injected, and returns the effective grace period.
func raiseGracePeriod(pod *corev1.Pod, hook bool, min int64) int64 {
	grace := int64(defaultGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if hook && grace < min {
		grace = min
		pod.Spec.TerminationGracePeriodSeconds = &grace
	}
	return grace
}

// injectTarget mounts the shared volume into one target container, points
// its JVM's heap dumps at it and chains the dump hook before its preStop.
func injectTarget(c *corev1.Container, volName string, grace int64, hook bool, p plan, mountPath string, w *warnings) ContainerStatus {
	base := uniqueMountPath(c, mountPath)
	if base != mountPath {
		w.addf("container %q already mounts something at or below %s; the shared volume is mounted at %s instead", c.Name, mountPath, base)
	}
	dumpDir := base + "/" + contract.DumpsDir
	mountShared(c, volName, base)
	mode := setDumpOptions(c, dumpDir, w)
	if hook {
		orig := originalPreStop(c, w)
		addPreStop(c, preStopArgs(c.Name, base, dumpDir, grace, p), orig)
	}
	return ContainerStatus{Name: c.Name, MountPath: base, JavaToolOptions: mode, PreStop: hook}
}

// mountShared mounts the binary directory read-only and the container's own
// dump directory at base.
func mountShared(c *corev1.Container, volName, base string) {
	c.VolumeMounts = append(c.VolumeMounts,
		corev1.VolumeMount{Name: volName, MountPath: base + "/" + contract.BinDir, SubPath: contract.BinDir, ReadOnly: true},
		corev1.VolumeMount{Name: volName, MountPath: base + "/" + contract.DumpsDir, SubPath: contract.DumpsDir + "/" + c.Name},
	)
}

// setDumpOptions merges the dump options and the crash log option into
// JAVA_TOOL_OPTIONS and returns how (the status's javaToolOptions).
//
// A -XX:ErrorFile of the user's wins: in a literal JAVA_TOOL_OPTIONS it is
// kept and ours is not added; on the command line, in JDK_JAVA_OPTIONS or
// _JAVA_OPTIONS it beats JAVA_TOOL_OPTIONS anyway. Either way a warning says
// that crash logs are uploaded only when it names the crash log pattern in
// the dump directory (no warning when it does). A
// JAVA_TOOL_OPTIONS from valueFrom or envFrom cannot be read here: it is
// referenced before ours ("$(DUMPCATCHER_ORIGINAL_JAVA_TOOL_OPTIONS) <ours>",
// status javaToolOptions valueFrom or envFrom), so HotSpot's last-wins
// makes our -XX:ErrorFile beat one of the user's there, as our
// -XX:HeapDumpPath does.
func setDumpOptions(c *corev1.Container, dumpDir string, w *warnings) string {
	ours := contract.DumpOptions(dumpDir)
	userErrorFile, literal := literalErrorFile(c.Env)
	if !literal {
		ours += " " + contract.ErrorFileOption(dumpDir)
	}
	var mode string
	c.Env, mode = mergeJavaToolOptions(c.Env, c.EnvFrom, ours)
	if where := overridingFlags(c); len(where) > 0 {
		w.addf("container %q sets -XX:HeapDumpPath or -XX:-HeapDumpOnOutOfMemoryError in its %s, which overrides JAVA_TOOL_OPTIONS: OOM dumps may not reach %s; remove the option there", c.Name, strings.Join(where, " and "), dumpDir)
	}
	if literal && !inDumpDir(userErrorFile, dumpDir) {
		w.addf("container %q sets its own -XX:ErrorFile=%s in %s; it is kept, but JVM crash logs are uploaded only when it is %s: change it to that or remove it", c.Name, userErrorFile, JTOEnv, contract.ErrorFilePath(dumpDir))
	}
	if where := errorFileFlags(c, dumpDir); len(where) > 0 {
		w.addf("container %q sets -XX:ErrorFile in its %s, which overrides JAVA_TOOL_OPTIONS: JVM crash logs are uploaded only when it is %s; change it to that or remove it", c.Name, strings.Join(where, " and "), contract.ErrorFilePath(dumpDir))
	}
	return mode
}

// preStopArgs is the command line of the dump hook of one container.
func preStopArgs(container, base, dumpDir string, grace int64, p plan) []string {
	return []string{
		base + "/" + contract.BinDir + "/" + contract.BinaryName, contract.CmdDump,
		contract.FlagReason + "=" + contract.ReasonPreStop,
		contract.FlagPolicy + "=" + p.preStop,
		contract.FlagDir + "=" + dumpDir,
		contract.FlagContainer + "=" + container,
		contract.FlagNamespace + "=" + p.namespace,
		contract.FlagWorkload + "=" + p.workload.String(),
		contract.FlagGracePeriod + "=" + strconv.FormatInt(grace, 10),
	}
}

// originalPreStop returns the container's own preStop handler (nil when it
// has none) as the dump hook is to run it. A named httpGet port is resolved
// here from the container's ports, as the kubelet resolves it, because the
// hook does not see the pod spec; a name no port has is left as it is (the
// kubelet would fail that hook too) with a warning.
func originalPreStop(c *corev1.Container, w *warnings) *corev1.LifecycleHandler {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return nil
	}
	h := c.Lifecycle.PreStop.DeepCopy()
	if h.HTTPGet == nil || h.HTTPGet.Port.Type != intstr.String {
		return h
	}
	name := h.HTTPGet.Port.StrVal
	if n, err := strconv.Atoi(name); err == nil {
		if n > 0 && n <= 65535 {
			h.HTTPGet.Port = intstr.FromInt32(int32(n))
		}
		return h
	}
	for _, p := range c.Ports {
		if p.Name == name {
			h.HTTPGet.Port = intstr.FromInt32(p.ContainerPort)
			return h
		}
	}
	w.addf("container %q: its preStop httpGet port %s names none of the container's ports, so that hook fails (in the kubelet too); it still runs after the dump as it is: name a containerPort %s or give the number", c.Name, quote(name), quote(name))
	return h
}

// addPreStop makes args the container's preStop hook; the original preStop
// handler orig, if any, is passed to it as JSON and runs after the dump.
func addPreStop(c *corev1.Container, args []string, orig *corev1.LifecycleHandler) {
	if orig != nil {
		j, _ := json.Marshal(orig) // a LifecycleHandler always marshals
		args = append(args, contract.FlagThen+"="+string(j))
	}
	if c.Lifecycle == nil {
		c.Lifecycle = &corev1.Lifecycle{}
	}
	c.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: args}}
}

// newSidecar builds the uploader container.
func newSidecar(pod *corev1.Pod, volName string, grace int64, p plan, cfg config.Config, w *warnings) corev1.Container {
	sc, scWarnings := sidecarSecurityContext(pod, p.targets)
	*w = append(*w, scWarnings...)
	return corev1.Container{
		Name:                     uniqueContainerName(pod, SidecarName),
		Image:                    cfg.Sidecar.Image,
		ImagePullPolicy:          cfg.Sidecar.ImagePullPolicy,
		Command:                  []string{contract.BinaryPath, contract.CmdUpload},
		Env:                      sidecarEnv(p, grace),
		Ports:                    sidecarPorts(p.upload.MetricsPort),
		Resources:                *cfg.Sidecar.Resources.DeepCopy(),
		VolumeMounts:             []corev1.VolumeMount{{Name: volName, MountPath: contract.SidecarDir}},
		SecurityContext:          sc,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// addCredentials mounts the credentials Secret (optional, so that a missing
// Secret never keeps the pod from starting) into the sidecar.
func addCredentials(pod *corev1.Pod, sidecar *corev1.Container, secret string) {
	if secret == "" {
		return
	}
	name := uniqueVolumeName(pod, CredentialsVolumeName)
	optional := true
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		Secret: &corev1.SecretVolumeSource{SecretName: secret, Optional: &optional}}})
	sidecar.VolumeMounts = append(sidecar.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: contract.CredentialsMountPath, ReadOnly: true})
}

// placeSidecar adds the uploader as the first init container with
// restartPolicy Always (a native sidecar) or as the last regular container.
func placeSidecar(pod *corev1.Pod, sidecar corev1.Container, native bool, w *warnings) {
	if native {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
		return
	}
	pod.Spec.Containers = append(pod.Spec.Containers, sidecar)
	if pod.Spec.RestartPolicy == corev1.RestartPolicyNever || pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure {
		w.addf("the uploader runs as a regular container (nativeSidecar is off), so this run-to-completion pod (restartPolicy %s) keeps running after its app exits; use native sidecars (Kubernetes 1.29+)", pod.Spec.RestartPolicy)
	}
}

// setStatus records what was injected in the status annotation.
func setStatus(pod *corev1.Pod, s Status) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationStatus] = s.String()
}

// sidecarEnv is the uploader's environment; grace is the pod's effective
// termination grace period in seconds.
func sidecarEnv(p plan, grace int64) []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		{Name: contract.EnvDir, Value: contract.SidecarDir},
		{Name: contract.EnvDestination, Value: p.destination},
	}
	if p.secret != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvCredentialsDir, Value: contract.CredentialsMountPath})
	}
	env = append(env,
		field(contract.EnvPodName, "metadata.name"),
		field(contract.EnvPodNamespace, "metadata.namespace"),
		field(contract.EnvPodUID, "metadata.uid"),
		field(contract.EnvNodeName, "spec.nodeName"),
		corev1.EnvVar{Name: contract.EnvWorkload, Value: p.workload.String()},
		corev1.EnvVar{Name: contract.EnvContainers, Value: strings.Join(p.targets, ",")},
		corev1.EnvVar{Name: contract.EnvGracePeriod, Value: strconv.FormatInt(grace, 10)},
	)
	return append(env, uploadEnv(p.upload)...)
}

// uploadEnv passes the uploader's settings that differ from its defaults.
func uploadEnv(u config.Upload) []corev1.EnvVar {
	u = u.Changed()
	var env []corev1.EnvVar
	for _, e := range []corev1.EnvVar{
		{Name: contract.EnvCompression, Value: u.Compression},
		{Name: contract.EnvKeyTemplate, Value: u.KeyTemplate},
		{Name: contract.EnvQuietPeriod, Value: u.QuietPeriod},
		{Name: contract.EnvDrainTimeout, Value: u.DrainTimeout},
	} {
		if e.Value != "" {
			env = append(env, e)
		}
	}
	if u.MetricsPort != 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvMetricsAddress, Value: ":" + strconv.Itoa(int(u.MetricsPort))})
	}
	return env
}

// sidecarPorts declares the uploader's metrics port, if any.
func sidecarPorts(metrics int32) []corev1.ContainerPort {
	if metrics == 0 {
		return nil
	}
	return []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: metrics, Protocol: corev1.ProtocolTCP}}
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
