//go:build tools

// Package tools pins the Helm CLI the e2e tests install the chart with. It is
// never built (the tools tag keeps it out of every build); it only makes
// `go mod tidy` record the dependencies of the main package, so
// `go build helm.sh/helm/v3/cmd/helm` inside this module builds Helm at the
// version go.mod pins.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
