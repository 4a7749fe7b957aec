// Package dumpobj reads the fields of a Dump (DUMPSAPI.md) from the
// unstructured objects the API returns; the Go types of the API are not a
// dependency of the plugin.
package dumpobj

import (
	"fmt"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Dump is the part of a Dump object the plugin uses.
type Dump struct {
	metav1.ObjectMeta `json:"metadata"`

	Workload     string      `json:"workload,omitempty"`
	Pod          string      `json:"pod,omitempty"`
	PodUID       string      `json:"podUID,omitempty"`
	Node         string      `json:"node,omitempty"`
	Container    string      `json:"container,omitempty"`
	Reason       string      `json:"reason,omitempty"`
	File         string      `json:"file,omitempty"`
	Complete     *bool       `json:"complete,omitempty"`
	Encoding     string      `json:"encoding,omitempty"`
	OriginalSize int64       `json:"originalSize,omitempty"`
	Size         int64       `json:"size,omitempty"`
	SHA256       string      `json:"sha256,omitempty"`
	URL          string      `json:"url,omitempty"`
	Destination  string      `json:"destination,omitempty"`
	Time         metav1.Time `json:"time,omitempty"`
}

// From converts an unstructured Dump.
func From(u *unstructured.Unstructured) (Dump, error) {
	var d Dump
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
		return d, fmt.Errorf("the server's Dump %q does not decode: %w", u.GetName(), err)
	}
	return d, nil
}

// FileName is a safe local file name for the dump: the base name of its
// file field (the store is not trusted: no directories, no hidden or
// special names), else NAME.hprof; plus the encoding's suffix (.gz, .zst)
// when it lacks it.
func (d Dump) FileName() string {
	base := path.Base(strings.ReplaceAll(d.File, "\\", "/"))
	ok := d.File != "" && base != "." && base != ".." && base != "/" && !strings.HasPrefix(base, ".") && len(base) <= 200
	for _, r := range base {
		if r < 0x20 || r == 0x7f {
			ok = false
		}
	}
	name := d.Name + ".hprof"
	if ok {
		name = base
	}
	// The stored bytes carry the encoding's suffix (the file field names
	// the original, uncompressed file).
	suffix := map[string]string{"gzip": ".gz", "zstd": ".zst"}[d.Encoding]
	if !strings.HasSuffix(name, suffix) {
		name += suffix
	}
	return name
}
