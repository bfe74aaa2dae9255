// Package readiness decides whether this host serves M3 right now, and says
// why not: the one verdict behind the READY line of `m3sup status`, GET
// /readyz, the m3sup_cluster_ready metric and systemd's STATUS=.
//
// A host is ready once M3's cluster set-up has finished (placement,
// namespaces, ready) and, at this moment, every local component m3sup runs
// is running and healthy (m3dbnode: bootstrapped). A host that was ready
// and is not any more is degraded, and the verdict names the component and
// its state (backoff, crash-loop, starting, waiting, stopping, stopped) with
// the reason of its last exit. Judge is pure; the daemon calls it whenever a
// component's status changes and whenever somebody asks.
package readiness
