// Command etcd runs the pinned etcd server for optiloop's test control plane.
// `go install` of etcd's server module fails on its replace directives, so this
// wrapper imports etcdmain and is built like any other module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
