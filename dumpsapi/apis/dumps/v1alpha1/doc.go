// Package v1alpha1 holds the types of the dumps.dumpcatcher.io/v1alpha1 API,
// served by cmd/dumpcatcher-api as a Kubernetes aggregated API: a Dump is a
// heap dump (or core) in the object store, read-only except for delete.
//
// +groupName=dumps.dumpcatcher.io
// +k8s:deepcopy-gen=package
// +k8s:openapi-gen=true
package v1alpha1
