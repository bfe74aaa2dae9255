// Package pki is m3sup's certificate authority: it creates and persists the
// cluster CA, issues leaf certificates (server, client, peer) from it,
// writes a host's etcd certificates and M3's (IssueHost, IssueM3, under the
// file names it defines), and builds the tls.Configs that trust only that
// CA. It also decides when a certificate is renewed (RenewAt: between 2/3
// and 3/4 of its lifetime) and when one near its expiry is warned about
// (WarnAt); the renewing itself is supervisor/member's (RenewCerts).
//
// Import rule: the standard library and internal/atomicfile (its files
// are written atomically and durably) only.
package pki
