// Package cluster coordinates the hosts of a multi-host m3sup cluster
// through etcd: hosts register themselves under a lease, one
// leader-elected controller grows and shrinks the M3 placement to match the
// registered db hosts, and hosts take a cluster-wide permit before a planned
// m3dbnode restart.
//
// A host leaves with `m3sup leave` (Leaver), removes another that is gone
// for good with `m3sup remove-host` (HostRemover), and refuses to run on a
// data dir whose host left or was removed (LeftRecord, CheckNotLeft). They
// reach the host through Local: its name and data dir, the etcd and M3
// clients, a progress reporter, and EtcdAdmin for what package store does.
//
// The decision (Plan) is pure; the effects (etcd, the coordinator API) live
// in Controller, Registrar, AcquirePermit, Leaver and HostRemover, each
// synchronous: the caller owns the goroutine.
//
// Import rule (non-test code): standard library, zap, the etcd client (v3 and concurrency),
// supervisor/m3, supervisor/api (the wire types Leaver and HostRemover
// answer with), and the leaves supervisor/pki (certificate names) and
// internal/atomicfile (left.json); never supervisor/store or any other
// m3sup package, so the supervisor can wire this beside them.
package cluster
