package pki

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/m3sup/m3sup/internal/atomicfile"
)

// File names of a host's etcd certificates in its PKI dir (<dataDir>/pki,
// beside CACertFile and CAKeyFile). M3's copy (<dataDir>/pki/m3) holds only
// CACertFile, ClientCertFile and ClientKeyFile.
const (
	PeerCertFile   = "etcd-peer.crt"
	PeerKeyFile    = "etcd-peer.key"
	ClientCertFile = "etcd-client.crt"
	ClientKeyFile  = "etcd-client.key"
)

// LoadOrCreateCA loads the CA kept in dir, or creates one named name there;
// created reports the latter.
func LoadOrCreateCA(dir, name string, now time.Time) (ca *CA, created bool, err error) {
	ca, err = LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = NewCA(name, now); err != nil {
			return nil, false, fmt.Errorf("create %s: %w", name, err)
		}
		if err := ca.Save(dir); err != nil {
			return nil, false, fmt.Errorf("save %s in %s: %w", name, dir, err)
		}
		return ca, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load the CA in %s: %w", dir, err)
	}
	return ca, false, nil
}

// IssueHost issues, afresh, a host's etcd member certificate (CN
// EtcdPeerCN, SANs hosts) and its own etcd client certificate (CN
// NodeCN(node)), and writes them into dir as PeerCertFile, PeerKeyFile,
// ClientCertFile and ClientKeyFile.
func (ca *CA) IssueHost(dir, node string, hosts []string) error {
	dns, ips := SplitHosts(hosts)
	peerCert, peerKey, err := ca.Issue(IssueOptions{CommonName: EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: UsagePeer})
	if err != nil {
		return err
	}
	cliCert, cliKey, err := ca.Issue(IssueOptions{CommonName: NodeCN(node), Usage: UsageClient})
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{PeerCertFile: peerCert, PeerKeyFile: peerKey, ClientCertFile: cliCert, ClientKeyFile: cliKey} {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// IssueM3 gives M3's containers on node their own etcd client certificate
// (CN M3CN(node): M3's keys only) and the CA certificate in dir (created
// 0700), issued afresh by a host that holds the CA.
func (ca *CA) IssueM3(dir, node string) error {
	m3Cert, m3Key, err := ca.Issue(IssueOptions{CommonName: M3CN(node), Usage: UsageClient})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for name, b := range map[string][]byte{CACertFile: ca.CertPEM(), ClientCertFile: m3Cert, ClientKeyFile: m3Key} {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// CopyFiles copies the named files from one PKI dir to another (created
// 0700), each written 0600: how a host without the CA key gives M3 its own
// certificates.
func CopyFiles(from, to string, names ...string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(to, n), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// SplitHosts splits host names and IP addresses (SANs), skipping empty
// ones.
func SplitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}
