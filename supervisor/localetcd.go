package supervisor

// This file holds the single-node etcd: the same embedded member as a
// multi-host cluster's first host, on loopback, over mutual TLS.
//
// Why mutual TLS (and not a unix socket or etcd passwords): the multi-host
// mode already has the CA (supervisor/pki), a TLS member
// (store.StartClusterEtcd) and M3 configs that present a client
// certificate, so the single node reuses all three; M3 v1.5's etcd client
// config takes host:port endpoints and a TLS block, and a unix socket
// would need a bind mount and an endpoint form M3 does not document; etcd
// passwords would have to sit in M3's YAML. The keys live in
// <dataDir>/pki, a 0700 directory owned by root: a local user without
// root cannot present a certificate, so both listeners (client 2379,
// peer 2380: KV, gRPC gateway, /metrics, /version, /members) refuse it at
// the TLS handshake.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// localURL returns the configured etcd URL u as https on its own host.
func localURL(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	if pu.Host == "" {
		return "", fmt.Errorf("etcd URL %q: no host", u)
	}
	return "https://" + pu.Host, nil
}

// localPKI loads or creates the single node's CA under <dataDir>/pki
// (0700, tightened at every start) and issues, afresh at every start, the
// member certificate (CN pki.EtcdPeerCN, SANs: the URLs' hosts, localhost,
// 127.0.0.1), m3sup's client certificate (CN pki.NodeCN) and M3's
// (CN pki.M3CN), which alone goes to <dataDir>/pki/m3 for M3's containers.
func (s *Supervisor) localPKI(lay layout, hosts []string) (*pki.CA, error) {
	dir := lay.pki()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tighten %s: %w", dir, err)
	}
	ca, err := s.loadOrCreateCA(dir, "m3sup single-node CA")
	if err != nil {
		return nil, err
	}
	dns, ips := splitHosts(append([]string{"localhost", "127.0.0.1"}, hosts...))
	peerCert, peerKey, err := ca.Issue(pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: pki.UsagePeer})
	if err != nil {
		return nil, err
	}
	cliCert, cliKey, err := ca.Issue(pki.IssueOptions{CommonName: pki.NodeCN(s.cfg.NodeName), Usage: pki.UsageClient})
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{peerCertFile: peerCert, peerKeyFile: peerKey, clientCertFile: cliCert, clientKeyFile: cliKey} {
		if err := pki.WriteFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	if err := issueM3Cert(lay, ca, s.cfg.NodeName); err != nil {
		return nil, err
	}
	return ca, nil
}

// issueM3Cert gives M3's containers their own etcd client certificate
// (CN pki.M3CN: M3's keys only) and the CA certificate in <dataDir>/pki/m3,
// issued afresh at every start by a host that holds the CA.
func issueM3Cert(lay layout, ca *pki.CA, node string) error {
	m3Cert, m3Key, err := ca.Issue(pki.IssueOptions{CommonName: pki.M3CN(node), Usage: pki.UsageClient})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(lay.m3PKI(), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", lay.m3PKI(), err)
	}
	for name, b := range map[string][]byte{pki.CACertFile: ca.CertPEM(), clientCertFile: m3Cert, clientKeyFile: m3Key} {
		if err := pki.WriteFileAtomic(filepath.Join(lay.m3PKI(), name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startLocalEtcd starts the single node's member over mutual TLS on the
// configured (loopback) addresses. A data dir from a version that served
// plain HTTP keeps its data: the member restarts on https and its recorded
// peer URL is updated.
func (s *Supervisor) startLocalEtcd(ctx context.Context, lay layout) (*store.Etcd, error) {
	cfg := s.cfg
	clientURL, err := localURL(cfg.Etcd.ClientURL)
	if err != nil {
		return nil, err
	}
	peerURL, err := localURL(cfg.Etcd.PeerURL)
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
	ca, err := s.localPKI(lay, hosts)
	if err != nil {
		return nil, fmt.Errorf("single-node etcd certificates: %w", err)
	}
	dir := lay.pki()
	e, err := store.StartClusterEtcd(ctx, store.ClusterOptions{
		Name: cfg.Etcd.Name, Dir: lay.etcd(), ClientURL: clientURL, PeerURL: peerURL,
		TLS: store.ClusterTLS{
			CAFile:   filepath.Join(dir, pki.CACertFile),
			CertFile: filepath.Join(dir, peerCertFile), KeyFile: filepath.Join(dir, peerKeyFile),
			ClientCertFile: filepath.Join(dir, clientCertFile), ClientKeyFile: filepath.Join(dir, clientKeyFile),
		},
		AllowedPeerCN: pki.EtcdPeerCN,
		StartTimeout:  cfg.Etcd.StartTimeout.D(),
		Logger:        s.log,
	})
	if err != nil {
		return nil, err
	}
	if err := s.asRoot(ctx, ca, clientURL, func(ctx context.Context, root *clientv3.Client) error {
		if changed, err := store.EnsurePeerURL(ctx, root, e.MemberID(), peerURL); err != nil {
			return err
		} else if changed {
			s.log.Info("etcd member moved from plain HTTP to mutual TLS", zap.String("peerURL", peerURL))
		}
		return store.EnsureAuth(ctx, root, store.Identities{Admins: []string{pki.NodeCN(cfg.NodeName)}, M3: []string{pki.M3CN(cfg.NodeName)}})
	}); err != nil {
		e.Close()
		return nil, err
	}
	s.mu.Lock()
	s.m3LocalTLS = &m3.EtcdTLS{CertPath: containerPKI + "/" + clientCertFile, KeyPath: containerPKI + "/" + clientKeyFile, CAPath: containerPKI + "/" + pki.CACertFile}
	s.mu.Unlock()
	return e, nil
}

// asRoot runs f with a client that acts as etcd's root user: a
// certificate with CN store.RootUser, issued in memory by the CA this host
// holds, valid for ten minutes and dropped after. etcd's auth, once on,
// always has that user, so the setup works whatever users the data holds
// (a backup restored onto a host of another name, a data dir whose host
// name changed) where the host's own identity may have none yet.
func (s *Supervisor) asRoot(ctx context.Context, ca *pki.CA, endpoint string, f func(context.Context, *clientv3.Client) error) error {
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
		Logger:      s.log.Named("etcd-root").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		return fmt.Errorf("connect to etcd as root: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return f(ctx, cli)
}
