// Package pki is m3sup's certificate authority: it creates and persists the
// cluster CA, issues leaf certificates (server, client, peer) from it,
// writes a host's etcd certificates and M3's (IssueHost, IssueM3, under the
// file names it defines), and builds the tls.Configs that trust only that
// CA.
//
// Import rule: the standard library and internal/atomicfile (its files
// are written atomically and durably) only.
package pki
