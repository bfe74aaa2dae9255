// Package containerd runs m3sup's containers with containerd. It is the only
// package of m3sup that imports containerd: it implements the contract of
// package runtime (Spec, Status, Exit) on top of the containerd v2 Go client,
// using only the core services (containers, tasks, content, snapshots) so that
// it works against containerd 1.6 and later.
//
// It either connects to an existing containerd daemon (external mode) or runs
// its own containerd as a child process with a generated configuration under
// m3sup's data directory (managed mode), restarting it with backoff when it
// dies. Containers and their shims survive a containerd restart and a restart
// of m3sup: a new Runtime re-attaches to them with Wait and Status.
//
// containerd's restart-monitor labels are never set: m3sup owns restarts.
package containerd
