package member

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// startLocal starts the single node's member over mutual TLS on the
// configured (loopback) addresses. A data dir from a version that served
// plain HTTP keeps its data: the member restarts on https and its recorded
// peer URL is updated.
func startLocal(ctx context.Context, o Options) (*Member, error) {
	clientURL, err := localURL(o.ClientURL)
	if err != nil {
		return nil, err
	}
	peerURL, err := localURL(o.PeerURL)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, u := range []string{clientURL, peerURL} {
		pu, _ := url.Parse(u)
		if h, _, err := net.SplitHostPort(pu.Host); err == nil {
			hosts = append(hosts, h)
		}
	}
	m := &Member{o: o}
	ca, err := m.localPKI(hosts)
	if err != nil {
		return nil, fmt.Errorf("single-node etcd certificates: %w", err)
	}
	e, err := store.StartClusterEtcd(ctx, store.ClusterOptions{
		Name: o.EtcdName, Dir: o.Paths.Etcd, ClientURL: clientURL, PeerURL: peerURL,
		TLS:           clusterTLS(o.Paths.PKI),
		AllowedPeerCN: pki.EtcdPeerCN,
		StartTimeout:  o.StartTimeout,
		Logger:        o.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := asRoot(ctx, ca, clientURL, o.Logger, func(ctx context.Context, root *clientv3.Client) error {
		if changed, err := store.EnsurePeerURL(ctx, root, e.MemberID(), peerURL); err != nil {
			return err
		} else if changed {
			o.Logger.Info("etcd member moved from plain HTTP to mutual TLS", zap.String("peerURL", peerURL))
		}
		return store.EnsureAuth(ctx, root, store.Identities{Admins: []string{pki.NodeCN(o.NodeName)}, M3: []string{pki.M3CN(o.NodeName)}})
	}); err != nil {
		e.Close()
		return nil, err
	}
	m.etcd, m.m3 = e, M3Etcd{TLS: m3TLS()}
	return m, nil
}

// localPKI loads or creates the single node's CA under Paths.PKI (0700,
// tightened at every start) and issues, afresh at every start, the member
// certificate (CN pki.EtcdPeerCN, SANs: the URLs' hosts, localhost,
// 127.0.0.1) and m3sup's client certificate (CN pki.NodeCN), and M3's
// (CN pki.M3CN, unless the one it has is current: issueM3), which alone
// goes to Paths.M3PKI for M3's containers.
func (m *Member) localPKI(hosts []string) (*pki.CA, error) {
	dir := m.o.Paths.PKI
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tighten %s: %w", dir, err)
	}
	ca, err := m.loadOrCreateCA(dir, "m3sup single-node CA")
	if err != nil {
		return nil, err
	}
	m.issuer, m.hostNames = ca, append([]string{"localhost", "127.0.0.1"}, hosts...)
	if err := ca.IssueHost(dir, m.o.NodeName, m.hostNames, m.o.CertTTL); err != nil {
		return nil, err
	}
	if err := m.issueM3(ca); err != nil {
		return nil, err
	}
	return ca, nil
}

// m3TLS is M3's etcd client certificate as its containers see it.
func m3TLS() *m3.EtcdTLS {
	return &m3.EtcdTLS{CertPath: ContainerPKI + "/" + pki.ClientCertFile, KeyPath: ContainerPKI + "/" + pki.ClientKeyFile, CAPath: ContainerPKI + "/" + pki.CACertFile}
}
