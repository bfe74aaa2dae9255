package join_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestJoinSingleUseToken: a single-use voter token admits one host; the
// same token again (another host, or the same name) is refused with 401
// and adds nothing.
func TestJoinSingleUseToken(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	once := c.tokenWith(t, join.TokenOptions{TTL: time.Hour, Voter: true})
	r, err := join.Join(ctx, c.srv.URL, once.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || r.Role != join.RoleVoter {
		t.Fatalf("first use: %v, %v", r.Role, err)
	}
	c.members.start(r.MemberID, "node-2", "https://127.0.0.2:2379")
	for _, req := range []join.Request{voterReq("node-3", "127.0.0.3"), voterReq("node-2", "127.0.0.2")} {
		if _, err := join.Join(ctx, c.srv.URL, once.Encode(), req); !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "invalid token") {
			t.Errorf("reused single-use token for %s: %v, want a 401 refusal", req.NodeName, err)
		}
	}
	if c.members.adds != 1 {
		t.Errorf("%d learners added, want 1", c.members.adds)
	}
}

// TestJoinParallelSingleUse: hosts racing one single-use token through two
// join servers (two voters, one token store): exactly one gets in.
func TestJoinParallelSingleUse(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	// A second join server over the same store and membership (another voter).
	h2, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, LookupHost: fakeDNS})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls2 atomic.Int32
	srv2 := serveTLS(t, h2, cfg, &calls2)

	once := c.tokenWith(t, join.TokenOptions{TTL: time.Hour}) // client-only: no learner to serialise on
	const racers = 8
	var wg sync.WaitGroup
	var won, refused atomic.Int32
	start := make(chan struct{})
	for i := range racers {
		url := c.srv.URL
		if i%2 == 1 {
			url = srv2.URL
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ip := fmt.Sprintf("127.0.1.%d", i+1)
			_, err := join.Join(ctx, url, once.Encode(), join.Request{NodeName: fmt.Sprintf("racer-%d", i), Advertise: []string{ip}})
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, join.ErrRefused):
				refused.Add(1)
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || refused.Load() != racers-1 {
		t.Fatalf("%d joins raced one single-use token: %d got in, %d refused (want 1 and %d)", racers, won.Load(), refused.Load(), racers-1)
	}
}

