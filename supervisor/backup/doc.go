// Package backup saves and restores the cluster's brain: one tar.gz file
// holding an etcd snapshot (the source of truth for a restore), m3sup's
// desired state, M3's placement and namespaces, and the M3 release spec,
// with a manifest (backup.json) carrying each member's sha256. It also runs
// scheduled backups into a directory, keeping the newest N.
//
// A backup file, in order:
//
//	backup.json         Info: format, created, node, versions, revision, members' sha256
//	etcd.snapshot       the etcd v3 snapshot stream (ends with its own sha256)
//	desired.json        every key under /m3sup/v1/
//	m3/placement.json   M3's _sd.placement/ keys: raw value (base64) + best-effort decode
//	m3/namespaces.json  M3's _kv/<env>/m3db.node.namespaces keys, likewise
//	release.json        the release spec of the desired cluster
//
// Import rule: etcd's client, server and etcdutl packages, supervisor/store
// and supervisor/spec; nothing that runs processes.
package backup
