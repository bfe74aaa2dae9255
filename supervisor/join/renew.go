package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// RenewPath is where a host without the CA renews its etcd client
// certificate: it presents the current one (mutual TLS), which must be
// valid and issued by the cluster CA for a host's identity (CN
// pki.NodeCN), and gets a new one for the same identity. No token: the
// certificate is the proof, and it can only ever renew itself.
const RenewPath = "/v1/renew"

// RenewResponse is the answer to a renewal: a new client certificate and
// key (PEM) for the same identity, and the CA certificate.
type RenewResponse struct {
	CACert     []byte `json:"caCert"`
	ClientCert []byte `json:"clientCert"`
	ClientKey  []byte `json:"clientKey"`
}

// renewIdentity returns the host name a renewal is for: the CN of the
// client certificate r's TLS handshake verified against the CA, if it is
// a host's identity used for client authentication only.
func renewIdentity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("renewal needs the host's current client certificate (mutual TLS)")
	}
	leaf := r.TLS.PeerCertificates[0]
	name, ok := strings.CutPrefix(leaf.Subject.CommonName, pki.NodeCN(""))
	if !ok || name == "" {
		return "", fmt.Errorf("certificate %q is not a host's client certificate", leaf.Subject.CommonName)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		return "", fmt.Errorf("certificate %q is not a client-only certificate", leaf.Subject.CommonName)
	}
	return name, nil
}

// renew serves RenewPath.
func (s *server) renew(w http.ResponseWriter, r *http.Request) {
	src := remoteAddr(r)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, err := renewIdentity(r)
	if err != nil {
		s.countFailure(src)
		s.logRefusal(src, "certificate renewal refused", zap.Error(err))
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.JoinTimeout)
	defer cancel()
	if s.Renewable != nil {
		if err := s.Renewable(ctx, name); err != nil {
			s.countFailure(src)
			s.logRefusal(src, "certificate renewal refused", zap.String("node", name), zap.Error(err))
			http.Error(w, "renewal refused: "+err.Error(), http.StatusForbidden)
			return
		}
	}
	cert, key, err := s.CA.Issue(pki.IssueOptions{CommonName: pki.NodeCN(name), Usage: pki.UsageClient, TTL: s.CertTTL, Now: s.Now()})
	if err != nil {
		http.Error(w, "issue a certificate: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.Logger.Info("renewed a host's client certificate", zap.String("node", name), zap.String("remote", src.String()))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(RenewResponse{CACert: s.CA.CertPEM(), ClientCert: cert, ClientKey: key})
}

// Renew asks the join endpoint at joinURL (https) for a new client
// certificate, presenting client (the current one) and trusting only the
// CA in caPEM. The answer must be a certificate that CA issued, for
// client's CN, matching its key.
func Renew(ctx context.Context, joinURL string, caPEM []byte, client tls.Certificate) (RenewResponse, error) {
	u, err := url.Parse(joinURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return RenewResponse{}, fmt.Errorf("renew at %q: want https://host:port", joinURL)
	}
	if client.Leaf == nil {
		return RenewResponse{}, errors.New("renew: no client certificate")
	}
	cfg, err := pki.ClientTLS(caPEM, u.Hostname())
	if err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: %w", u.Host, err)
	}
	cfg.Certificates = []tls.Certificate{client}
	tr := &http.Transport{Proxy: nil, TLSClientConfig: cfg, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath(RenewPath).String(), bytes.NewReader(nil))
	if err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: %w", u.Host, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: read the answer: %w", u.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return RenewResponse{}, fmt.Errorf("renew at %s: %s: %s", u.Host, resp.Status, strings.TrimSpace(string(body)))
	}
	var rr RenewResponse
	if err := json.Unmarshal(body, &rr); err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: decode the answer: %w", u.Host, err)
	}
	if err := checkRenewed(rr, caPEM, client.Leaf.Subject.CommonName); err != nil {
		return RenewResponse{}, fmt.Errorf("renew at %s: %w", u.Host, err)
	}
	return rr, nil
}

// checkRenewed verifies a renewal's answer: the same CA, a client
// certificate it issued for cn, and the key that goes with it.
func checkRenewed(rr RenewResponse, caPEM []byte, cn string) error {
	if !bytes.Equal(bytes.TrimSpace(rr.CACert), bytes.TrimSpace(caPEM)) {
		return errors.New("the answer names another CA")
	}
	kp, err := pki.KeyPair(rr.ClientCert, rr.ClientKey)
	if err != nil {
		return fmt.Errorf("the answer's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if _, err := kp.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the answer's certificate: %w", err)
	}
	if kp.Leaf.Subject.CommonName != cn {
		return fmt.Errorf("the answer's certificate is for %q, not %q", kp.Leaf.Subject.CommonName, cn)
	}
	return nil
}