// TestJoinPlainTokenMakesClientOnly: without --voter a token makes an etcd
// client-only host even while a voter seat is free, and never hands out
// the CA key or a peer certificate.
func TestJoinPlainTokenMakesClientOnly(t *testing.T) {
	c := newCluster(t)
	plain := c.tokenWith(t, join.TokenOptions{TTL: time.Hour})
	r, err := join.Join(testCtx(t), c.srv.URL, plain.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Role != join.RoleClient || r.CAKey != "" || r.PeerCert != "" || r.PeerKey != "" || r.MemberID != 0 || r.ClientCert == "" {
		t.Fatalf("plain token: role %s, CA key given %t, peer cert given %t", r.Role, r.CAKey != "", r.PeerCert != "")
	}
	if c.members.adds != 0 {
		t.Fatalf("a plain token added %d learners", c.members.adds)
	}
}

// TestJoinForeignSANRefused: a joiner gets certificate names only for the
// address it joins from: advertising another IP (8.8.8.8, another member's
// address) or a DNS name that does not resolve to it (www.google.com) is
// refused with 403, naming the field, and spends no use of the token.
func TestJoinForeignSANRefused(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	once := c.tokenWith(t, join.TokenOptions{TTL: time.Hour, Voter: true})
	for _, tt := range []struct {
		name string
		req  join.Request
		want string
	}{
		{"public IP", join.Request{NodeName: "node-2", Advertise: []string{"8.8.8.8"}}, "advertise 8.8.8.8: not the address this join comes from"},
		{"another member's IP", voterReq("node-2", "10.0.0.1"), "advertise 10.0.0.1: not the address this join comes from"},
		{"own IP and a public one", join.Request{NodeName: "node-2", Advertise: []string{"127.0.0.2", "8.8.8.8"}}, "advertise 8.8.8.8"},
		{"outside name", join.Request{NodeName: "node-2", Advertise: []string{"127.0.0.2", "www.google.com"}}, "advertise www.google.com: resolve"},
		{"name resolving elsewhere", join.Request{NodeName: "node-2", Advertise: []string{"evil.example"}}, "advertise evil.example: resolves to [8.8.8.8]"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			_, err := join.Join(ctx, c.srv.URL, once.Encode(), tt.req)
			if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Join = %v, want a refusal saying %q", err, tt.want)
			}
		})
	}
	if c.members.adds != 0 {
		t.Fatalf("refused joins added %d learners", c.members.adds)
	}
	// The token is unspent; its one use gives SANs for the joiner only,
	// and a dotted node name is no SAN unless advertised.
	r, err := join.Join(ctx, c.srv.URL, once.Encode(), voterReq("www.google.com", "127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := pki.ParseCert([]byte(r.PeerCert))
	if err != nil {
		t.Fatal(err)
	}
	if len(peer.IPAddresses) != 1 || !peer.IPAddresses[0].Equal(net.ParseIP("127.0.0.2")) || len(peer.DNSNames) != 0 {
		t.Fatalf("peer certificate SANs: IPs %v, DNS %v (want only 127.0.0.2)", peer.IPAddresses, peer.DNSNames)
	}
}

// TestJoinDuplicateNameRefused: a name an etcd member or a registered host
// (a client-only host has no member) already has is refused with 409,
// naming the field; the token is not spent.
func TestJoinDuplicateNameRefused(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	c.registered["client-1"] = true
	once := c.tokenWith(t, join.TokenOptions{TTL: time.Hour})
	for name, req := range map[string]join.Request{
		"etcd member":     voterReq("node-1", "127.0.0.2"),
		"registered host": {NodeName: "client-1", Advertise: []string{"127.0.0.2"}},
	} {
		_, err := join.Join(ctx, c.srv.URL, once.Encode(), req)
		if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), fmt.Sprintf("nodeName %q", req.NodeName)) {
			t.Errorf("%s: %v, want 409 naming nodeName", name, err)
		}
	}
	if _, err := join.Join(ctx, c.srv.URL, once.Encode(), join.Request{NodeName: "client-2", Advertise: []string{"127.0.0.2"}}); err != nil {
		t.Fatalf("the token after refused joins: %v", err)
	}
}

