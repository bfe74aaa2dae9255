package store_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestCertificateRenewalInPlace: a member started from certificate files
// (etcd's transport.TLSInfo) serves renewed files at the next handshake,
// with no restart: a new connection sees the new server certificate's
// serial, the renewed client certificate is accepted, and after the old
// certificates expire the member, its own client (connected before) and a
// new client keep working while the old client certificate is refused.
func TestCertificateRenewalInPlace(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate to expire")
	}
	const shortTTL = 6 * time.Second
	ca, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueHost(dir, "n1", []string{"127.0.0.1"}, shortTTL); err != nil {
		t.Fatal(err)
	}
	oldPeer := readCert(t, filepath.Join(dir, pki.PeerCertFile))
	oldClient, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.ClientCertFile), filepath.Join(dir, pki.ClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	p := freePortsOn(t, "127.0.0.1", 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := store.StartClusterEtcd(ctx, store.ClusterOptions{
		Name: "n1", Dir: filepath.Join(dir, "etcd"),
		ClientURL: "https://127.0.0.1:" + itoa(p[0]), PeerURL: "https://127.0.0.1:" + itoa(p[1]),
		TLS: store.ClusterTLS{
			CAFile:   filepath.Join(dir, pki.CACertFile),
			CertFile: filepath.Join(dir, pki.PeerCertFile), KeyFile: filepath.Join(dir, pki.PeerKeyFile),
			ClientCertFile: filepath.Join(dir, pki.ClientCertFile), ClientKeyFile: filepath.Join(dir, pki.ClientKeyFile),
		},
		AllowedPeerCN: pki.EtcdPeerCN,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	u, _ := url.Parse(e.Endpoint())
	if got := serverSerial(t, ca, u.Host, oldClient); got != oldPeer.SerialNumber.String() {
		t.Fatalf("before renewal the member serves serial %s, want %s", got, oldPeer.SerialNumber)
	}

	if err := ca.IssueHost(dir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	newPeer := readCert(t, filepath.Join(dir, pki.PeerCertFile))
	if got := serverSerial(t, ca, u.Host, oldClient); got != newPeer.SerialNumber.String() {
		t.Fatalf("after renewal a new connection sees serial %s, want the renewed %s", got, newPeer.SerialNumber)
	}

	time.Sleep(time.Until(oldPeer.NotAfter) + time.Second) // the old certificates expire
	if _, err := e.Client().Put(ctx, "/after-expiry", "1"); err != nil {
		t.Errorf("the member's own client after the old certificates expired: %v", err)
	}
	cli, err := store.ConnectCluster(ctx, store.ClientOptions{Endpoints: []string{e.Endpoint()},
		CAFile: filepath.Join(dir, pki.CACertFile), CertFile: filepath.Join(dir, pki.ClientCertFile), KeyFile: filepath.Join(dir, pki.ClientKeyFile),
		StartTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("a new client with the renewed certificate: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Client().Get(ctx, "/after-expiry"); err != nil {
		t.Errorf("a new client with the renewed certificate: %v", err)
	}
	if err := tlsRoundTrip(ca, u.Host, oldClient); err == nil {
		t.Error("the expired client certificate is still accepted")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	_, c, err := pki.ReadCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serverSerial opens a new TLS connection to addr and returns the serial
// of the certificate the server presents.
func serverSerial(t *testing.T, ca *pki.CA, addr string, client tls.Certificate) string {
	t.Helper()
	cfg, err := pki.ClientTLS(ca.CertPEM(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{client}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// tlsRoundTrip sends an HTTP request over a new TLS connection presenting
// client and reads the answer: a refused client certificate fails here
// (with TLS 1.3 the server's alert comes after the client's handshake).
func tlsRoundTrip(ca *pki.CA, addr string, client tls.Certificate) error {
	cfg, err := pki.ClientTLS(ca.CertPEM(), "127.0.0.1")
	if err != nil {
		return err
	}
	cfg.Certificates = []tls.Certificate{client}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("GET /version HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	b := make([]byte, 64)
	_, err = conn.Read(b)
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }
