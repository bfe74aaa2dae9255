package join

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// Path is where the join endpoint listens.
const Path = "/v1/join"

const (
	maxRequestBytes  = 16 << 10
	maxResponseBytes = 1 << 20
	// DefaultMaxVoters is how many etcd voters a cluster grows to when
	// ServerConfig.MaxVoters is zero.
	DefaultMaxVoters = 3
	// DefaultLearnerGrace is how long an added learner may stay unstarted
	// (etcd shows no name for it) before the next voter join removes it: a
	// joiner starts its member seconds after its answer, so one still
	// unstarted after this never will (its peer address never answered,
	// its answer was lost for good).
	DefaultLearnerGrace = 2 * time.Minute
	// DefaultJoinTimeout bounds one join's work (etcd calls included).
	DefaultJoinTimeout = 45 * time.Second
)

// The join endpoint's HTTP timeouts (NewHTTPServer). A join request is
// small (at most 16 KiB) and its answer is ready within DefaultJoinTimeout.
const (
	ReadHeaderTimeout = 10 * time.Second                                  // TLS handshake and headers
	ReadTimeout       = 20 * time.Second                                  // the whole request
	WriteTimeout      = ReadTimeout + DefaultJoinTimeout + 10*time.Second // counted from the request's start
	IdleTimeout       = 30 * time.Second                                  // a keep-alive connection with no request
	maxHeaderBytes    = 16 << 10
)

// Role is how a joined host takes part in etcd.
type Role string

const (
	// RoleVoter: the host runs an etcd member, added as a learner; it starts
	// it with State "existing" and InitialCluster, then promotes it once it
	// has caught up (store.PromoteWhenReady).
	RoleVoter Role = "voter"
	// RoleClient: the host runs no member and uses Endpoints as a client.
	RoleClient Role = "client"
)

// Response is what the join endpoint returns. PEM blocks are strings.
type Response struct {
	CACert string `json:"caCert"`
	Role   Role   `json:"role"`
	// For RoleVoter: the learner's member ID, the initial cluster to start
	// with, and the member certificate (pki.UsagePeer, CN pki.EtcdPeerCN).
	MemberID       uint64 `json:"memberID,omitempty,string"`
	InitialCluster string `json:"initialCluster,omitempty"`
	PeerCert       string `json:"peerCert,omitempty"`
	PeerKey        string `json:"peerKey,omitempty"`
	// CAKey is the cluster CA's private key, given to voters only (and so
	// only to holders of a voter token): with it every voter can issue
	// tokens and serve joins (cluster.joinListen), so no host is the only
	// one that can admit new hosts. Client-only hosts never get it.
	CAKey string `json:"caKey,omitempty"`
	// Client certificate for etcd's client API (pki.UsageClient).
	ClientCert string `json:"clientCert"`
	ClientKey  string `json:"clientKey"`
	// Endpoints are the voters' etcd client URLs.
	Endpoints []string `json:"endpoints"`
}

// Member is one etcd member as the join server sees it; the same shape as
// store.Member, so the caller converts with join.Member(m).
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// Membership is the etcd cluster the join server adds members to. The
// daemon implements it with store.Members, store.AddLearner and
// store.RemoveMember.
type Membership interface {
	Members(ctx context.Context) ([]Member, error)
	AddLearner(ctx context.Context, peerURL string) (id uint64, members []Member, err error)
	// RemoveMember removes a learner that never started.
	RemoveMember(ctx context.Context, id uint64) error
}

// TokenChecker authenticates join tokens and counts their uses; *Tokens is
// one.
type TokenChecker interface {
	// Check authenticates tok without using it.
	Check(ctx context.Context, tok Token) (TokenInfo, error)
	// Use authenticates tok and takes one of its joins for host,
	// atomically.
	Use(ctx context.Context, tok Token, host string) (TokenInfo, error)
	// Release gives back the join Use took for host.
	Release(ctx context.Context, id, host string) error
}

