package join

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// Path is where the join endpoint listens.
const Path = "/v1/join"

const (
	maxRequestBytes  = 64 << 10
	maxResponseBytes = 1 << 20
	// DefaultMaxVoters is how many etcd voters a cluster grows to when
	// ServerConfig.MaxVoters is zero.
	DefaultMaxVoters = 3
)

// Request is what a joining host sends.
type Request struct {
	NodeName string `json:"nodeName"`
	// Advertise lists the IPs and DNS names other hosts reach this host by;
	// the issued certificates carry them as SANs.
	Advertise []string `json:"advertise"`
	// WantVoter asks to run an etcd member. The server decides: only the
	// first MaxVoters hosts get one.
	WantVoter bool `json:"wantVoter"`
	// PeerURL and ClientURL are the joiner's etcd URLs (https, a host from
	// Advertise); required with WantVoter.
	PeerURL   string `json:"peerURL,omitempty"`
	ClientURL string `json:"clientURL,omitempty"`
}

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
	// CAKey is the cluster CA's private key, given to voters only: with it
	// every voter can issue tokens and serve joins (cluster.joinListen), so
	// no host is the only one that can admit new hosts. Client-only hosts
	// never get it.
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
// daemon implements it with store.Members and store.AddLearner.
type Membership interface {
	Members(ctx context.Context) ([]Member, error)
	AddLearner(ctx context.Context, peerURL string) (id uint64, members []Member, err error)
}

// TokenChecker authenticates a join token; *Tokens is one.
type TokenChecker interface {
	Check(ctx context.Context, tok Token) (TokenInfo, error)
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
	// Authorize, when set, gives the joining host's etcd identity (its
	// client certificate's CN) the permissions of role before anything is
	// issued: etcd's auth takes the CN as the user (store.EnsureAuth).
	Authorize func(ctx context.Context, name string, role Role) error
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
	return nil
}

// ServerTLS issues a server certificate for the join endpoint under hosts
// (IPs or DNS names) and returns a config presenting it with the CA in the
// chain, so a joiner can pin the CA. Joiners have no client certificate.
func ServerTLS(ca *pki.CA, hosts []string, now time.Time) (*tls.Config, error) {
	dns, ips := splitHosts(hosts)
	certPEM, keyPEM, err := ca.Issue(pki.IssueOptions{CommonName: "m3sup-join", DNSNames: dns, IPs: ips, Usage: pki.UsageServer, Now: now})
	if err != nil {
		return nil, fmt.Errorf("join server TLS: %w", err)
	}
	cfg, err := pki.ServerTLS(certPEM, keyPEM, ca.CertPEM())
	if err != nil {
		return nil, fmt.Errorf("join server TLS: %w", err)
	}
	cfg.ClientAuth = tls.NoClientCert
	cfg.ClientCAs = nil
	return cfg, nil
}

type server struct {
	ServerConfig
	mu sync.Mutex // one join at a time: etcd admits one learner at a time anyway
}

// Handler returns the join endpoint: POST Path with a Request body and
// "Authorization: Bearer <token>". The token is checked before the body is
// read. Serve it over TLS only (ServerTLS).
func Handler(c ServerConfig) (http.Handler, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &server{ServerConfig: c}, nil
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok, err := ParseToken(bearer)
	if !ok || err != nil {
		s.refuse(w, r, "malformed or missing token")
		return
	}
	info, err := s.Tokens.Check(r.Context(), tok)
	if errors.Is(err, ErrRefused) {
		s.refuse(w, r, err.Error())
		return
	}
	if err != nil {
		s.Logger.Warn("join: check token", zap.Error(err))
		http.Error(w, "cannot check the token now; retry", http.StatusServiceUnavailable)
		return
	}

	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "decode join request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := req.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, code, err := s.join(r.Context(), req)
	if err != nil {
		s.Logger.Warn("join refused", zap.String("node", req.NodeName), zap.String("token", info.ID), zap.Error(err))
		http.Error(w, err.Error(), code)
		return
	}
	s.Logger.Info("host joined", zap.String("node", req.NodeName), zap.String("token", info.ID), zap.String("role", string(resp.Role)), zap.Uint64("member", resp.MemberID))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// refuse answers 401 without saying which check failed; the log says.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, why string) {
	s.Logger.Warn("join refused: bad token", zap.String("remote", r.RemoteAddr), zap.String("reason", why))
	w.Header().Set("WWW-Authenticate", `Bearer realm="m3sup-join"`)
	http.Error(w, "join refused: invalid token", http.StatusUnauthorized)
}

