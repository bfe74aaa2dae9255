package member

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// asRoot runs f with a client that acts as etcd's root user: a
// certificate with CN store.RootUser, issued in memory by the CA this host
// holds, valid for ten minutes and dropped after. etcd's auth, once on,
// always has that user, so the setup works whatever users the data holds
// (a backup restored onto a host of another name, a data dir whose host
// name changed) where the host's own identity may have none yet.
func asRoot(ctx context.Context, ca *pki.CA, endpoint string, log *zap.Logger, f func(context.Context, *clientv3.Client) error) error {
	certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{CommonName: store.RootUser, Usage: pki.UsageClient, TTL: 10 * time.Minute})
	if err != nil {
		return fmt.Errorf("etcd root certificate: %w", err)
	}
	tlsCfg, err := pki.ClientTLS(ca.CertPEM(), "")
	if err != nil {
		return fmt.Errorf("etcd root certificate: %w", err)
	}
	kp, err := pki.KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("etcd root certificate: %w", err)
	}
	tlsCfg.Certificates = []tls.Certificate{kp}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		TLS:         tlsCfg,
		Logger:      log.Named("etcd-root").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		return fmt.Errorf("connect to etcd as root: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return f(ctx, cli)
}

// ensureClusterAuth turns on etcd's authorization for the cluster (see
// store.EnsureAuth) with a user for every host known now: this host and
// every named etcd member as root, every other registered host as a
// client-only host, and M3's certificate. Hosts that join later get their
// user from the join (join.ServerConfig.Authorize, see JoinServer).
func (m *Member) ensureClusterAuth(ctx context.Context, cli *clientv3.Client) error {
	node := m.o.NodeName
	members, err := store.Members(ctx, cli)
	if err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	ids := store.Identities{M3: []string{pki.M3CN(node)}, Admins: []string{pki.NodeCN(node)}}
	voter := map[string]bool{node: true}
	for _, m := range members {
		if m.Name != "" && !voter[m.Name] {
			voter[m.Name] = true
			ids.Admins = append(ids.Admins, pki.NodeCN(m.Name))
			ids.M3 = append(ids.M3, pki.M3CN(m.Name))
		}
	}
	hosts, err := cluster.Hosts(ctx, cli)
	if err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	for _, h := range hosts {
		if !voter[h.Name] {
			ids.Clients = append(ids.Clients, pki.NodeCN(h.Name))
		}
	}
	if err := store.EnsureAuth(ctx, cli, ids); err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	return nil
}
