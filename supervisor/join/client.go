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
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// Join asks the cluster at joinURL (https://host:port of a member's join
// endpoint) to admit this host. Before any request byte is sent, the TLS
// handshake must show a chain holding the CA the token pins and a server
// certificate that CA issued for joinURL's host; otherwise, and for
// plain-HTTP URLs, Join fails with ErrRefused. The response's CA must be the
// pinned one too.
func Join(ctx context.Context, joinURL, token string, req Request) (Response, error) {
	tok, err := ParseToken(token)
	if err != nil {
		return Response{}, fmt.Errorf("join: %w", err)
	}
	u, err := url.Parse(joinURL)
	if err != nil {
		return Response{}, fmt.Errorf("join: URL %q: %w", joinURL, err)
	}
	switch {
	case u.Scheme == "http":
		return Response{}, fmt.Errorf("join %s: plain-HTTP join refused; use https://: %w", joinURL, ErrRefused)
	case u.Scheme != "https" || u.Host == "":
		return Response{}, fmt.Errorf("join %q: want https://host:port: %w", joinURL, ErrRefused)
	}
	body, err := encodeRequest(req)
	if err != nil {
		return Response{}, fmt.Errorf("join: %w", err)
	}

	pin := &pinner{fingerprint: tok.CAFingerprint(), host: u.Hostname()}
	tr := &http.Transport{
		Proxy:       nil, // the pinned handshake is end to end; no proxies
		DialContext: dialFrom(req.Advertise),
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Verification is not skipped: VerifyConnection checks the chain
			// against the pinned CA, as the standard check would against
			// system roots (which must not be trusted here).
			InsecureSkipVerify: true,
			VerifyConnection:   pin.verify,
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport: tr,
		// A redirect could carry the token elsewhere, even to plain HTTP.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath(Path).String(), bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("join: %w", err)
	}
	hreq.Header.Set("Authorization", "Bearer "+tok.Encode())
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := hc.Do(hreq)
	if err != nil {
		if perr := pin.err(); perr != nil {
			return Response{}, fmt.Errorf("join %s: %w", u.Host, perr)
		}
		return Response{}, fmt.Errorf("join %s: %w", u.Host, err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponseBytes))
	if err != nil {
		return Response{}, fmt.Errorf("join %s: read response: %w", u.Host, err)
	}
	switch hresp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return Response{}, fmt.Errorf("join %s: %s: %w", u.Host, strings.TrimSpace(string(data)), ErrRefused)
	default:
		return Response{}, &StatusError{Host: u.Host, Code: hresp.StatusCode, Status: hresp.Status,
			Message: strings.TrimSpace(string(data)), RetryAfter: retryAfter(hresp.Header.Get("Retry-After"))}
	}
	var resp Response
	if err := json.Unmarshal(data, &resp); err != nil {
		return Response{}, fmt.Errorf("join %s: decode response: %w", u.Host, err)
	}
	if fp, err := pki.Fingerprint([]byte(resp.CACert)); err != nil || fp != pin.fingerprint {
		return Response{}, fmt.Errorf("join %s: the response's CA is not the pinned one: %w", u.Host, ErrRefused)
	}
	if resp.CAKey != "" {
		if _, err := pki.ParseCA([]byte(resp.CACert), []byte(resp.CAKey)); err != nil {
			return Response{}, fmt.Errorf("join %s: the response's CA key: %w: %w", u.Host, err, ErrRefused)
		}
	}
	return resp, nil
}

// StatusError is the join endpoint's answer to a join it did not admit,
// other than a refused token or address (401, 403: ErrRefused): a bad
// request (400), a name in use (409), a busy cluster (503: another host is
// joining, etcd is busy) or rate limiting (429, with Retry-After).
// Classify says which of them are worth another try.
type StatusError struct {
	Host    string // the join endpoint's host:port
	Code    int    // HTTP status code
	Status  string // "503 Service Unavailable"
	Message string // the endpoint's explanation
	// RetryAfter is the endpoint's Retry-After (seconds), zero if none.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("join %s: %s: %s", e.Host, e.Status, e.Message)
}

// retryAfter reads a Retry-After header in seconds (the join endpoint
// never sends an HTTP date); anything else is zero.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, time.Hour)
}

// dialFrom dials from the first advertised IP when this host has it, so
// the join comes from the address the server checks advertised IPs
// against (checkAdvertise); otherwise (a DNS name, an address behind NAT)
// it lets the system pick.
func dialFrom(advertise []string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	var local net.IP
	for _, h := range advertise {
		if local = net.ParseIP(h); local != nil {
			break
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if local != nil {
			bound := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
			c, err := bound.DialContext(ctx, network, addr)
			if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EAFNOSUPPORT) && !errors.Is(err, syscall.EINVAL) {
				return c, err
			}
		}
		return d.DialContext(ctx, network, addr)
	}
}

// pinner verifies a server's chain against the CA a token pins: the chain
// must contain a CA certificate with the pinned fingerprint, and the leaf
// must verify against that CA alone for host.
type pinner struct {
	fingerprint string
	host        string
	mu          sync.Mutex
	last        error
}

func (p *pinner) verify(cs tls.ConnectionState) error {
	err := p.check(cs.PeerCertificates)
	p.mu.Lock()
	p.last = err
	p.mu.Unlock()
	return err
}

func (p *pinner) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *pinner) check(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("server presented no certificate: %w", ErrRefused)
	}
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	found := false
	for _, c := range chain[1:] {
		if !found && c.IsCA && pki.FingerprintDER(c.Raw) == p.fingerprint {
			roots.AddCert(c)
			found = true
			continue
		}
		inter.AddCert(c)
	}
	if !found {
		return fmt.Errorf("server's chain does not hold the CA the token pins (%s); wrong token or a machine in the middle: %w", p.fingerprint, ErrRefused)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		DNSName:       p.host,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("server certificate not issued by the pinned CA for %s: %w: %w", p.host, ErrRefused, err)
	}
	return nil
}
