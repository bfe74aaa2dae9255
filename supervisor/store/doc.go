// Package store holds m3sup's state in etcd: the embedded etcd member (start,
// readiness, orderly close) and typed access to m3sup's keys under /m3sup/v1/.
// M3 keeps its own placement and namespace keys in the same etcd. Which
// member this host runs, with which certificates, is supervisor/member's.
//
// Import rule (non-test code): the etcd server and client, zap, and
// supervisor/spec; no other m3sup package.
package store
