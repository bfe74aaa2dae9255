// Package join lets a new host join an m3sup cluster: join tokens (format,
// their store in etcd, and the `m3sup token` API, TokenService), the HTTPS
// join endpoint a member serves, the client a joining host calls (Join,
// Joiner) and what a joined host remembers (ClusterFile, cluster.json).
// Joins wait their turn: the Joiner retries a refusal for now (another host
// is joining, the endpoint is busy or not up: Classify) with a jittered
// backoff (Backoff, a pure function) until cluster.joinTimeout, and fails
// at once on a refusal no retry can change.
// The token pins the cluster CA, so a joiner checks whom it talks to before
// it sends anything. The same endpoint renews a joined host's client
// certificate (RenewPath, Renew), authenticated by the current one over
// mutual TLS.
//
// Import rule: join depends on pki, etcd's client and zap only; it never
// imports the embedded etcd server (store), cluster or api — the caller
// (supervisor/member) adapts store to Membership, and the API maps join's
// errors (ErrNotIssuer, ErrInvalidTokenOptions) to its own kinds.
package join
