// Package chart tests charts/dumpcatcher, deploy/ and the Dockerfiles, and
// regenerates the chart's README (with helm-docs) and deploy/dumpcatcher.yaml
// (with helm template) under -update, which `make generate` passes.
package chart
