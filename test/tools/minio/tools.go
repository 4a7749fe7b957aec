//go:build tools

// Package tools pins the MinIO server the e2e tests use as an S3 upload
// target. It is never built (the tools tag keeps it out of every build); it
// only makes `go mod tidy` record the dependencies of the main package, so
// `go build github.com/minio/minio` inside this module builds MinIO at the
// version go.mod pins. (MinIO's main.go imports its own internal/init, so the
// main package itself is the only thing this file can name.)
package tools

import (
	_ "github.com/minio/minio"
)
