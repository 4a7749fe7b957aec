// Package main pins the etcd server envtest runs next to kube-apiserver. It
// is never imported: `go build go.etcd.io/etcd/server/v3` inside this module
// builds the etcd binary at the version go.mod pins.
package main

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {}