// rawJoin posts body to the join endpoint with tok from 127.0.0.1.
func rawJoin(t *testing.T, c *cluster, tok join.Token, body string) (int, string) {
	t.Helper()
	hc := c.srv.Client()
	r, _ := http.NewRequest(http.MethodPost, c.srv.URL+join.Path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+tok.Encode())
	resp, err := hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestJoinStrictDecoding: unknown fields, trailing data and oversized
// bodies are refused with 400 and a message naming the problem; nothing
// is spent or added.
func TestJoinStrictDecoding(t *testing.T) {
	c := newCluster(t)
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, LookupHost: fakeDNS,
		Limits: join.Limits{Burst: 100, Every: time.Second, FailAfter: 100, FailBackoff: time.Second, MaxBackoff: time.Second,
			LogEvery: time.Second, MaxSources: 10, Idle: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	c.srv.Config.Handler = h // these refusals would lock the source out with DefaultLimits
	once := c.tokenWith(t, join.TokenOptions{TTL: time.Hour})
	good := `{"nodeName":"n1","advertise":["127.0.0.1"]}`
	for _, tt := range []struct{ name, body, want string }{
		{"unknown field", `{"nodeName":"n1","advertise":["127.0.0.1"],"isAdmin":true}`, `unknown field "isAdmin"`},
		{"trailing garbage", good + `garbage`, "trailing data"},
		{"second object", good + good, "trailing data"},
		{"not an object", `[1,2]`, "decode join request"},
		{"too large", `{"nodeName":"` + strings.Repeat("a", 20<<10) + `"}`, "too large"},
		{"bad name", `{"nodeName":"Bad Name","advertise":["127.0.0.1"]}`, `nodeName "Bad Name"`},
		{"peer URL without voter", `{"nodeName":"n1","advertise":["127.0.0.1"],"peerURL":"https://127.0.0.1:2380"}`, "peerURL, clientURL: only with wantVoter"},
	} {
		code, msg := rawJoin(t, c, once, tt.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %d %q, want 400 saying %q", tt.name, code, msg, tt.want)
		}
	}
	if code, msg := rawJoin(t, c, once, good+"\n"); code != http.StatusOK {
		t.Fatalf("a good request after the refused ones: %d %s", code, msg)
	}
}

// TestJoinRateLimit: one source gets Burst attempts, then 429 with
// Retry-After; refusals in a row lock it out with a doubling backoff;
// refusal logs are sampled (first at once, then one per LogEvery with the
// count); another source is unaffected.
func TestJoinRateLimit(t *testing.T) {
	c := newCluster(t)
	core, logs := observer.New(zap.WarnLevel)
	limits := join.Limits{Burst: 3, Every: time.Minute, FailAfter: 2, FailBackoff: 10 * time.Second, MaxBackoff: time.Minute,
		LogEvery: 10 * time.Second, MaxSources: 16, Idle: time.Hour}
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, LookupHost: fakeDNS,
		Limits: limits, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	c.srv.Config.Handler = h // same TLS server, this handler
	bad := c.token(t, time.Hour)
	bad.Secret = strings.Repeat("x", 32)

	codes := func(n int, tok join.Token) []int {
		var out []int
		for range n {
			code, _ := rawJoin(t, c, tok, `{}`)
			out = append(out, code)
		}
		return out
	}
	// Two bad tokens: 401 twice, then locked out (429) although the
	// bucket still holds one attempt.
	if got := fmt.Sprint(codes(3, bad)); got != "[401 401 429]" {
		t.Fatalf("bad tokens: %s, want [401 401 429]", got)
	}
	r, _ := http.NewRequest(http.MethodPost, c.srv.URL+join.Path, strings.NewReader(`{}`))
	resp, err := c.srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("locked out: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	// After the lockout, one more refusal doubles it (20 s).
	c.clock.Add(11 * time.Second)
	if got := fmt.Sprint(codes(2, bad)); got != "[401 429]" {
		t.Fatalf("after the first lockout: %s", got)
	}
	c.clock.Add(11 * time.Second)
	if got := fmt.Sprint(codes(1, bad)); got != "[429]" {
		t.Fatalf("within the doubled lockout: %s", got)
	}
	// Logs: 7 refusals over 22 s make 3 lines: the first at once, then
	// one per 10 s with the count of those not logged.
	lines := logs.FilterField(zap.String("remote", "127.0.0.1")).All()
	var counts []any
	for _, l := range lines {
		counts = append(counts, l.ContextMap()["notLogged"])
	}
	if fmt.Sprint(counts) != "[<nil> 3 1]" {
		t.Fatalf("sampled refusal lines: unlogged counts %v, want [<nil> 3 1]; lines %v", counts, lines)
	}

	// Another source (a joiner dialing from 127.0.0.2) is not limited.
	good := c.tokenWith(t, join.TokenOptions{TTL: time.Hour})
	if _, err := join.Join(testCtx(t), c.srv.URL, good.Encode(), join.Request{NodeName: "node-2", Advertise: []string{"127.0.0.2"}}); err != nil {
		t.Fatalf("another source: %v", err)
	}
}

// TestJoinIdleConnectionClosed: the join endpoint's http.Server closes a
// keep-alive connection that sends no further request within its idle
// timeout (shortened here), and one that never finishes its headers
// within the header timeout.
func TestJoinIdleConnectionClosed(t *testing.T) {
	c := newCluster(t)
	if join.IdleTimeout != 30*time.Second || join.ReadHeaderTimeout != 10*time.Second || join.WriteTimeout <= join.DefaultJoinTimeout {
		t.Fatalf("documented timeouts changed: idle %s, header %s, write %s", join.IdleTimeout, join.ReadHeaderTimeout, join.WriteTimeout)
	}
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, LookupHost: fakeDNS})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := join.NewHTTPServer(h, tlsCfg)
	if srv.IdleTimeout != join.IdleTimeout || srv.ReadTimeout != join.ReadTimeout || srv.ReadHeaderTimeout != join.ReadHeaderTimeout || srv.WriteTimeout != join.WriteTimeout {
		t.Fatalf("NewHTTPServer timeouts: %+v", srv)
	}
	srv.IdleTimeout, srv.ReadHeaderTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv.ErrorLog = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(c.ca.Cert())
	dial := func() *tls.Conn {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedWithin waits for the server to close conn; a bounded wait, not a sleep.
	closedWithin := func(conn *tls.Conn, br *bufio.Reader, d time.Duration) time.Duration {
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(d))
		_, err := br.ReadByte()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %s", d)
		}
		return time.Since(start)
	}

	idle := dial()
	if _, err := io.WriteString(idle, "GET /v1/join HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Close {
		t.Fatalf("keep-alive request: %s, close %t", resp.Status, resp.Close)
	}
	took := closedWithin(idle, br, 5*time.Second)
	t.Logf("idle keep-alive connection closed after %s (idle timeout %s)", took.Round(time.Millisecond), srv.IdleTimeout)

	slow := dial()
	if _, err := io.WriteString(slow, "POST /v1/join HTTP/1.1\r\nHost: x\r\n"); err != nil { // headers never end
		t.Fatal(err)
	}
	took = closedWithin(slow, bufio.NewReader(slow), 5*time.Second)
	t.Logf("connection with unfinished headers closed after %s", took.Round(time.Millisecond))
}

