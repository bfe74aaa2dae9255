package member

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// JoinCertPath names the join endpoint's certificate (held in memory) in
// Certs.
const JoinCertPath = "join endpoint (in memory)"

// certFiles are the certificate files this host holds: its member's (none
// on a client-only host), its own etcd client's and M3's.
func (m *Member) certFiles() []string {
	return []string{
		filepath.Join(m.o.Paths.PKI, pki.PeerCertFile),
		filepath.Join(m.o.Paths.PKI, pki.ClientCertFile),
		filepath.Join(m.o.Paths.M3PKI, pki.ClientCertFile),
	}
}

// Certs describes every certificate this host presents: the files of
// certFiles that exist, and the join endpoint's. A file that cannot be
// read or parsed is an error; one that does not exist is skipped.
func (m *Member) Certs() ([]pki.CertFileInfo, error) {
	var out []pki.CertFileInfo
	for _, f := range m.certFiles() {
		info, _, err := pki.ReadCertFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
	if kp := m.joinCert.Load(); kp != nil && kp.Leaf != nil {
		out = append(out, pki.Info(JoinCertPath, kp.Leaf))
	}
	return out, nil
}

// M3CertSerial is the serial of M3's etcd client certificate on disk, or
// "" when there is none: M3 reads it once at start, so a renewed one
// changes the component's spec (render.Etcd.CertSerial) and M3 restarts
// through its restart gate.
func (m *Member) M3CertSerial() string {
	info, _, err := pki.ReadCertFile(filepath.Join(m.o.Paths.M3PKI, pki.ClientCertFile))
	if err != nil {
		return ""
	}
	return info.Serial
}

// NextRenewal returns when the earliest of certs is due for renewal
// (pki.RenewAt with r), and false for no certificates.
func NextRenewal(certs []pki.CertFileInfo, r float64) (time.Time, bool) {
	var at time.Time
	for i, c := range certs {
		if t := c.RenewAt(r); i == 0 || t.Before(at) {
			at = t
		}
	}
	return at, len(certs) > 0
}

// RenewRetry is how long RenewCerts waits after a failed renewal, at most;
// a short lifetime retries sooner (a hundredth of it).
const RenewRetry = time.Minute

// RenewCerts renews this host's certificates in place, as an actor of the
// daemon's run group: it sleeps until the earliest is due (NextRenewal,
// with r drawn from rnd at each schedule), renews, logs, and schedules
// again; a failed renewal is retried after RenewRetry (or a hundredth of
// the lifetime). It returns when ctx ends. A host that holds the CA
// reissues all of its certificates itself (Renew); a host without it
// renews its client certificate at a CA holder's join endpoint,
// presenting the current one (RenewRemote). onRenew, when set, is called
// after every renewal.
func (m *Member) RenewCerts(ctx context.Context, rnd func() float64, onRenew func()) error {
	log := m.o.Logger.Named("certs")
	renew := func() error { return m.Renew() }
	if m.issuer == nil {
		renew = func() error { return m.RenewRemote(ctx) }
	}
	for {
		certs, err := m.Certs()
		wait := time.Duration(0)
		if err != nil {
			log.Error("read this host's certificates; renewing them", zap.Error(err))
		} else if at, ok := NextRenewal(m.renewable(certs), rnd()); ok {
			wait = time.Until(at)
			log.Info("next certificate renewal", zap.Time("at", at))
		} else {
			wait = m.ttl() // nothing this host can renew; look again later
		}
		if !sleep(ctx, wait) {
			return nil
		}
		if err := renew(); err != nil {
			retry := min(RenewRetry, m.ttl()/100)
			log.Error("renew this host's certificates; retrying", zap.Error(err), zap.Duration("in", retry))
			if !sleep(ctx, retry) {
				return nil
			}
			continue
		}
		if certs, err := m.Certs(); err == nil {
			for _, c := range m.renewable(certs) {
				log.Info("renewed certificate", zap.String("path", c.Path), zap.String("cn", c.CommonName),
					zap.String("serial", c.Serial), zap.Time("notAfter", c.NotAfter))
			}
		}
		if onRenew != nil {
			onRenew()
		}
	}
}

// renewable returns those of certs this host renews: all of them on a
// host that holds the CA; its client certificate (and M3's copy of it)
// on one without. The member certificate of a voter that joined without
// the CA is not renewed (see SECURITY.md): status warns before it expires.
func (m *Member) renewable(certs []pki.CertFileInfo) []pki.CertFileInfo {
	if m.issuer != nil {
		return certs
	}
	var out []pki.CertFileInfo
	for _, c := range certs {
		if filepath.Base(c.Path) == pki.ClientCertFile {
			out = append(out, c)
		}
	}
	return out
}

// RenewRemote renews the client certificate of a host without the CA at
// a join endpoint of a host that holds it (join.Renew): those registered
// in etcd, then the one this host joined through. It presents its current
// certificate, which must still be valid. The new one replaces the files
// in the PKI dir and M3's copy.
func (m *Member) RenewRemote(ctx context.Context) error {
	dir := m.o.Paths.PKI
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return fmt.Errorf("renew the client certificate: %w", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, pki.ClientCertFile))
	if err != nil {
		return fmt.Errorf("renew the client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, pki.ClientKeyFile))
	if err != nil {
		return fmt.Errorf("renew the client certificate: %w", err)
	}
	cur, err := pki.KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("renew the client certificate in %s: %w", dir, err)
	}
	var urls []string
	if hosts, err := cluster.Hosts(ctx, m.etcd.Client()); err == nil {
		for _, h := range hosts {
			if h.HoldsCA && h.JoinURL != "" && !slices.Contains(urls, h.JoinURL) {
				urls = append(urls, h.JoinURL)
			}
		}
	}
	if cf, err := join.ReadClusterFile(m.o.Paths.ClusterFile); err == nil && cf.JoinURL != "" && !slices.Contains(urls, cf.JoinURL) {
		urls = append(urls, cf.JoinURL)
	}
	if len(urls) == 0 {
		return errors.New("renew the client certificate: no join endpoint of a host that holds the CA is known")
	}
	var errs []error
	for _, u := range urls {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		rr, err := join.Renew(rctx, u, caPEM, cur)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := pki.WriteClient(dir, rr.ClientCert, rr.ClientKey); err != nil {
			return err
		}
		// M3 uses this host's identity (no CA to issue it its own).
		if err := pki.CopyFiles(dir, m.o.Paths.M3PKI, pki.CACertFile, pki.ClientKeyFile, pki.ClientCertFile); err != nil {
			return fmt.Errorf("give M3 the renewed certificate: %w", err)
		}
		return nil
	}
	return fmt.Errorf("renew the client certificate: %w", errors.Join(errs...))
}

// Renew reissues, now, every certificate this host holds from its CA:
// the member's and its own client's (pki.IssueHost), M3's (pki.IssueM3)
// and the join endpoint's. Each file is replaced atomically; etcd (server
// and client) reads them at each TLS handshake, the join endpoint reads
// joinCert at each handshake.
func (m *Member) Renew() error {
	ca := m.issuer
	if ca == nil {
		return errors.New("renew certificates: this host does not hold the CA")
	}
	if err := ca.IssueHost(m.o.Paths.PKI, m.o.NodeName, m.hostNames, m.o.CertTTL); err != nil {
		return fmt.Errorf("renew etcd certificates in %s: %w", m.o.Paths.PKI, err)
	}
	if err := ca.IssueM3(m.o.Paths.M3PKI, m.o.NodeName, m.o.CertTTL); err != nil {
		return fmt.Errorf("renew M3's certificate in %s: %w", m.o.Paths.M3PKI, err)
	}
	if m.joinCert.Load() != nil {
		if _, err := m.issueJoinCert(); err != nil {
			return fmt.Errorf("renew the join endpoint's certificate: %w", err)
		}
	}
	return nil
}

func (m *Member) ttl() time.Duration {
	if m.o.CertTTL > 0 {
		return m.o.CertTTL
	}
	return pki.DefaultTTL
}

// sleep waits d (nothing when d <= 0) or until ctx ends; false for the
// latter.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// certHosts returns c's SANs as host names and IPs.
func certHosts(c *x509.Certificate) []string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	return hosts
}
