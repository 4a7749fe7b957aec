package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels every Dump carries (when the value is a valid label value).
const (
	LabelWorkload  = "dumpcatcher.io/workload"
	LabelPod       = "dumpcatcher.io/pod"
	LabelContainer = "dumpcatcher.io/container"
	LabelReason    = "dumpcatcher.io/reason"
)

// +genclient
// +genclient:readonly
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Dump is one object in a configured destination, under the key prefix of
// its namespace. All fields are read-only; like metrics-server's
// NodeMetrics it has no spec or status.
type Dump struct {
	metav1.TypeMeta `json:",inline"`
	// Name is derived from the object key (see the server docs); namespace
	// is the pod's; creationTimestamp is the dump's time; labels are
	// dumpcatcher.io/{workload,pod,container,reason}.
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Workload is kind/name when the metadata has it, else the key segment
	// (e.g. deployment-web).
	Workload string `json:"workload,omitempty"`
	Pod      string `json:"pod,omitempty"`
	PodUID   string `json:"podUID,omitempty"`
	Node     string `json:"node,omitempty"`
	// Container is the container the dump was taken in.
	Container string `json:"container,omitempty"`
	// Reason: oom, prestop, manual, crash, core or gc-pressure.
	Reason string `json:"reason,omitempty"`
	// File is the dump's original file name.
	File string `json:"file,omitempty"`
	// Complete says whether the dump was complete; nil when unknown (a list
	// from a store that does not return metadata).
	Complete *bool `json:"complete,omitempty"`
	// Encoding of the stored bytes: gzip, zstd or none.
	Encoding string `json:"encoding,omitempty"`
	// OriginalSize is the size in bytes before compression (0: unknown).
	OriginalSize int64 `json:"originalSize,omitempty"`
	// Size is the stored size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the stored bytes, when known.
	SHA256 string `json:"sha256,omitempty"`
	// URL names the object: s3://bucket/key or file:///path. No credentials.
	URL string `json:"url,omitempty"`
	// Destination is the name of the configured destination holding it.
	Destination string `json:"destination,omitempty"`
	// Time is when the dump was taken (from the key), else when it was
	// stored.
	Time metav1.Time `json:"time"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// DumpList is a list of Dumps.
type DumpList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Dump `json:"items"`
}

// PresignedURL is the body of GET .../dumps/NAME/presign.
type PresignedURL struct {
	// URL fetches the stored bytes without further authentication until
	// Expires.
	URL     string      `json:"url"`
	Expires metav1.Time `json:"expires"`
}
