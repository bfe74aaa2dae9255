package join_test

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestJoinThroughSecondVoter: a voter gets the CA key with its join (a
// client-only host does not) and, with it, serves joins exactly as the
// first host does: the same CA, the same token store, the same refusals.
func TestJoinThroughSecondVoter(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	tok1 := c.token(t, time.Hour)

	r2, err := join.Join(ctx, c.srv.URL, tok1.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Role != join.RoleVoter || r2.CAKey == "" {
		t.Fatalf("voter answer: role %s, CA key given %t", r2.Role, r2.CAKey != "")
	}
	ca2, err := pki.ParseCA([]byte(r2.CACert), []byte(r2.CAKey))
	if err != nil || ca2.Fingerprint() != c.ca.Fingerprint() {
		t.Fatalf("the voter's CA: %v (fingerprint %s, want %s)", err, ca2.Fingerprint(), c.ca.Fingerprint())
	}
	c.members.start(r2.MemberID, "node-2", "https://127.0.0.2:2379")

	// node-2's join endpoint: its CA, the cluster's etcd token store.
	tokens2 := &join.Tokens{KV: c.tokens.KV, CAHash: strings.TrimPrefix(ca2.Fingerprint(), "sha256:"), Now: c.clock.Now}
	h, err := join.Handler(join.ServerConfig{CA: ca2, Tokens: tokens2, Members: c.members, Now: c.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(ca2, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls2 atomic.Int32
	srv2 := serveTLS(t, h, cfg, &calls2)

	// A token made on node-2 pins the same CA and is valid on both.
	tok2, _, err := tokens2.Create(ctx, join.TokenOptions{TTL: time.Hour, Voter: true, Description: "made on node-2"})
	if err != nil {
		t.Fatal(err)
	}
	if tok2.CAHash != tok1.CAHash {
		t.Fatalf("node-2's token pins %s, the first host's %s", tok2.CAHash, tok1.CAHash)
	}
	if _, err := c.tokens.Check(ctx, tok2); err != nil {
		t.Fatalf("the first host refuses node-2's token: %v", err)
	}

	r3, err := join.Join(ctx, srv2.URL, tok2.Encode(), voterReq("node-3", "127.0.0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if r3.Role != join.RoleVoter || r3.CAKey == "" || r3.InitialCluster != "node-1=https://10.0.0.1:2380,node-2=https://127.0.0.2:2380,node-3=https://127.0.0.3:2380" {
		t.Fatalf("node-3 through node-2: %+v", r3)
	}
	// Issued by the one cluster CA: the first host's etcd trusts them.
	verifyCert(t, c.ca, r3.PeerCert, x509.ExtKeyUsageServerAuth, "127.0.0.3")
	verifyCert(t, c.ca, r3.ClientCert, x509.ExtKeyUsageClientAuth, "")
	c.members.start(r3.MemberID, "node-3", "https://127.0.0.3:2379")

	// Beyond three voters: a client-only host, without the CA key.
	r4, err := join.Join(ctx, srv2.URL, tok1.Encode(), voterReq("node-4", "127.0.0.4"))
	if err != nil {
		t.Fatal(err)
	}
	if r4.Role != join.RoleClient || r4.CAKey != "" || r4.PeerKey != "" {
		t.Fatalf("client-only host through node-2: role %s, CA key given %t", r4.Role, r4.CAKey != "")
	}

	// A token revoked on the first host is refused on node-2.
	if err := c.tokens.Revoke(ctx, tok2.ID); err != nil {
		t.Fatal(err)
	}
	before := calls2.Load()
	if _, err := join.Join(ctx, srv2.URL, tok2.Encode(), voterReq("node-5", "127.0.0.5")); !errors.Is(err, join.ErrRefused) {
		t.Fatalf("revoked token on node-2: %v", err)
	}
	if calls2.Load() != before+1 || c.members.adds != 2 {
		t.Fatalf("revoked token: %d requests, %d learners added", calls2.Load()-before, c.members.adds)
	}

	// A pin of another CA is refused before any byte reaches node-2.
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wrongPin := tok1
	wrongPin.CAHash = strings.TrimPrefix(other.Fingerprint(), "sha256:")
	before = calls2.Load()
	if _, err := join.Join(ctx, srv2.URL, wrongPin.Encode(), voterReq("node-5", "127.0.0.5")); !errors.Is(err, join.ErrRefused) || calls2.Load() != before {
		t.Fatalf("wrong pin on node-2: %v, %d requests", err, calls2.Load()-before)
	}
	if _, err := join.Join(ctx, strings.Replace(srv2.URL, "https://", "http://", 1), tok1.Encode(), voterReq("node-5", "127.0.0.5")); !errors.Is(err, join.ErrRefused) || calls2.Load() != before {
		t.Fatalf("plain HTTP to node-2: %v, %d requests", err, calls2.Load()-before)
	}
}

// TestJoinRefusesForeignCAKey: an answer whose CA key is not the pinned
// CA's is refused (a voter never stores a key it cannot use).
func TestJoinRefusesForeignCAKey(t *testing.T) {
	ca, err := pki.NewCA("cluster", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(join.Response{CACert: string(ca.CertPEM()), Role: join.RoleVoter, CAKey: string(otherKey)})
	}), cfg, &calls)
	tok := join.Token{CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:"), ID: "abcdef", Secret: strings.Repeat("s", 32)}
	_, err = join.Join(testCtx(t), srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2"))
	if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "CA key") {
		t.Fatalf("foreign CA key: %v, want a refusal", err)
	}
}
