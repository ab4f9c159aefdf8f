//go:build tools

// The commands `make kube` builds, named here so that `go mod tidy` keeps what they need.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