// TestJoinLockedOutBeforeHandshake: on the daemon's http.Server
// (NewHTTPServer), a source locked out for refusals has its next
// connections closed before the TLS handshake; once the lockout is over
// it is served again.
func TestJoinLockedOutBeforeHandshake(t *testing.T) {
	c := newCluster(t)
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, LookupHost: fakeDNS,
		Limits: join.Limits{Burst: 10, Every: time.Second, FailAfter: 2, FailBackoff: time.Minute, MaxBackoff: time.Minute,
			LogEvery: time.Minute, MaxSources: 10, Idle: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := join.NewHTTPServer(h, tlsCfg)
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	url := "https://" + ln.Addr().String()
	bad := c.token(t, time.Hour)
	bad.Secret = strings.Repeat("x", 32)
	req := join.Request{NodeName: "n", Advertise: []string{"127.0.0.1"}}
	for range 2 {
		if _, err := join.Join(testCtx(t), url, bad.Encode(), req); !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "invalid token") {
			t.Fatalf("bad token: %v", err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.ca.Cert())
	if conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); err == nil {
		conn.Close()
		t.Fatal("a locked-out source completed a TLS handshake")
	}
	c.clock.Add(2 * time.Minute)
	if _, err := join.Join(testCtx(t), url, c.token(t, time.Hour).Encode(), req); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
}

// slowMembers adds learners slowly (an etcd that is busy), honouring ctx.
type slowMembers struct {
	*fakeMembers
	delay time.Duration
}

func (m slowMembers) AddLearner(ctx context.Context, peerURL string) (uint64, []join.Member, error) {
	t := time.NewTimer(m.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-t.C:
	}
	return m.fakeMembers.AddLearner(ctx, peerURL)
}

// TestJoinOutlivesReadTimeout: a join whose etcd work takes longer than
// the server's ReadTimeout (shortened here) still completes: the timeout
// bounds reading the request, not the join (net/http clears the read
// deadline once the body is read; this guards that).
func TestJoinOutlivesReadTimeout(t *testing.T) {
	c := newCluster(t)
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: slowMembers{c.members, 800 * time.Millisecond}, LookupHost: fakeDNS})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := join.NewHTTPServer(h, tlsCfg)
	srv.ReadTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	r, err := join.Join(testCtx(t), "https://"+ln.Addr().String(), c.token(t, time.Hour).Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || r.Role != join.RoleVoter {
		t.Fatalf("slow join: %v, %v", r.Role, err)
	}
}

