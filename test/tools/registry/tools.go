//go:build tools

// Package tools pins registry (github.com/distribution/distribution/v3/cmd/registry) for the image and CI tests. It is never built
// (the tools tag keeps it out of every build); it only makes `go mod tidy`
// record the dependencies of the main package, so that test/tools/install.sh
// builds it at the version go.mod pins.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
)
