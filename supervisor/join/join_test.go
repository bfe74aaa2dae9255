package join_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startEtcd starts a plain single-member etcd for the token store.
func startEtcd(t *testing.T) *store.Etcd { return etcdtest.Start(t, "test") }

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeMembers is an in-memory etcd membership.
type fakeMembers struct {
	mu      sync.Mutex
	members []join.Member
	next    uint64
	adds    int
	removed []uint64
	// hold, when set, holds the next Members call until it is closed;
	// entered (buffered) hears that call arrive.
	hold, entered chan struct{}
}

func (f *fakeMembers) Members(context.Context) ([]join.Member, error) {
	f.mu.Lock()
	hold := f.hold
	f.hold = nil
	f.mu.Unlock()
	if hold != nil {
		f.entered <- struct{}{}
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members), nil
}

func (f *fakeMembers) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	f.members = slices.DeleteFunc(f.members, func(m join.Member) bool { return m.ID == id })
	return nil
}

func (f *fakeMembers) AddLearner(_ context.Context, peerURL string) (uint64, []join.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.adds++
	f.members = append(f.members, join.Member{ID: f.next, PeerURLs: []string{peerURL}, IsLearner: true})
	return f.next, slices.Clone(f.members), nil
}

// start marks member id started as name and promotes it.
func (f *fakeMembers) start(id uint64, name, clientURL string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.members {
		if f.members[i].ID == id {
			f.members[i].Name, f.members[i].ClientURLs, f.members[i].IsLearner = name, []string{clientURL}, false
		}
	}
}

// cluster is a join server over real TLS with a real token store.
type cluster struct {
	ca      *pki.CA
	tokens  *join.Tokens
	members *fakeMembers
	clock   *clock
	srv     *httptest.Server
	calls   atomic.Int32 // requests that reached the handler

	mu         sync.Mutex
	tombstones map[string]bool // hosts removed with `m3sup remove-host`
	registered map[string]bool // the host registry
	readmitErr error
}

