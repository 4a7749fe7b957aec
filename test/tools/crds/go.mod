module github.com/dumpcatcher/dumpcatcher/test/tools/crds

go 1.25

// Not built: test/tools/install.sh copies CustomResourceDefinitions out of
// these modules (go mod download) so that the chart tests can install them
// into envtest's kube-apiserver.
require (
	github.com/cert-manager/cert-manager v1.20.2
	github.com/prometheus-operator/prometheus-operator v0.85.0
)