// ServerConfig configures the join endpoint.
type ServerConfig struct {
	CA        *pki.CA
	Tokens    TokenChecker
	Members   Membership
	MaxVoters int              // etcd voters to grow to; zero means DefaultMaxVoters
	CertTTL   time.Duration    // issued certificates' validity; zero means pki.DefaultTTL
	Now       func() time.Time // nil means time.Now
	Logger    *zap.Logger      // nil means no logs
	// Readmit, when set, clears what the cluster remembers of an earlier
	// host removed under the joining host's name (its tombstone), before
	// anything is added for the join: a join under that name with a valid
	// token is the operator's consent to let it in again. It reports
	// whether there was anything to clear.
	Readmit func(ctx context.Context, name string) (bool, error)
	// NameTaken, when set, reports whether a host registered under name
	// (client-only hosts have no etcd member, only their registration): a
	// join under a taken name is refused.
	NameTaken func(ctx context.Context, name string) (bool, error)
	// LookupHost resolves advertised DNS names; nil means the system
	// resolver.
	LookupHost LookupHost
	// LearnerGrace: zero means DefaultLearnerGrace.
	LearnerGrace time.Duration
	// JoinTimeout: zero means DefaultJoinTimeout.
	JoinTimeout time.Duration
	// Limits: zero means DefaultLimits.
	Limits Limits
	// Authorize, when set, gives the joining host's etcd identity (its
	// client certificate's CN) the permissions of role before anything is
	// issued: etcd's auth takes the CN as the user (store.EnsureAuth).
	Authorize func(ctx context.Context, name string, role Role) error
	// Renewable, when set, refuses (with an error saying why) the
	// renewal of host name's client certificate (RenewPath): a host
	// removed from the cluster, or unknown to it, renews nothing.
	Renewable func(ctx context.Context, name string) error
}

