// Package member runs this host's etcd: the embedded member and what it
// needs around it, in one of four shapes.
//
//   - Single node: a member on the configured loopback addresses, over
//     mutual TLS, with a CA of its own under <dataDir>/pki.
//   - First host of a multi-host cluster (cluster.joinListen set, no
//     --join): it creates the cluster CA under <dataDir>/pki and runs its
//     member over mutual TLS on its advertise address.
//   - Joined voter (`m3sup run --join URL --token T`, remembered in
//     <dataDir>/cluster.json, see join.Joiner): its member starts as a
//     learner and is promoted once it has caught up.
//   - Joined client-only host (the cluster had cluster.maxVoters voters):
//     no member, a client of the voters.
//
// Every etcd voter holds the CA (a joining voter gets its key in the join
// answer, over the CA-pinned TLS connection, and keeps it under its pki
// dir, which M3's containers never see), so any voter can issue tokens
// and, with cluster.joinListen set, serve joins (JoinServer); the first
// host can leave. A voter that holds the CA turns etcd's authorization on
// and keeps a user for every host it knows (store.EnsureAuth), acting as
// etcd's root user with a short-lived certificate of its own issue.
//
// M3's containers get their own etcd client certificate (CN pki.M3CN: M3's
// keys only) in <dataDir>/pki/m3, mounted at ContainerPKI; in multi-host
// mode they talk to every voter (FollowVoters), and cluster.json follows
// the voters too, so a joined host starts next time from the voters of
// now.
//
// Certificates renew themselves (RenewCerts, an actor of the daemon's run
// group): a host that holds the CA reissues its own at a random point
// between 2/3 and 3/4 of their lifetime (Options.CertTTL,
// cluster.certLifetime); a host without it renews its client certificate
// at a CA holder's join endpoint (RenewRemote, join.Renew). etcd reads its
// certificate files at each handshake; M3 reads its own once, so its
// serial (M3CertSerial) is part of M3's spec hash.
//
// Why mutual TLS on a single node too (and not a unix socket or etcd
// passwords): the multi-host mode already has the CA (supervisor/pki), a
// TLS member (store.StartClusterEtcd) and M3 configs that present a client
// certificate, so the single node reuses all three; M3 v1.5's etcd client
// config takes host:port endpoints and a TLS block, and a unix socket would
// need a bind mount and an endpoint form M3 does not document; etcd
// passwords would have to sit in M3's YAML. The keys live in
// <dataDir>/pki, a 0700 directory owned by root: a local user without root
// cannot present a certificate, so both listeners (client 2379, peer 2380:
// KV, gRPC gateway, /metrics, /version, /members) refuse it at the TLS
// handshake.
//
// Import rule (non-test code): standard library, zap, the etcd client, and
// supervisor/store, pki, join, cluster and m3; never the root supervisor or
// the runtime, and never api or agent itself (cluster does). It reaches the
// host only through Options.
package member
