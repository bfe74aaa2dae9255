package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/m3sup/m3sup/internal/atomicfile"
)

const (
	// CACertFile and CAKeyFile are the file names Save writes in its dir.
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"

	// CAValidity is how long a new CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultTTL is the validity of an issued certificate when IssueOptions.TTL is zero.
	DefaultTTL = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a host whose clock is slightly behind
	// the issuer's accepts a fresh certificate.
	clockSkew = 5 * time.Minute

	// EtcdPeerCN is the common name of every etcd member certificate. etcd's
	// peer listener admits only this CN, so a client certificate from the same
	// CA cannot pose as a member.
	EtcdPeerCN = "m3sup-etcd-peer"
)

// NodeCN is the common name of a host's own etcd client certificate (the
// etcd user m3sup on that host acts as).
func NodeCN(node string) string { return "m3sup-node:" + node }

// M3CN is the common name of the etcd client certificate M3's containers
// on node hold. With etcd's auth on, etcd takes a client certificate's CN
// as the user, and that user may touch only M3's keys (store.EnsureAuth);
// one per host, so remove-host can take one host's away.
func M3CN(node string) string { return "m3sup-m3:" + node }

// ErrInvalid marks a request the CA refuses: bad options or undecodable PEM.
var ErrInvalid = errors.New("invalid")

// Usage says what an issued certificate may authenticate.
type Usage int

const (
	UsageServer Usage = iota + 1 // TLS server authentication only
	UsageClient                  // TLS client authentication only
	UsagePeer                    // both: etcd members dial and serve each other
)

func (u Usage) String() string {
	switch u {
	case UsageServer:
		return "server"
	case UsageClient:
		return "client"
	case UsagePeer:
		return "peer"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

func (u Usage) extKeyUsages() []x509.ExtKeyUsage {
	switch u {
	case UsageServer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case UsageClient:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case UsagePeer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return nil
}

// IssueOptions describes one leaf certificate.
type IssueOptions struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Usage      Usage
	TTL        time.Duration // zero means DefaultTTL; capped at the CA's own expiry
	Now        time.Time     // issue time; zero means time.Now()
}

// CA is a self-signed certificate authority with its private key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA valid for CAValidity from now.
func NewCA(name string, now time.Time) (*CA, error) {
	if name == "" {
		return nil, fmt.Errorf("new CA: empty name: %w", ErrInvalid)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: generate key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"m3sup"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{cert: cert, certPEM: encodeCert(der), key: key}, nil
}

// LoadCA reads the CA that Save wrote to dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", dir, err)
	}
	return ca, nil
}

// ParseCA builds a CA from its PEM certificate and key; the key must match
// the certificate.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate is not a CA: %w", ErrInvalid)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key does not match the CA certificate: %w", ErrInvalid)
	}
	return &CA{cert: cert, certPEM: encodeCert(cert.Raw), key: key}, nil
}

// Save writes the CA certificate (0644) and key (0600) into dir, creating it
// (0700). Each file is written to a temporary name, synced and renamed, so a
// crash leaves either the old file or the new one.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CACertFile), ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// Cert returns the CA certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// CertPEM returns the PEM-encoded CA certificate.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// KeyPEM returns the CA's private key, PEM-encoded (PKCS #8): what a host
// needs, with the certificate, to issue certificates as this CA.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.key) }

// Fingerprint returns "sha256:<hex>" of the CA certificate's DER.
func (ca *CA) Fingerprint() string { return FingerprintDER(ca.cert.Raw) }

// Issue signs a new leaf certificate with a fresh ECDSA P-256 key and returns
// both PEM-encoded (the key as PKCS #8).
func (ca *CA) Issue(o IssueOptions) (certPEM, keyPEM []byte, err error) {
	if o.CommonName == "" {
		return nil, nil, fmt.Errorf("issue certificate: empty common name: %w", ErrInvalid)
	}
	eku := o.Usage.extKeyUsages()
	if eku == nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: unknown usage %v: %w", o.CommonName, o.Usage, ErrInvalid)
	}
	if o.Usage != UsageClient && len(o.DNSNames) == 0 && len(o.IPs) == 0 {
		return nil, nil, fmt.Errorf("issue %v certificate for %s: no DNS name or IP: %w", o.Usage, o.CommonName, ErrInvalid)
	}
	if o.TTL < 0 {
		return nil, nil, fmt.Errorf("issue certificate for %s: negative TTL: %w", o.CommonName, ErrInvalid)
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	notAfter := o.Now.Add(o.TTL)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: generate key: %w", o.CommonName, err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", o.CommonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"m3sup"}},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
		NotBefore:             o.Now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: sign: %w", o.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", o.CommonName, err)
	}
	return encodeCert(der), keyPEM, nil
}

// Fingerprint returns "sha256:<hex>" of the DER of the first certificate in
// certPEM.
func Fingerprint(certPEM []byte) (string, error) {
	c, err := ParseCert(certPEM)
	if err != nil {
		return "", err
	}
	return FingerprintDER(c.Raw), nil
}

// FingerprintDER returns "sha256:<hex>" of a DER-encoded certificate.
func FingerprintDER(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseCert decodes the first CERTIFICATE block of certPEM.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("no PEM certificate: %w", ErrInvalid)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w: %w", ErrInvalid, err)
		}
		return c, nil
	}
}

// ServerTLS returns a server config that presents certPEM (followed by the
// CA certificate, so a client can pin the CA from the chain) and requires
// every client to present a certificate issued by the CA in caPEM: mutual
// TLS is the default. A server that serves clients without certificates
// (the join endpoint) sets ClientAuth = tls.NoClientCert on the result.
func ServerTLS(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	pool, caCert, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w: %w", ErrInvalid, err)
	}
	kp.Certificate = append(kp.Certificate, caCert.Raw)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{kp},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientTLS returns a client config that trusts only the CA in caPEM and
// expects the server to be named serverName (a DNS name or an IP). A client
// that must authenticate itself appends its key pair to Certificates, e.g.
// with ClientKeyPair.
func ClientTLS(caPEM []byte, serverName string) (*tls.Config, error) {
	pool, _, err := caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}, nil
}

// KeyPair parses a PEM certificate and key into a tls.Certificate.
func KeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key pair: %w: %w", ErrInvalid, err)
	}
	return kp, nil
}

func caPool(caPEM []byte) (*x509.CertPool, *x509.Certificate, error) {
	c, err := ParseCert(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA: %w", err)
	}
	if !c.IsCA {
		return nil, nil, fmt.Errorf("CA: certificate %q is not a CA: %w", c.Subject.CommonName, ErrInvalid)
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p, c, nil
}

func randSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, fmt.Errorf("no PEM key: %w", ErrInvalid)
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key: %w", b.Type, ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w: %w", ErrInvalid, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign: %w", k, ErrInvalid)
	}
	return s, nil
}