// Validate checks the config and fills its defaults.
func (c *ServerConfig) Validate() error {
	if c.CA == nil || c.Tokens == nil || c.Members == nil {
		return errors.New("join server needs a CA, a token checker and the membership")
	}
	if c.MaxVoters == 0 {
		c.MaxVoters = DefaultMaxVoters
	}
	if c.MaxVoters < 1 || c.MaxVoters%2 == 0 {
		return fmt.Errorf("join server: MaxVoters %d: want an odd number (3 or 5)", c.MaxVoters)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.LookupHost == nil {
		c.LookupHost = net.DefaultResolver.LookupHost
	}
	if c.LearnerGrace == 0 {
		c.LearnerGrace = DefaultLearnerGrace
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	if c.LearnerGrace < 0 || c.JoinTimeout < 0 {
		return errors.New("join server: negative LearnerGrace or JoinTimeout")
	}
	return nil
}

// ServerTLS issues a server certificate for the join endpoint under hosts
// (IPs or DNS names) and returns a config presenting it with the CA in the
// chain, so a joiner can pin the CA, valid for ttl (zero: pki.DefaultTTL).
// Joiners have no client certificate; a host renewing its own (RenewPath)
// presents one, which must be valid and the CA's.
func ServerTLS(ca *pki.CA, hosts []string, now time.Time, ttl time.Duration) (*tls.Config, error) {
	dns, ips := splitHosts(hosts)
	certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{CommonName: "m3sup-join", DNSNames: dns, IPs: ips, Usage: pki.UsageServer, Now: now, TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("join server TLS: %w", err)
	}
	cfg, err := pki.ServerTLS(certPEM, keyPEM, ca.CertPEM())
	if err != nil {
		return nil, fmt.Errorf("join server TLS: %w", err)
	}
	// Joiners have no certificate; a host renewing its own (RenewPath)
	// presents it, and the handshake verifies it against the CA.
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	return cfg, nil
}

// NewHTTPServer returns the http.Server for the join endpoint: h over
// tlsCfg with the timeouts above, so a peer can neither hold a connection
// open (idle keep-alive, slow headers or body) nor make it wait forever.
//
// With h from Handler, a connection from a source that is locked out
// (Limits) is closed before its TLS handshake costs anything.
func NewHTTPServer(h http.Handler, tlsCfg *tls.Config) *http.Server {
	srv := &http.Server{
		Handler: h, TLSConfig: tlsCfg,
		ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout,
		WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
	}
	if s, ok := h.(*server); ok {
		srv.ConnState = s.connState
	}
	return srv
}

// connState closes a new connection from a locked-out source.
func (s *server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateNew {
		return
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return
	}
	s.lmu.Lock()
	locked := s.limits.locked(ap.Addr(), s.Now())
	s.lmu.Unlock()
	if locked {
		_ = c.Close()
	}
}

type server struct {
	ServerConfig
	// turn admits one join at a time (a one-slot semaphore): joins through
	// this endpoint queue here, each for as long as its JoinTimeout allows,
	// so they never race for etcd's one learner seat or a token's last
	// use. The queue does not wait for an admitted learner's promotion:
	// that takes the joiner seconds to minutes, would hold every client-only
	// join behind it, and joins through other voters would race it anyway;
	// a voter join meanwhile hears "another host is joining" (503) and the
	// Joiner retries.
	turn chan struct{}
	// unstarted is when this server first saw each learner without a name
	// (guarded by turn).
	unstarted map[uint64]time.Time

	lmu     sync.Mutex // guards limits
	limits  *limiter
	sampled *zap.Logger
}

// Handler returns the join endpoint: POST Path with a Request body and
// "Authorization: Bearer <token>". The token is checked before the body is
// read. Serve it over TLS only (ServerTLS, NewHTTPServer).
func Handler(c ServerConfig) (http.Handler, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &server{ServerConfig: c, turn: make(chan struct{}, 1), unstarted: map[uint64]time.Time{}, limits: newLimiter(c.Limits)}, nil
}

// httpError is a refusal with its status code.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func fail(code int, format string, args ...any) error {
	return &httpError{code: code, err: fmt.Errorf(format, args...)}
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := remoteAddr(r)
	s.lmu.Lock()
	ok, wait := s.limits.allow(src, s.Now())
	s.lmu.Unlock()
	if !ok {
		s.logRefusal(src, "rate limited", zap.Duration("retryAfter", wait))
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		http.Error(w, "too many join attempts from "+src.String()+"; retry later", http.StatusTooManyRequests)
		return
	}
	if r.URL.Path == RenewPath {
		s.renew(w, r)
		return
	}
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.TLS == nil {
		http.Error(w, "join requires TLS", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.JoinTimeout)
	defer cancel()

	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok, err := ParseToken(bearer)
	if !ok || err != nil {
		s.refuseToken(w, src, "malformed or missing token")
		return
	}
	if _, err := s.Tokens.Check(ctx, tok); errors.Is(err, ErrRefused) {
		s.refuseToken(w, src, err.Error())
		return
	} else if err != nil {
		s.Logger.Warn("join: check token", zap.Error(err))
		http.Error(w, "cannot check the token now; retry", http.StatusServiceUnavailable)
		return
	}

	req, err := DecodeRequest(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		s.refuse(w, src, tok.ID, req.NodeName, &httpError{code: http.StatusBadRequest, err: err})
		return
	}
	if err := checkAdvertise(ctx, s.LookupHost, req.Advertise, src); err != nil {
		s.refuse(w, src, tok.ID, req.NodeName, &httpError{code: http.StatusForbidden, err: err})
		return
	}
	resp, info, err := s.join(ctx, tok, req)
	if err != nil {
		s.refuse(w, src, tok.ID, req.NodeName, err)
		return
	}
	s.lmu.Lock()
	s.limits.succeed(src, s.Now())
	s.lmu.Unlock()
	s.Logger.Info("host joined", zap.String("node", req.NodeName), zap.String("token", tok.ID), zap.String("role", string(resp.Role)),
		zap.Uint64("member", resp.MemberID), zap.String("remote", src.String()), zap.String("uses", usesLeft(info)))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func usesLeft(i TokenInfo) string {
	if i.Reusable {
		return "reusable"
	}
	return fmt.Sprintf("%d of %d", i.Used, i.Uses)
}

// remoteAddr is the request's source address (the zero Addr if unknown,
// which the limiter tracks as one source).
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// refuseToken answers 401 without saying which check failed; the log says.
func (s *server) refuseToken(w http.ResponseWriter, src netip.Addr, why string) {
	s.countFailure(src)
	s.logRefusal(src, "bad token", zap.String("reason", why))
	w.Header().Set("WWW-Authenticate", `Bearer realm="m3sup-join"`)
	http.Error(w, "join refused: invalid token", http.StatusUnauthorized)
}

// refuse answers a join that a valid token holder may not make (or that
// failed) with err's message; a client error counts as a failure.
func (s *server) refuse(w http.ResponseWriter, src netip.Addr, tokenID, node string, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	if errors.Is(err, ErrRefused) {
		s.refuseToken(w, src, err.Error())
		return
	}
	if code < 500 {
		s.countFailure(src)
	}
	s.logRefusal(src, "join refused", zap.String("node", node), zap.String("token", tokenID), zap.Int("status", code), zap.Error(err))
	http.Error(w, err.Error(), code)
}

func (s *server) countFailure(src netip.Addr) {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	s.limits.fail(src, s.Now())
}

// logRefusal logs a refusal from src, sampled: the first at once, then at
// most one per Limits.LogEvery with the count of those skipped.
func (s *server) logRefusal(src netip.Addr, msg string, fields ...zap.Field) {
	s.lmu.Lock()
	ok, skipped := s.limits.sampleLog(src, s.Now())
	s.lmu.Unlock()
	if !ok {
		return
	}
	fields = append(fields, zap.String("remote", src.String()))
	if skipped > 0 {
		fields = append(fields, zap.Int("notLogged", skipped))
	}
	s.Logger.Warn(msg, fields...)
}

// join admits the host in req with tok: it checks the name, cleans up
// learners that never started, takes one of tok's joins, and only then
// changes anything (tombstone, learner). A failure after the token's use
// gives it back.
func (s *server) join(ctx context.Context, tok Token, req Request) (Response, TokenInfo, error) {
	select {
	case s.turn <- struct{}{}:
		defer func() { <-s.turn }()
	case <-ctx.Done():
		return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable, "another host is joining through this endpoint and this join's time ran out waiting for its turn (%w); retry", ctx.Err())
	}
	members, err := s.Members.Members(ctx)
	if err != nil {
		return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable, "list etcd members: %w", err)
	}
	for _, m := range members {
		if m.Name == req.NodeName {
			return Response{}, TokenInfo{}, fail(http.StatusConflict, "nodeName %q: an etcd member has that name; remove it first (m3sup leave or remove-host)", req.NodeName)
		}
	}
	if s.NameTaken != nil {
		taken, err := s.NameTaken(ctx, req.NodeName)
		if err != nil {
			return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable, "check nodeName %q in the host registry: %w", req.NodeName, err)
		}
		if taken {
			return Response{}, TokenInfo{}, fail(http.StatusConflict, "nodeName %q: a registered host has that name; pick another or remove it first (m3sup remove-host)", req.NodeName)
		}
	}
	// Read-only: whether the token could make a voter. Use re-checks.
	info, err := s.Tokens.Check(ctx, tok)
	if errors.Is(err, ErrRefused) {
		return Response{}, TokenInfo{}, err
	} else if err != nil {
		return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable, "check join token: %w", err)
	}
	voter := req.WantVoter && info.Voter
	var pending *Member // an unstarted learner for this peer URL: an earlier try's response was lost
	if voter {
		if members, err = s.dropUnstarted(ctx, members, req.PeerURL); err != nil {
			return Response{}, TokenInfo{}, err
		}
		for i, m := range members {
			if m.Name == "" && slices.Contains(m.PeerURLs, req.PeerURL) {
				pending = &members[i]
			}
		}
	}
	role := decideRole(members, voter, s.MaxVoters)
	if pending != nil {
		role = RoleVoter
	} else if role == RoleVoter {
		// etcd admits one learner at a time (--max-learners 1): while
		// another host's learner waits to start or be promoted, this
		// voter join can only fail; say so before anything is used.
		if l := learner(members); l != nil {
			return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable,
				"another host is joining (etcd learner %x %s is not promoted yet; etcd admits one at a time); retry in a few seconds", l.ID, learnerName(*l))
		}
	}

	// A repeated join whose earlier answer was lost (its learner waits
	// unstarted, and the token counted that join for this host) does not
	// use the token again.
	again := pending != nil && slices.Contains(info.UsedBy, req.NodeName)
	if !again {
		if info, err = s.Tokens.Use(ctx, tok, req.NodeName); err != nil {
			if errors.Is(err, ErrRefused) {
				return Response{}, TokenInfo{}, err
			}
			return Response{}, TokenInfo{}, fail(http.StatusServiceUnavailable, "use join token: %w", err)
		}
	}
	resp, err := s.admit(ctx, req, role, pending, members)
	if err != nil {
		if !again {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if rerr := s.Tokens.Release(rctx, tok.ID, req.NodeName); rerr != nil {
				s.Logger.Warn("join failed and its token use could not be given back", zap.String("token", tok.ID), zap.Error(rerr))
			}
		}
		return Response{}, TokenInfo{}, err
	}
	return resp, info, nil
}

