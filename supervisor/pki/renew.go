package pki

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"time"
)

// Renewal window: a certificate is renewed at a random point between
// RenewFrom and RenewTo of its lifetime (NotBefore to NotAfter), so hosts
// issued certificates together do not all renew at the same moment and a
// failed renewal has a quarter of the lifetime left to be retried.
const (
	RenewFrom = 2.0 / 3
	RenewTo   = 3.0 / 4

	// ExpiryWarning is how long before expiry a certificate is reported as
	// expiring soon, unless a tenth of its lifetime is shorter (WarnAt).
	ExpiryWarning = 30 * 24 * time.Hour
)

// RenewAt returns when a certificate valid from notBefore to notAfter is
// renewed: at RenewFrom + r*(RenewTo-RenewFrom) of its lifetime, r in [0,
// 1) (a value outside is clamped). A certificate with no lifetime is due at
// once (notBefore).
func RenewAt(notBefore, notAfter time.Time, r float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	r = min(max(r, 0), 1)
	from, to := life*2/3, life*3/4 // RenewFrom, RenewTo, in integer nanoseconds
	return notBefore.Add(from + time.Duration(r*float64(to-from)))
}

// WarnAt returns when a certificate valid from notBefore to notAfter is
// reported as expiring soon: ExpiryWarning before notAfter, or a tenth of
// the lifetime before it if that is shorter (certificates of a few
// minutes, in tests). Renewal (RenewAt) comes well before; a warning means
// renewal has failed for a while.
func WarnAt(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-min(ExpiryWarning, notAfter.Sub(notBefore)/10))
}

// CertFileInfo is what status reports of a certificate file.
type CertFileInfo struct {
	Path       string    `json:"path"`
	CommonName string    `json:"commonName"`
	Serial     string    `json:"serial"` // hex
	NotBefore  time.Time `json:"notBefore"`
	NotAfter   time.Time `json:"notAfter"`
	// Issued is when it was issued: NotBefore is backdated by a few
	// minutes of clock skew, which would make a short lifetime's renewal
	// point (RenewAt) come early. Lifetimes run from Issued.
	Issued time.Time `json:"issued"`
}

// RenewAt is RenewAt(i.Issued, i.NotAfter, r).
func (i CertFileInfo) RenewAt(r float64) time.Time { return RenewAt(i.Issued, i.NotAfter, r) }

// WarnAt is WarnAt(i.Issued, i.NotAfter).
func (i CertFileInfo) WarnAt() time.Time { return WarnAt(i.Issued, i.NotAfter) }

// ReadCertFile reads the first certificate of the PEM file at path.
func ReadCertFile(path string) (CertFileInfo, *x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CertFileInfo{}, nil, fmt.Errorf("read certificate: %w", err)
	}
	c, err := ParseCert(b)
	if err != nil {
		return CertFileInfo{}, nil, fmt.Errorf("read certificate %s: %w", path, err)
	}
	return Info(path, c), c, nil
}

// Info describes c, found at path (which may be a description of an
// in-memory certificate).
func Info(path string, c *x509.Certificate) CertFileInfo {
	issued := c.NotBefore.Add(clockSkew)
	if issued.After(c.NotAfter) {
		issued = c.NotBefore
	}
	return CertFileInfo{Path: path, CommonName: c.Subject.CommonName, Serial: serialHex(c.SerialNumber),
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, Issued: issued}
}

func serialHex(s *big.Int) string {
	if s == nil {
		return ""
	}
	return s.Text(16)
}
