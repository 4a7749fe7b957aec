// Package main pins the Kubernetes binaries the tests run (kube-apiserver for
// envtest, and the node components for the e2e rig). It is never imported:
// `go build k8s.io/kubernetes/cmd/...` inside this module builds them at the
// versions go.mod pins.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {}