// learner is the first learner among members, or nil.
func learner(members []Member) *Member {
	for i := range members {
		if members[i].IsLearner {
			return &members[i]
		}
	}
	return nil
}

func learnerName(m Member) string {
	if m.Name == "" {
		return "(not started)"
	}
	return "(" + m.Name + ")"
}

// admit does a checked join's effects: readmit, certificates, learner.
func (s *server) admit(ctx context.Context, req Request, role Role, pending *Member, members []Member) (Response, error) {
	if s.Readmit != nil {
		had, err := s.Readmit(ctx, req.NodeName)
		if err != nil {
			return Response{}, fail(http.StatusServiceUnavailable, "readmit %s: %w", req.NodeName, err)
		}
		if had {
			s.Logger.Info("host joins again under the name of a removed host: its tombstone is cleared", zap.String("node", req.NodeName))
		}
	}
	if s.Authorize != nil {
		if err := s.Authorize(ctx, req.NodeName, role); err != nil {
			return Response{}, fail(http.StatusServiceUnavailable, "authorize %s in etcd: %w", req.NodeName, err)
		}
	}
	now := s.Now()
	resp := Response{CACert: string(s.CA.CertPEM()), Role: role}
	cert, key, err := s.CA.Issue(pki.IssueOptions{CommonName: pki.NodeCN(req.NodeName), Usage: pki.UsageClient, TTL: s.CertTTL, Now: now})
	if err != nil {
		return Response{}, fail(http.StatusInternalServerError, "issue client certificate: %w", err)
	}
	resp.ClientCert, resp.ClientKey = string(cert), string(key)

	if role == RoleVoter {
		// Issue before adding the member, so a failure leaves no learner behind.
		dns, ips := certHosts(req)
		cert, key, err := s.CA.Issue(pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: pki.UsagePeer, TTL: s.CertTTL, Now: now})
		if err != nil {
			return Response{}, fail(http.StatusInternalServerError, "issue peer certificate: %w", err)
		}
		resp.PeerCert, resp.PeerKey = string(cert), string(key)
		if resp.CAKey, err = s.caKey(); err != nil {
			return Response{}, fail(http.StatusInternalServerError, "%w", err)
		}
		if pending != nil {
			resp.MemberID = pending.ID
		} else {
			id, ms, err := s.Members.AddLearner(ctx, req.PeerURL)
			if err != nil {
				return Response{}, fail(http.StatusServiceUnavailable, "add etcd learner (another host is joining, perhaps through another voter; retry): %w", err)
			}
			s.unstarted[id] = s.Now()
			resp.MemberID, members = id, ms
		}
		if resp.InitialCluster, err = initialCluster(members, resp.MemberID, req.NodeName); err != nil {
			// Another voter admitted a host at the same moment; its
			// member starts within seconds.
			return Response{}, fail(http.StatusServiceUnavailable, "another host is joining: %w; retry", err)
		}
	}
	for _, m := range members {
		if !m.IsLearner {
			resp.Endpoints = append(resp.Endpoints, m.ClientURLs...)
		}
	}
	return resp, nil
}

