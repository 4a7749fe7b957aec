//go:build tools

// Package tools pins the MinIO client (mc) the uploader benchmarks compare
// dumpcatcher with (`mc cp`, `mc pipe` against the same MinIO). It is never
// built (the tools tag keeps it out of every build); it only makes
// `go mod tidy` record the dependencies of the main package, so
// `go build github.com/minio/mc` inside this module builds mc at the version
// go.mod pins.
package tools

import (
	_ "github.com/minio/mc"
)
