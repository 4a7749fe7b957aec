//go:build tools

// Package tools pins helm-docs, which generates charts/dumpcatcher/README.md
// from README.md.gotmpl and the `# --` comments of values.yaml (`make
// generate`; TestReadme fails when the README is stale). It is never built
// (the tools tag keeps it out of every build); it only makes `go mod tidy`
// record the dependencies of the main package, so
// `go build github.com/norwoodj/helm-docs/cmd/helm-docs` inside this module
// builds helm-docs at the version go.mod pins.
package tools

import (
	_ "github.com/norwoodj/helm-docs/cmd/helm-docs"
)
