// Package spec defines the cluster's desired state as stored in etcd: which
// M3 release runs, the M3 topology (shards, replication, namespaces) and the
// per-component settings that shape the rendered M3 configs. It validates a
// spec and reports every bad field by its path.
package spec