// etcdMembers is join.Membership over a real etcd (the daemon's adapter
// does the same with the same store functions).
type etcdMembers struct{ e *store.Etcd }

func (m etcdMembers) Members(ctx context.Context) ([]join.Member, error) {
	ms, err := store.Members(ctx, m.e.Client())
	return conv(ms), err
}

func (m etcdMembers) AddLearner(ctx context.Context, peerURL string) (uint64, []join.Member, error) {
	id, ms, err := store.AddLearner(ctx, m.e.Client(), peerURL)
	return id, conv(ms), err
}

func (m etcdMembers) RemoveMember(ctx context.Context, id uint64) error {
	return store.RemoveMember(ctx, m.e.Client(), id)
}

func conv(ms []store.Member) []join.Member {
	out := make([]join.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, join.Member(m))
	}
	return out
}

// TestJoinRemovesUnstartedLearner, against a real etcd: a voter join whose
// peer address never answers leaves a learner; a second voter join within
// the grace period is refused (etcd admits one learner at a time) and
// gives its token use back; after the grace period the next voter join
// removes the dead learner and gets its seat.
func TestJoinRemovesUnstartedLearner(t *testing.T) {
	ctx := testCtx(t)
	e := etcdtest.Start(t, "node-1")
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Now()}
	tokens := &join.Tokens{KV: e.Client(), CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:"), Now: clk.Now}
	core, logs := observer.New(zap.WarnLevel)
	h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: tokens, Members: etcdMembers{e}, Now: clk.Now,
		LearnerGrace: time.Minute, Logger: zap.New(core), JoinTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := serveTLS(t, h, cfg, &calls)
	tok, _, err := tokens.Create(ctx, join.TokenOptions{TTL: time.Hour, Uses: 2, Voter: true})
	if err != nil {
		t.Fatal(err)
	}

	dead, err := join.Join(ctx, srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2")) // port 2380 on 127.0.0.2: nobody answers
	if err != nil || dead.Role != join.RoleVoter {
		t.Fatalf("first voter join: %v, %v", dead.Role, err)
	}
	learners := func() []join.Member {
		ms, err := etcdMembers{e}.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []join.Member
		for _, m := range ms {
			if m.IsLearner {
				out = append(out, m)
			}
		}
		return out
	}
	if l := learners(); len(l) != 1 || l[0].ID != dead.MemberID || l[0].Name != "" {
		t.Fatalf("learners after the dead join: %+v", l)
	}

	clk.Add(30 * time.Second)
	if _, err := join.Join(ctx, srv.URL, tok.Encode(), voterReq("node-3", "127.0.0.3")); err == nil {
		t.Fatal("a second voter join within the grace period was admitted beside an unstarted learner")
	}
	list, err := tokens.List(ctx)
	if err != nil || len(list) != 1 || list[0].Used != 1 {
		t.Fatalf("token after the refused join: %+v, %v (want its use given back)", list, err)
	}

	clk.Add(31 * time.Second)
	r3, err := join.Join(ctx, srv.URL, tok.Encode(), voterReq("node-3", "127.0.0.3"))
	if err != nil || r3.Role != join.RoleVoter {
		t.Fatalf("voter join after the grace period: %v, %v", r3.Role, err)
	}
	if l := learners(); len(l) != 1 || l[0].ID != r3.MemberID || !strings.Contains(l[0].PeerURLs[0], "127.0.0.3") {
		t.Fatalf("learners: %+v, want only node-3's", l)
	}
	if logs.FilterMessage("removed an etcd learner that never started").Len() != 1 {
		t.Fatalf("no log line for the removed learner: %v", logs.All())
	}
}
