package inject

// Public names users type. docs/configuration.md documents each of them.
const (
	// AnnotationInject on a pod: "true" opts in, "false" opts out (beats the
	// namespace label).
	AnnotationInject = "dumpcatcher.io/inject"
	// LabelInject on a namespace: "enabled" injects every pod of it unless
	// the pod says "false"; any other value injects only pods that say "true".
	LabelInject = "dumpcatcher.io/inject"
	// AnnotationContainers picks target containers (comma list).
	AnnotationContainers = "dumpcatcher.io/containers"
	// AnnotationDestination overrides the storage URL.
	AnnotationDestination = "dumpcatcher.io/destination"
	// AnnotationSecret overrides the credentials Secret name.
	AnnotationSecret = "dumpcatcher.io/secret"
	// AnnotationPreStop overrides the preStop policy.
	AnnotationPreStop = "dumpcatcher.io/prestop"
	// AnnotationSizeLimit overrides the emptyDir size limit.
	AnnotationSizeLimit = "dumpcatcher.io/size-limit"
	// AnnotationAllowSharedPID: "true" injects a pod that shares a process
	// namespace (spec.shareProcessNamespace or spec.hostPID), accepting
	// that its app containers can read the uploader's credentials; "false"
	// or absent: such a pod is not injected.
	AnnotationAllowSharedPID = "dumpcatcher.io/allow-shared-pid"
	// AnnotationCompression overrides the uploader's compression (gzip, zstd
	// or none).
	AnnotationCompression = "dumpcatcher.io/compression"
	// AnnotationMetricsPort overrides the port of the uploader's metrics
	// ("0": none).
	AnnotationMetricsPort = "dumpcatcher.io/metrics-port"
	// AnnotationStatus is written by the webhook: what it injected where.
	AnnotationStatus = "dumpcatcher.io/status"
)

// Label values of LabelInject.
const (
	LabelEnabled  = "enabled"
	LabelDisabled = "disabled"
)

// Names of what the webhook adds. A name the pod already uses for something
// else gets a numbered suffix.
const (
	VolumeName            = "dumpcatcher"
	CredentialsVolumeName = "dumpcatcher-credentials"
	SidecarName           = "dumpcatcher"
	// MetricsPortName names the uploader's metrics port, when it has one.
	MetricsPortName = "dc-metrics"
	// OriginalJTOEnv keeps a JAVA_TOOL_OPTIONS that came from valueFrom or
	// envFrom, so that JAVA_TOOL_OPTIONS can reference it.
	OriginalJTOEnv = "DUMPCATCHER_ORIGINAL_JAVA_TOOL_OPTIONS"
	// JTOEnv is the variable every HotSpot JVM reads at start.
	JTOEnv = "JAVA_TOOL_OPTIONS"
)