// fakeDNS resolves *.example to 127.0.0.1 (where a joiner that advertises
// no IP dials from) and evil.example to 8.8.8.8.
func fakeDNS(_ context.Context, host string) ([]string, error) {
	switch {
	case host == "evil.example":
		return []string{"8.8.8.8"}, nil
	case strings.HasSuffix(host, ".example"):
		return []string{"127.0.0.1"}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// nameTaken is the server's NameTaken: the registered hosts.
func (c *cluster) nameTaken(_ context.Context, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registered[name], nil
}

// readmit is the server's Readmit: it clears name's tombstone.
func (c *cluster) readmit(_ context.Context, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readmitErr != nil {
		return false, c.readmitErr
	}
	had := c.tombstones[name]
	delete(c.tombstones, name)
	return had, nil
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := startEtcd(t)
	c := &cluster{ca: ca, clock: &clock{now: time.Now()}, tombstones: map[string]bool{}, registered: map[string]bool{}}
	c.tokens = &join.Tokens{KV: e.Client(), CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:"), Now: c.clock.Now}
	c.members = &fakeMembers{next: 100, members: []join.Member{{ID: 1, Name: "node-1", PeerURLs: []string{"https://10.0.0.1:2380"}, ClientURLs: []string{"https://10.0.0.1:2379"}}}}
	h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, Readmit: c.readmit,
		LookupHost: fakeDNS, NameTaken: c.nameTaken})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(ca, []string{"127.0.0.1", "localhost"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	c.srv = serveTLS(t, h, cfg, &c.calls)
	return c
}

func serveTLS(t *testing.T, h http.Handler, cfg *tls.Config, calls *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.TLS = cfg
	// Refused handshakes are the point of several tests; keep them out of the log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// token is a voter token for ten joins.
func (c *cluster) token(t *testing.T, ttl time.Duration) join.Token {
	t.Helper()
	return c.tokenWith(t, join.TokenOptions{TTL: ttl, Uses: 10, Voter: true, Description: "test"})
}

func (c *cluster) tokenWith(t *testing.T, o join.TokenOptions) join.Token {
	t.Helper()
	tok, _, err := c.tokens.Create(testCtx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func voterReq(name, ip string) join.Request {
	return join.Request{
		NodeName: name, Advertise: []string{ip}, WantVoter: true,
		PeerURL: "https://" + ip + ":2380", ClientURL: "https://" + ip + ":2379",
	}
}

func verifyCert(t *testing.T, ca *pki.CA, certPEM string, usage x509.ExtKeyUsage, host string) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCert([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert())
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: host}); err != nil {
		t.Fatalf("certificate %s for %s: %v", c.Subject.CommonName, host, err)
	}
	return c
}

func TestJoinRoundTrip(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	tok := c.token(t, time.Hour)

	resp, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Role != join.RoleVoter || resp.MemberID != 101 {
		t.Fatalf("role %s, member %d", resp.Role, resp.MemberID)
	}
	if want := "node-1=https://10.0.0.1:2380,node-2=https://127.0.0.2:2380"; resp.InitialCluster != want {
		t.Errorf("InitialCluster = %q, want %q", resp.InitialCluster, want)
	}
	if !slices.Equal(resp.Endpoints, []string{"https://10.0.0.1:2379"}) {
		t.Errorf("Endpoints = %v", resp.Endpoints)
	}
	if fp, _ := pki.Fingerprint([]byte(resp.CACert)); fp != c.ca.Fingerprint() {
		t.Error("response CA differs")
	}
	peer := verifyCert(t, c.ca, resp.PeerCert, x509.ExtKeyUsageServerAuth, "127.0.0.2")
	verifyCert(t, c.ca, resp.PeerCert, x509.ExtKeyUsageClientAuth, "node-2")
	if peer.Subject.CommonName != pki.EtcdPeerCN {
		t.Errorf("peer CN = %q", peer.Subject.CommonName)
	}
	if _, err := pki.KeyPair([]byte(resp.PeerCert), []byte(resp.PeerKey)); err != nil {
		t.Error(err)
	}
	cli := verifyCert(t, c.ca, resp.ClientCert, x509.ExtKeyUsageClientAuth, "")
	if cli.Subject.CommonName != "m3sup-node:node-2" || slices.Contains(cli.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("client cert CN %q EKU %v", cli.Subject.CommonName, cli.ExtKeyUsage)
	}
	if _, err := pki.KeyPair([]byte(resp.ClientCert), []byte(resp.ClientKey)); err != nil {
		t.Error(err)
	}

	// The response was lost and node-2 asks again: the same learner, not a second one.
	again, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || again.MemberID != resp.MemberID || c.members.adds != 1 {
		t.Fatalf("retry: member %d, %d adds, %v", again.MemberID, c.members.adds, err)
	}
	c.members.start(resp.MemberID, "node-2", "https://127.0.0.2:2379")

	// A second host with node-2's name is refused.
	if _, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.9")); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("duplicate name: %v", err)
	}

	r3, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-3", "127.0.0.3"))
	if err != nil || r3.Role != join.RoleVoter {
		t.Fatalf("node-3: %v %v", r3.Role, err)
	}
	c.members.start(r3.MemberID, "node-3", "https://127.0.0.3:2379")

	// Three voters: the fourth host is a client only, and so is one that
	// asks for no seat.
	for _, req := range []join.Request{voterReq("node-4", "127.0.0.4"), {NodeName: "node-5", Advertise: []string{"node-5.example"}}} {
		r, err := join.Join(ctx, c.srv.URL, tok.Encode(), req)
		if err != nil {
			t.Fatal(err)
		}
		if r.Role != join.RoleClient || r.PeerCert != "" || r.MemberID != 0 || r.InitialCluster != "" || len(r.Endpoints) != 3 || r.ClientCert == "" {
			t.Errorf("%s: %+v", req.NodeName, r)
		}
	}
	if c.members.adds != 2 {
		t.Errorf("%d learners added, want 2", c.members.adds)
	}
}

func TestJoinRefused(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	good := c.token(t, time.Hour)
	req := voterReq("node-2", "127.0.0.2")

	revoked := c.token(t, time.Hour)
	if err := c.tokens.Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expiring := c.token(t, time.Minute)
	unknown := good
	unknown.ID = "zzzzzz"
	wrongSecret := good
	wrongSecret.Secret = strings.Repeat("a", 32)

	// Answered by the server with 401: the TLS pin holds, the token does not.
	t.Run("server refuses", func(t *testing.T) {
		c.clock.Add(2 * time.Minute) // expiring has expired
		for name, tok := range map[string]join.Token{"wrong secret": wrongSecret, "revoked": revoked, "expired": expiring, "unknown id": unknown} {
			before := c.calls.Load()
			_, err := join.Join(ctx, c.srv.URL, tok.Encode(), req)
			if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "invalid token") {
				t.Errorf("%s: %v, want a 401 refusal", name, err)
			}
			if c.calls.Load() != before+1 {
				t.Errorf("%s: the server saw %d requests", name, c.calls.Load()-before)
			}
		}
		if c.members.adds != 0 {
			t.Errorf("a refused join added %d learners", c.members.adds)
		}
	})

	// Refused by the client before any request byte leaves it.
	t.Run("client refuses", func(t *testing.T) {
		other, err := pki.NewCA("other", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		wrongPin := good
		wrongPin.CAHash = strings.TrimPrefix(other.Fingerprint(), "sha256:")

		// A machine in the middle with its own CA.
		mitmCfg, err := join.ServerTLS(other, []string{"127.0.0.1"}, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		var mitmCalls atomic.Int32
		mitm := serveTLS(t, http.NotFoundHandler(), mitmCfg, &mitmCalls)

		// One that presents the real (public) CA certificate in its chain,
		// above a leaf signed by its own CA.
		leaf, key, err := other.Issue(pki.IssueOptions{CommonName: "m3sup-join", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := pki.KeyPair(leaf, key)
		if err != nil {
			t.Fatal(err)
		}
		kp.Certificate = append(kp.Certificate, c.ca.Cert().Raw)
		var spoofCalls atomic.Int32
		spoof := serveTLS(t, http.NotFoundHandler(), &tls.Config{Certificates: []tls.Certificate{kp}}, &spoofCalls)

		// The real CA, but a certificate for another host name.
		wrongHostCfg, err := join.ServerTLS(c.ca, []string{"elsewhere.example"}, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		var wrongHostCalls atomic.Int32
		wrongHost := serveTLS(t, http.NotFoundHandler(), wrongHostCfg, &wrongHostCalls)

		var plainCalls atomic.Int32
		plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { plainCalls.Add(1) }))
		t.Cleanup(plain.Close)

		tests := []struct {
			name  string
			url   string
			tok   join.Token
			calls *atomic.Int32
			want  string
		}{
			{"wrong CA pin", c.srv.URL, wrongPin, &c.calls, "does not hold the CA the token pins"},
			{"MITM with another CA", mitm.URL, good, &mitmCalls, "does not hold the CA the token pins"},
			{"MITM showing the real CA", spoof.URL, good, &spoofCalls, "not issued by the pinned CA"},
			{"certificate for another host", wrongHost.URL, good, &wrongHostCalls, "not issued by the pinned CA"},
			{"plain HTTP", plain.URL, good, &plainCalls, "plain-HTTP join refused"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := tt.calls.Load()
				_, err := join.Join(ctx, tt.url, tt.tok.Encode(), req)
				if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Join = %v, want a refusal saying %q", err, tt.want)
				}
				if n := tt.calls.Load() - before; n != 0 {
					t.Errorf("the server saw %d requests", n)
				}
			})
		}
	})

	t.Run("malformed token", func(t *testing.T) {
		short := strings.Split(good.Encode(), "::")[1] // k3s's short form: no CA hash
		if _, err := join.Join(ctx, c.srv.URL, short, req); !errors.Is(err, join.ErrInvalidToken) {
			t.Errorf("short token: %v", err)
		}
	})

	t.Run("raw requests", func(t *testing.T) {
		hc := c.srv.Client() // trusts the server's certificate; no pinning
		for name, r := range map[string]func() *http.Request{
			"no token": func() *http.Request {
				r, _ := http.NewRequest(http.MethodPost, c.srv.URL+join.Path, strings.NewReader(`{}`))
				return r
			},
			"basic auth": func() *http.Request {
				r, _ := http.NewRequest(http.MethodPost, c.srv.URL+join.Path, strings.NewReader(`{}`))
				r.SetBasicAuth("node", good.Encode())
				return r
			},
		} {
			resp, err := hc.Do(r())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: %s", name, resp.Status)
			}
		}
		r, _ := http.NewRequest(http.MethodPost, c.srv.URL+join.Path, strings.NewReader(`{"nodeName":"Bad Name"}`))
		r.Header.Set("Authorization", "Bearer "+good.Encode())
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("invalid request: %s", resp.Status)
		}
	})
}

func TestRequestValidate(t *testing.T) {
	ok := voterReq("node-2", "127.0.0.2")
	tests := map[string]func(*join.Request){
		"empty name":          func(r *join.Request) { r.NodeName = "" },
		"upper-case name":     func(r *join.Request) { r.NodeName = "Node" },
		"no advertise":        func(r *join.Request) { r.Advertise = nil },
		"bad host":            func(r *join.Request) { r.Advertise = []string{"a b"} },
		"plain HTTP peer URL": func(r *join.Request) { r.PeerURL = "http://127.0.0.2:2380" },
		"no port":             func(r *join.Request) { r.ClientURL = "https://127.0.0.2" },
		"unadvertised host":   func(r *join.Request) { r.PeerURL = "https://10.9.9.9:2380" },
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range tests {
		r := ok
		mutate(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	client := join.Request{NodeName: "n", Advertise: []string{"n.example"}}
	if err := client.Validate(); err != nil {
		t.Errorf("client-only request: %v", err)
	}
}

func TestHandlerConfig(t *testing.T) {
	ca, _ := pki.NewCA("x", time.Now())
	if _, err := join.Handler(join.ServerConfig{}); err == nil {
		t.Error("empty config accepted")
	}
	if _, err := join.Handler(join.ServerConfig{CA: ca, Tokens: &join.Tokens{}, Members: &fakeMembers{}, MaxVoters: 4}); err == nil {
		t.Error("even MaxVoters accepted")
	}
}

// TestJoinReadmits: a join with a valid token under the name of a removed
// host clears its tombstone (and no other's); a join refused for its token
// clears nothing; a tombstone that cannot be cleared fails the join before
// any learner is added.
func TestJoinReadmits(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	c.tombstones["node-2"], c.tombstones["node-3"] = true, true
	bad := c.token(t, time.Hour)
	bad.Secret = strings.Repeat("a", 32)
	if _, err := join.Join(ctx, c.srv.URL, bad.Encode(), voterReq("node-2", "127.0.0.2")); !errors.Is(err, join.ErrRefused) {
		t.Fatalf("join with a bad token: %v", err)
	}
	if !c.tombstones["node-2"] {
		t.Fatal("a join refused for its token cleared the tombstone")
	}
	c.readmitErr = errors.New("etcd unavailable")
	if _, err := join.Join(ctx, c.srv.URL, c.token(t, time.Hour).Encode(), voterReq("node-2", "127.0.0.2")); err == nil || !strings.Contains(err.Error(), "readmit node-2") {
		t.Fatalf("join with an uncleared tombstone: %v, want refused", err)
	}
	if c.members.adds != 0 {
		t.Fatalf("a failed readmit added %d learners", c.members.adds)
	}
	c.readmitErr = nil
	resp, err := join.Join(ctx, c.srv.URL, c.token(t, time.Hour).Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || resp.Role != join.RoleVoter {
		t.Fatalf("join of removed node-2 again: %+v, %v", resp, err)
	}
	if c.tombstones["node-2"] || !c.tombstones["node-3"] {
		t.Fatalf("tombstones after node-2 joined again: %v, want only node-3's", c.tombstones)
	}
}
