package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("m3sup-test-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, o pki.IssueOptions) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(o)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", o, err)
	}
	c, err := pki.ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

func TestNewCA(t *testing.T) {
	ca, err := pki.NewCA("m3sup", t0)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert()
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", c.IsCA, c.MaxPathLenZero, c.KeyUsage)
	}
	if got, want := c.NotAfter, t0.Add(pki.CAValidity); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	fp, err := pki.Fingerprint(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if fp != ca.Fingerprint() || !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 {
		t.Errorf("Fingerprint = %q, CA.Fingerprint = %q", fp, ca.Fingerprint())
	}
	if _, err := pki.NewCA("", t0); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("NewCA with empty name: %v, want ErrInvalid", err)
	}
}

func TestSaveLoad(t *testing.T) {
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "pki")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{pki.CAKeyFile: 0o600, pki.CACertFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", name, got, want)
		}
	}
	// Saving again replaces the files in place; no temporaries stay behind.
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("dir holds %d entries, want 2: %v", len(ents), ents)
	}
	loaded, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Fatal("loaded CA differs")
	}
	// The loaded key signs certificates that chain to the saved certificate.
	c, _, _ := issue(t, loaded, pki.IssueOptions{CommonName: "x", Usage: pki.UsageClient})
	if err := c.CheckSignatureFrom(ca.Cert()); err != nil {
		t.Errorf("cert from loaded CA: %v", err)
	}

	// A key that does not belong to the certificate is refused.
	other := filepath.Join(t.TempDir(), "other")
	if err := newCA(t).Save(other); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(other, pki.CAKeyFile))
	if err := os.WriteFile(filepath.Join(dir, pki.CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(dir); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("LoadCA with foreign key: %v, want ErrInvalid", err)
	}
	if _, err := pki.LoadCA(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCA of empty dir: %v, want ErrNotExist", err)
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert())
	ip := net.ParseIP("10.0.0.7")
	tests := []struct {
		usage pki.Usage
		eku   []x509.ExtKeyUsage
	}{
		{pki.UsageServer, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{pki.UsageClient, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{pki.UsagePeer, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.usage.String(), func(t *testing.T) {
			c, _, _ := issue(t, ca, pki.IssueOptions{
				CommonName: "node-a", DNSNames: []string{"node-a.example"}, IPs: []net.IP{ip},
				Usage: tt.usage, TTL: time.Hour,
			})
			if !slices.Equal(c.ExtKeyUsage, tt.eku) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tt.eku)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if !slices.Equal(c.DNSNames, []string{"node-a.example"}) || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ip) {
				t.Errorf("SANs = %v %v", c.DNSNames, c.IPAddresses)
			}
			if d := c.NotAfter.Sub(c.NotBefore); d < time.Hour || d > time.Hour+10*time.Minute {
				t.Errorf("validity %v, want about 1h", d)
			}
			for _, u := range tt.eku {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}, DNSName: "node-a.example"}); err != nil {
					t.Errorf("verify for %v: %v", u, err)
				}
			}
			if err := c.VerifyHostname("10.0.0.7"); err != nil {
				t.Error(err)
			}
		})
	}

	// The TTL stops at the CA's expiry.
	c, _, _ := issue(t, ca, pki.IssueOptions{CommonName: "long", Usage: pki.UsageClient, TTL: 100 * 365 * 24 * time.Hour})
	if !c.NotAfter.Equal(ca.Cert().NotAfter) {
		t.Errorf("NotAfter %v beyond CA's %v", c.NotAfter, ca.Cert().NotAfter)
	}

	for name, o := range map[string]pki.IssueOptions{
		"no common name":   {Usage: pki.UsageClient},
		"no usage":         {CommonName: "x"},
		"server, no names": {CommonName: "x", Usage: pki.UsageServer},
		"negative TTL":     {CommonName: "x", Usage: pki.UsageClient, TTL: -time.Second},
	} {
		if _, _, err := ca.Issue(o); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// handshake runs one TLS handshake over loopback TCP and returns the
// client's and the server's errors. The server writes one byte after its
// handshake so the client learns whether its certificate was accepted.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		ts := tls.Server(s, server)
		err = ts.Handshake()
		if err == nil {
			_, err = ts.Write([]byte{1})
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	c.Close()
	return clientErr, <-done
}

func TestTLS(t *testing.T) {
	ca := newCA(t)
	foreign := newCA(t)
	now := time.Now()
	server := func(ca *pki.CA, now time.Time, ttl time.Duration) *tls.Config {
		_, certPEM, keyPEM := issue(t, ca, pki.IssueOptions{CommonName: "srv", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"srv.test"}, Usage: pki.UsageServer, Now: now, TTL: ttl})
		cfg, err := pki.ServerTLS(certPEM, keyPEM, ca.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	client := func(trust *pki.CA, certBy *pki.CA, usage pki.Usage, now time.Time) *tls.Config {
		cfg, err := pki.ClientTLS(trust.CertPEM(), "srv.test")
		if err != nil {
			t.Fatal(err)
		}
		if certBy != nil {
			_, certPEM, keyPEM := issue(t, certBy, pki.IssueOptions{CommonName: "cli", DNSNames: []string{"cli.test"}, Usage: usage, Now: now, TTL: time.Hour})
			kp, err := pki.KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{kp}
		}
		return cfg
	}
	past := now.Add(-48 * time.Hour)
	tests := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		clientFail bool // the client refuses the server
		serverFail bool // the server refuses the client
	}{
		{"mutual", server(ca, now, time.Hour), client(ca, ca, pki.UsageClient, now), false, false},
		{"peer cert as client", server(ca, now, time.Hour), client(ca, ca, pki.UsagePeer, now), false, false},
		{"expired server", server(ca, past, time.Hour), client(ca, ca, pki.UsageClient, now), true, false},
		{"foreign server", server(foreign, now, time.Hour), client(ca, ca, pki.UsageClient, now), true, false},
		{"no client cert", server(ca, now, time.Hour), client(ca, nil, 0, now), false, true},
		{"foreign client", server(ca, now, time.Hour), client(ca, foreign, pki.UsageClient, now), false, true},
		{"expired client", server(ca, now, time.Hour), client(ca, ca, pki.UsageClient, past), false, true},
		{"server-only cert as client", server(ca, now, time.Hour), client(ca, ca, pki.UsageServer, now), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cerr, serr := handshake(t, tt.server, tt.client)
			switch {
			case tt.clientFail:
				var verr *tls.CertificateVerificationError
				if !errors.As(cerr, &verr) {
					t.Errorf("client error = %v, want a certificate verification error", cerr)
				}
			case tt.serverFail:
				if serr == nil {
					t.Errorf("server accepted the client")
				}
			default:
				if cerr != nil || serr != nil {
					t.Errorf("handshake: client %v, server %v", cerr, serr)
				}
			}
		})
	}
}

func TestFingerprintInvalid(t *testing.T) {
	if _, err := pki.Fingerprint([]byte("not pem")); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("Fingerprint(junk) = %v, want ErrInvalid", err)
	}
	if _, err := pki.ClientTLS([]byte("x"), "h"); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("ClientTLS(junk) = %v", err)
	}
}

func TestParseCA(t *testing.T) {
	ca, err := pki.NewCA("cluster", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.KeyPEM()
	got, err := pki.ParseCA(ca.CertPEM(), key)
	if err != nil || got.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("ParseCA of its own parts: %v", err)
	}
	if _, _, err := got.Issue(pki.IssueOptions{CommonName: "c", Usage: pki.UsageClient}); err != nil {
		t.Fatalf("the parsed CA cannot issue: %v", err)
	}
	leaf, leafKey, _ := ca.Issue(pki.IssueOptions{CommonName: "c", Usage: pki.UsageClient})
	for name, parts := range map[string][2][]byte{
		"another CA's key": {ca.CertPEM(), otherKey},
		"a leaf":           {leaf, leafKey},
		"no key":           {ca.CertPEM(), nil},
	} {
		if _, err := pki.ParseCA(parts[0], parts[1]); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
