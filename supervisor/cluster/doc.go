// Package cluster coordinates the hosts of a multi-host m3sup cluster
// through etcd, and owns both the cluster's keys and the behaviour behind
// them: hosts register themselves under a lease (Registrar), one
// leader-elected Controller grows and shrinks the M3 placement to match
// the registered db hosts (Plan decides, pure), Automation runs a host's
// share of both, hosts take a cluster-wide Permit before a planned restart,
// and each host's Rollout rolls m3dbnode revisions one host at a time and
// reverts one that does not become healthy. A host without a coordinator
// reaches a peer's through CoordinatorPicker.
//
// A host leaves with `m3sup leave` (Leaver), removes another that is gone
// for good with `m3sup remove-host` (HostRemover), and refuses to run on a
// data dir whose host left or was removed (LeftRecord, CheckNotLeft).
//
// The decisions (Plan, the rollout's revert clock) are pure; the effects
// (etcd, the coordinator API) live in Controller, Registrar, Permit,
// Rollout, Leaver and HostRemover, each synchronous: the caller owns the
// goroutine. They reach the host they run on through Local (node name,
// data dir, etcd and M3 clients, EtcdAdmin for what package store does, a
// progress reporter, logger) and Components (the node agent's status),
// never through the daemon.
//
// Import rule (non-test code): standard library, zap, oklog/run, the etcd
// client (v3 and concurrency), supervisor/m3, supervisor/api (the wire types Leaver
// and HostRemover answer with), internal/atomicfile (rollout.json,
// left.json), and the leaves supervisor/spec (a rollout revision is a hash
// of the desired release and dbnode settings), supervisor/agent (a rollout
// judges the agent's component status) and supervisor/pki (certificate
// names); never supervisor/store or any other m3sup package, so the
// supervisor can wire this beside them.
package cluster
