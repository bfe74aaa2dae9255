// Command etcd is a plain etcd server (etcd's own etcdmain), built by the
// benchmarks as the baseline's etcd. It is its own module so that etcd's
// command-line dependencies stay out of m3sup's go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
