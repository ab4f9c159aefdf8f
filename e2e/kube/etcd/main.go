// Command etcd is etcd's own server entry point, so that `make kube` builds it from the
// pinned go.etcd.io/etcd/server/v3 module (the etcd command's module is not needed).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