func (s *server) join(ctx context.Context, req Request) (Response, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	members, err := s.Members.Members(ctx)
	if err != nil {
		return Response{}, http.StatusServiceUnavailable, fmt.Errorf("list etcd members: %w", err)
	}
	var pending *Member // an unstarted learner for this peer URL: an earlier try's response was lost
	for i, m := range members {
		if m.Name == req.NodeName {
			return Response{}, http.StatusConflict, fmt.Errorf("an etcd member named %q exists; remove it first (m3sup leave)", req.NodeName)
		}
		if req.WantVoter && m.Name == "" && slices.Contains(m.PeerURLs, req.PeerURL) {
			pending = &members[i]
		}
	}
	if s.Readmit != nil {
		had, err := s.Readmit(ctx, req.NodeName)
		if err != nil {
			return Response{}, http.StatusServiceUnavailable, fmt.Errorf("readmit %s: %w", req.NodeName, err)
		}
		if had {
			s.Logger.Info("host joins again under the name of a removed host: its tombstone is cleared", zap.String("node", req.NodeName))
		}
	}
	role := decideRole(members, req.WantVoter, s.MaxVoters)
	if pending != nil {
		role = RoleVoter
	}
	if s.Authorize != nil {
		if err := s.Authorize(ctx, req.NodeName, role); err != nil {
			return Response{}, http.StatusServiceUnavailable, fmt.Errorf("authorize %s in etcd: %w", req.NodeName, err)
		}
	}
	now := s.Now()
	dns, ips := splitHosts(append([]string{req.NodeName}, req.Advertise...))
	resp := Response{CACert: string(s.CA.CertPEM()), Role: role}
	cert, key, err := s.CA.Issue(pki.IssueOptions{CommonName: pki.NodeCN(req.NodeName), Usage: pki.UsageClient, TTL: s.CertTTL, Now: now})
	if err != nil {
		return Response{}, http.StatusInternalServerError, err
	}
	resp.ClientCert, resp.ClientKey = string(cert), string(key)

	if role == RoleVoter {
		// Issue before adding the member, so a failure leaves no learner behind.
		cert, key, err := s.CA.Issue(pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: pki.UsagePeer, TTL: s.CertTTL, Now: now})
		if err != nil {
			return Response{}, http.StatusInternalServerError, err
		}
		resp.PeerCert, resp.PeerKey = string(cert), string(key)
		if resp.CAKey, err = s.caKey(); err != nil {
			return Response{}, http.StatusInternalServerError, err
		}
		if pending != nil {
			resp.MemberID = pending.ID
		} else {
			id, ms, err := s.Members.AddLearner(ctx, req.PeerURL)
			if err != nil {
				return Response{}, http.StatusServiceUnavailable, fmt.Errorf("add etcd learner (another join may be in progress; retry): %w", err)
			}
			resp.MemberID, members = id, ms
		}
		if resp.InitialCluster, err = initialCluster(members, resp.MemberID, req.NodeName); err != nil {
			return Response{}, http.StatusConflict, err
		}
	}
	for _, m := range members {
		if !m.IsLearner {
			resp.Endpoints = append(resp.Endpoints, m.ClientURLs...)
		}
	}
	return resp, http.StatusOK, nil
}

func (s *server) caKey() (string, error) {
	b, err := s.CA.KeyPEM()
	if err != nil {
		return "", fmt.Errorf("join: CA key: %w", err)
	}
	return string(b), nil
}

// decideRole gives a host that wants one a voter seat while the cluster has
// fewer than maxVoters members. Learners count: they become voters.
func decideRole(members []Member, wantVoter bool, maxVoters int) Role {
	if wantVoter && len(members) < maxVoters {
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

// Validate checks a join request's shape.
func (r Request) Validate() error {
	if !validName(r.NodeName) {
		return fmt.Errorf("node name %q: want 1-63 characters [a-z0-9.-]", r.NodeName)
	}
	if len(r.Advertise) == 0 || len(r.Advertise) > 16 {
		return errors.New("advertise 1 to 16 IPs or DNS names")
	}
	for _, h := range r.Advertise {
		if net.ParseIP(h) == nil && !validName(h) {
			return fmt.Errorf("advertised host %q is neither an IP nor a DNS name", h)
		}
	}
	if !r.WantVoter {
		return nil
	}
	for what, s := range map[string]string{"peer": r.PeerURL, "client": r.ClientURL} {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Port() == "" {
			return fmt.Errorf("etcd %s URL %q: want https://host:port", what, s)
		}
		if !slices.Contains(r.Advertise, u.Hostname()) && u.Hostname() != r.NodeName {
			return fmt.Errorf("etcd %s URL %q: host is not advertised", what, s)
		}
	}
	return nil
}

func validName(s string) bool {
	return len(s) > 0 && len(s) <= 63 && only(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") && s[0] != '-' && s[0] != '.'
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}
