package join_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// noTokens refuses every token: renewal never looks at one.
type noTokens struct{}

func (noTokens) Check(context.Context, join.Token) (join.TokenInfo, error) {
	return join.TokenInfo{}, join.ErrRefused
}

func (noTokens) Use(context.Context, join.Token, string) (join.TokenInfo, error) {
	return join.TokenInfo{}, join.ErrRefused
}

func (noTokens) Release(context.Context, string, string) error { return nil }

func keyPair(t *testing.T, ca *pki.CA, o pki.IssueOptions) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestRenew: a host renews its client certificate at a join endpoint by
// presenting the current one, and gets one for the same identity with
// the configured lifetime; no certificate, another CA's, an expired one, a
// peer or M3 certificate, or a host Renewable refuses gets nothing. A
// joiner without a certificate still reaches the join path.
func TestRenew(t *testing.T) {
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lim := join.DefaultLimits
	lim.FailAfter, lim.Burst = 100, 100 // every refusal below gets its own reason
	h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: noTokens{}, Members: &fakeMembers{}, CertTTL: 2 * time.Hour, Limits: lim,
		Renewable: func(_ context.Context, name string) error {
			if name == "removed" {
				return errors.New("host removed from the cluster")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := serveTLS(t, h, cfg, &calls)
	ctx := testCtx(t)

	cur := keyPair(t, ca, pki.IssueOptions{CommonName: pki.NodeCN("c1"), Usage: pki.UsageClient, TTL: time.Hour})
	rr, err := join.Renew(ctx, srv.URL, ca.CertPEM(), cur)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCert(rr.ClientCert)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != pki.NodeCN("c1") || c.SerialNumber.Cmp(cur.Leaf.SerialNumber) == 0 {
		t.Errorf("renewed certificate %q serial %s, want a new one for %q", c.Subject.CommonName, c.SerialNumber, pki.NodeCN("c1"))
	}
	if d := time.Until(c.NotAfter); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("renewed certificate valid for %v, want cluster.certLifetime (2h)", d)
	}

	// A joiner (no certificate) reaches the join path: a token refusal
	// (401), not a TLS failure.
	tcfg, err := pki.ClientTLS(ca.CertPEM(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tcfg}}
	resp, err := hc.Post(srv.URL+join.Path, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("join without a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("join without a client certificate: %s, want 401", resp.Status)
	}

	// Refusals count as failures from their source (the limiter).
	for _, tc := range []struct {
		name string
		kp   tls.Certificate
		want string
	}{
		{"another CA's", keyPair(t, other, pki.IssueOptions{CommonName: pki.NodeCN("c1"), Usage: pki.UsageClient}), "needs the host's current client certificate"}, // the client holds it back: the server asks for the CA's
		{"expired", keyPair(t, ca, pki.IssueOptions{CommonName: pki.NodeCN("c1"), Usage: pki.UsageClient, TTL: time.Minute, Now: time.Now().Add(-time.Hour)}), "expired certificate"},
		{"a peer's", keyPair(t, ca, pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: []string{"h"}, Usage: pki.UsagePeer}), "not a host's client certificate"},
		{"M3's", keyPair(t, ca, pki.IssueOptions{CommonName: pki.M3CN("c1"), Usage: pki.UsageClient}), "not a host's client certificate"},
		{"a removed host's", keyPair(t, ca, pki.IssueOptions{CommonName: pki.NodeCN("removed"), Usage: pki.UsageClient}), "host removed from the cluster"},
		{"root's", keyPair(t, ca, pki.IssueOptions{CommonName: "root", Usage: pki.UsageClient}), "not a host's client certificate"},
	} {
		if _, err := join.Renew(ctx, srv.URL, ca.CertPEM(), tc.kp); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s certificate: %v, want a refusal: %s", tc.name, err, tc.want)
		}
	}
}