// dropUnstarted removes learners that have shown no name (never started)
// for longer than LearnerGrace since this server first saw them, except
// the one for keepPeerURL (the joiner asking again), and returns the
// members left. Without it, a voter join whose peer address never answers
// would leave a learner that blocks every later voter join (etcd admits
// one learner at a time).
func (s *server) dropUnstarted(ctx context.Context, members []Member, keepPeerURL string) ([]Member, error) {
	now := s.Now()
	seen := map[uint64]bool{}
	out := members[:0:0]
	for _, m := range members {
		if m.Name != "" || !m.IsLearner || slices.Contains(m.PeerURLs, keepPeerURL) {
			out = append(out, m)
			continue
		}
		seen[m.ID] = true
		first, ok := s.unstarted[m.ID]
		if !ok {
			s.unstarted[m.ID] = now
			first = now
		}
		if now.Sub(first) < s.LearnerGrace {
			out = append(out, m)
			continue
		}
		if err := s.Members.RemoveMember(ctx, m.ID); err != nil {
			return nil, fail(http.StatusServiceUnavailable, "remove etcd learner %x that never started: %w", m.ID, err)
		}
		delete(s.unstarted, m.ID)
		s.Logger.Warn("removed an etcd learner that never started", zap.String("member", fmt.Sprintf("%x", m.ID)),
			zap.Strings("peerURLs", m.PeerURLs), zap.Duration("unstartedFor", now.Sub(first)))
	}
	for id := range s.unstarted {
		if !seen[id] && !slices.ContainsFunc(out, func(m Member) bool { return m.ID == id && m.Name == "" }) {
			delete(s.unstarted, id)
		}
	}
	return out, nil
}

func (s *server) caKey() (string, error) {
	b, err := s.CA.KeyPEM()
	if err != nil {
		return "", fmt.Errorf("join: CA key: %w", err)
	}
	return string(b), nil
}

// decideRole gives a host that may have one a voter seat while the cluster
// has fewer than maxVoters members. Learners count: they become voters.
func decideRole(members []Member, voter bool, maxVoters int) Role {
	if voter && len(members) < maxVoters {
		return RoleVoter
	}
	return RoleClient
}

// initialCluster is "name=peerURL,..." for member id starting as name.
func initialCluster(members []Member, id uint64, name string) (string, error) {
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == id {
			n = name
		}
		if n == "" {
			return "", fmt.Errorf("etcd member %x has not started yet; one join at a time", m.ID)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ","), nil
}
