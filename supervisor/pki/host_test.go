package pki_test

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestHostPKI: LoadOrCreateCA creates a CA once and loads it after; the
// host's certificates name the peer CN with its hosts as SANs and the
// node's client CN; M3's dir holds the CA certificate and M3's client
// certificate, never the CA key; every file is 0600.
func TestHostPKI(t *testing.T) {
	dir := t.TempDir()
	ca, created, err := pki.LoadOrCreateCA(dir, "test CA", time.Now())
	if err != nil || !created {
		t.Fatalf("first: created %t, %v", created, err)
	}
	again, created, err := pki.LoadOrCreateCA(dir, "test CA", time.Now())
	if err != nil || created || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("second: created %t, same %t, %v", created, err == nil && again.Fingerprint() == ca.Fingerprint(), err)
	}
	if err := ca.IssueHost(dir, "h1", []string{"h1", "", "10.0.0.1"}, 0); err != nil {
		t.Fatal(err)
	}
	cert := func(path string) *x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", path, fi.Mode())
		}
		c, err := pki.ParseCert(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	peer := cert(filepath.Join(dir, pki.PeerCertFile))
	if peer.Subject.CommonName != pki.EtcdPeerCN || !slices.Equal(peer.DNSNames, []string{"h1"}) || len(peer.IPAddresses) != 1 || !peer.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("peer certificate: CN %q, DNS %v, IPs %v", peer.Subject.CommonName, peer.DNSNames, peer.IPAddresses)
	}
	if c := cert(filepath.Join(dir, pki.ClientCertFile)); c.Subject.CommonName != pki.NodeCN("h1") {
		t.Errorf("client certificate CN %q", c.Subject.CommonName)
	}
	m3 := filepath.Join(dir, "m3")
	if err := ca.IssueM3(m3, "h1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if c := cert(filepath.Join(m3, pki.ClientCertFile)); c.Subject.CommonName != pki.M3CN("h1") {
		t.Errorf("M3's certificate CN %q", c.Subject.CommonName)
	}
	cert(filepath.Join(m3, pki.CACertFile))
	if _, err := os.Stat(filepath.Join(m3, pki.CAKeyFile)); err == nil {
		t.Error("M3's dir holds the CA key")
	}
	cp := filepath.Join(dir, "copy")
	if err := pki.CopyFiles(dir, cp, pki.CACertFile, pki.ClientCertFile); err != nil {
		t.Fatal(err)
	}
	if c := cert(filepath.Join(cp, pki.ClientCertFile)); c.Subject.CommonName != pki.NodeCN("h1") {
		t.Errorf("copied client certificate CN %q", c.Subject.CommonName)
	}
}
