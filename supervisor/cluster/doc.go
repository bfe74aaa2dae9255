// Package cluster coordinates the hosts of a multi-host m3sup cluster
// through etcd: hosts register themselves under a lease, one
// leader-elected controller grows and shrinks the M3 placement to match the
// registered db hosts, and hosts take a cluster-wide permit before a planned
// m3dbnode restart.
//
// The decision (Plan) is pure; the effects (etcd, the coordinator API) live
// in Controller, Registrar and AcquirePermit, each synchronous: the caller
// owns the goroutine.
//
// Import rule (non-test code): standard library, zap, the etcd client (v3 and concurrency)
// and supervisor/m3; never supervisor/store or any other m3sup package, so
// the supervisor can wire this beside them.
package cluster
