package pki

import (
	"bytes"
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
// ClientCertFile and ClientKeyFile, each valid for ttl (zero:
// DefaultTTL). Each file is replaced atomically; etcd reads them at every
// TLS handshake, so a running member picks renewed ones up.
func (ca *CA) IssueHost(dir, node string, hosts []string, ttl time.Duration) error {
	dns, ips := SplitHosts(hosts)
	peerCert, peerKey, err := ca.Issue(IssueOptions{CommonName: EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: UsagePeer, TTL: ttl})
	if err != nil {
		return err
	}
	cliCert, cliKey, err := ca.Issue(IssueOptions{CommonName: NodeCN(node), Usage: UsageClient, TTL: ttl})
	if err != nil {
		return err
	}
	return writePairs(dir, []namedFile{{PeerKeyFile, peerKey}, {PeerCertFile, peerCert}, {ClientKeyFile, cliKey}, {ClientCertFile, cliCert}})
}

// IssueM3 gives M3's containers on node their own etcd client certificate
// (CN M3CN(node): M3's keys only) and the CA certificate in dir (created
// 0700), issued afresh by a host that holds the CA, valid for ttl (zero:
// DefaultTTL).
func (ca *CA) IssueM3(dir, node string, ttl time.Duration) error {
	m3Cert, m3Key, err := ca.Issue(IssueOptions{CommonName: M3CN(node), Usage: UsageClient, TTL: ttl})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return writePairs(dir, []namedFile{{CACertFile, ca.CertPEM()}, {ClientKeyFile, m3Key}, {ClientCertFile, m3Cert}})
}

type namedFile struct {
	name string
	b    []byte
}

// writePairs replaces each file atomically (0600), in order: a key before
// its certificate. A reader that loads the pair between the two renames
// (etcd, at a TLS handshake) sees a mismatch and fails that one
// handshake, which the client retries; it never sees half a file.
func writePairs(dir string, files []namedFile) error {
	for _, f := range files {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
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

// M3Current reports whether dir already holds what IssueM3 would write and
// it need not be issued again: the CA certificate of ca, and M3's client
// certificate for node (with its key) issued by ca for ttl (zero:
// DefaultTTL), not yet at the start of its renewal window (RenewAt at
// r=0). M3 reads its certificate once at start and restarts for a new one
// (render.Etcd.CertSerial), so a daemon restart keeps M3's while it is
// current.
func (ca *CA) M3Current(dir, node string, ttl time.Duration, now time.Time) bool {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil || !bytes.Equal(caPEM, ca.certPEM) {
		return false
	}
	info, c, err := ReadCertFile(filepath.Join(dir, ClientCertFile))
	if err != nil || info.CommonName != M3CN(node) || c.CheckSignatureFrom(ca.cert) != nil {
		return false
	}
	if d := info.NotAfter.Sub(info.Issued) - ttl; d < -time.Minute || d > time.Minute {
		return false // issued for another cluster.certLifetime
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, ClientCertFile))
	if err != nil {
		return false
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, ClientKeyFile))
	if err != nil {
		return false
	}
	if _, err := KeyPair(certPEM, keyPEM); err != nil {
		return false
	}
	return now.Before(info.RenewAt(0))
}

// WriteClient replaces the client certificate and key in dir
// (ClientCertFile, ClientKeyFile; 0600, key first): how a host without
// the CA installs a renewed certificate (join.Renew).
func WriteClient(dir string, certPEM, keyPEM []byte) error {
	if _, err := KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("write the client certificate in %s: %w", dir, err)
	}
	return writePairs(dir, []namedFile{{ClientKeyFile, keyPEM}, {ClientCertFile, certPEM}})
}
