package supervisor

// Multi-host mode (issue 6): the first host (cluster.joinListen set) creates
// the CA under <dataDir>/pki, runs etcd over mutual TLS and serves the join
// endpoint; a joining host (`m3sup run --join URL --token T`) asks it for
// certificates and an etcd seat before it starts anything, persists the
// answer in <dataDir>/cluster.json, starts its etcd member as a learner and
// promotes it once it has caught up.
//
// Every etcd voter holds the CA (a joining voter gets its key in the join
// answer, over the CA-pinned TLS connection, and keeps it under its pki dir,
// which M3's containers never see), so any voter can issue tokens and, with
// cluster.joinListen set, serve joins; the first host can leave.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/run"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// JoinOptions asks a host to join an existing cluster.
type JoinOptions struct {
	URL   string // https://host:port of the first host's join endpoint
	Token string // K10<ca-hash>::<id>.<secret>
}

// PKI file names under <dataDir>/pki (the CA files are pki.CACertFile and
// pki.CAKeyFile).
const (
	peerCertFile   = "etcd-peer.crt"
	peerKeyFile    = "etcd-peer.key"
	clientCertFile = "etcd-client.crt"
	clientKeyFile  = "etcd-client.key"
	// containerPKI is where M3's containers see the client certificate.
	containerPKI = "/etc/m3sup-pki"
)

// clusterFile is what a joined host remembers of its join (<dataDir>/cluster.json),
// so a restart starts its etcd member instead of joining again.
type clusterFile struct {
	JoinURL        string    `json:"joinURL"`
	Role           join.Role `json:"role"`
	MemberID       uint64    `json:"memberID,string"`
	InitialCluster string    `json:"initialCluster,omitempty"`
	Endpoints      []string  `json:"endpoints"`
	Joined         time.Time `json:"joined"`
}

func (l layout) pki() string { return filepath.Join(l.root, "pki") }

// m3PKI holds only what M3's containers may see: the CA certificate and the
// etcd client certificate, never the CA key or the peer key.
func (l layout) m3PKI() string       { return filepath.Join(l.root, "pki", "m3") }
func (l layout) clusterFile() string { return filepath.Join(l.root, "cluster.json") }

// multiHost reports whether this host runs in multi-host mode.
func (s *Supervisor) multiHost() bool { return s.cfg.Cluster.MultiHost(s.opts.Join.URL) }

// etcdURLOn returns u (a configured etcd URL) as https on host.
func etcdURLOn(host, u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	_, port, err := net.SplitHostPort(pu.Host)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

func (s *Supervisor) etcdURLs() (client, peer string, err error) {
	adv := s.cfg.Cluster.Advertise
	if adv == "" {
		return "", "", errors.New("multi-host mode needs cluster.advertise (the address other hosts reach this host by)")
	}
	if client, err = etcdURLOn(adv, s.cfg.Etcd.ClientURL); err != nil {
		return "", "", err
	}
	peer, err = etcdURLOn(adv, s.cfg.Etcd.PeerURL)
	return client, peer, err
}

// resumeJoin makes a host that joined before a joined host again when it
// starts without --join (a unit file that only names the config): the join
// URL comes from cluster.json, so it never starts as a lone single node on
// a data dir that belongs to a cluster.
func (s *Supervisor) resumeJoin(lay layout) error {
	if s.opts.Join.URL != "" {
		return nil
	}
	b, err := os.ReadFile(lay.clusterFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", lay.clusterFile(), err)
	}
	var cf clusterFile
	if err := json.Unmarshal(b, &cf); err != nil || cf.JoinURL == "" {
		return fmt.Errorf("%s: no join URL in it (%v); start with --join to repair it", lay.clusterFile(), err)
	}
	s.opts.Join.URL = cf.JoinURL
	s.log.Info("joined host: starting from "+lay.clusterFile(), zap.String("join", cf.JoinURL))
	return nil
}

// joinCluster performs the join handshake once (before anything starts) and
// persists its answer; a host that joined before reuses cluster.json.
func (s *Supervisor) joinCluster(ctx context.Context, lay layout) error {
	if s.opts.Join.URL == "" {
		return nil
	}
	if _, err := os.Stat(lay.clusterFile()); err == nil {
		s.log.Info("already joined; starting from " + lay.clusterFile())
		return nil
	}
	clientURL, peerURL, err := s.etcdURLs()
	if err != nil {
		return err
	}
	if s.opts.Join.Token == "" {
		return errors.New("--join needs --token or --token-file")
	}
	req := join.Request{NodeName: s.cfg.NodeName, Advertise: []string{s.cfg.Cluster.Advertise},
		WantVoter: true, PeerURL: peerURL, ClientURL: clientURL}
	jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	resp, err := join.Join(jctx, s.opts.Join.URL, s.opts.Join.Token, req)
	if err != nil {
		return err
	}
	// A voter gets a member (peer) certificate; a client-only host (the
	// cluster has cluster.maxVoters voters already) only the client one.
	files := map[string][]byte{
		pki.CACertFile: []byte(resp.CACert),
		clientCertFile: []byte(resp.ClientCert), clientKeyFile: []byte(resp.ClientKey),
	}
	switch resp.Role {
	case join.RoleVoter:
		files[peerCertFile], files[peerKeyFile] = []byte(resp.PeerCert), []byte(resp.PeerKey)
		if resp.CAKey != "" { // Join checked that it matches CACert
			files[pki.CAKeyFile] = []byte(resp.CAKey)
		}
	case join.RoleClient:
	default:
		return fmt.Errorf("join %s: unknown etcd role %q in the answer", s.opts.Join.URL, resp.Role)
	}
	if err := os.MkdirAll(lay.pki(), 0o700); err != nil {
		return err
	}
	for name, b := range files {
		if err := pki.WriteFileAtomic(filepath.Join(lay.pki(), name), b, 0o600); err != nil {
			return err
		}
	}
	cf := clusterFile{JoinURL: s.opts.Join.URL, Role: resp.Role, MemberID: resp.MemberID,
		InitialCluster: resp.InitialCluster, Endpoints: resp.Endpoints, Joined: time.Now().UTC()}
	if err := writeClusterFile(lay, cf); err != nil {
		return err
	}
	s.log.Info("joined the cluster", zap.String("join", s.opts.Join.URL), zap.String("role", string(resp.Role)),
		zap.String("member", fmt.Sprintf("%x", resp.MemberID)), zap.Strings("endpoints", resp.Endpoints))
	return nil
}

// loadOrCreateCA loads the CA kept in dir, or creates one named name there.
func (s *Supervisor) loadOrCreateCA(dir, name string) (*pki.CA, error) {
	ca, err := pki.LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = pki.NewCA(name, time.Now()); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		if err := ca.Save(dir); err != nil {
			return nil, fmt.Errorf("save %s in %s: %w", name, dir, err)
		}
		s.log.Info("created the "+name, zap.String("dir", dir), zap.String("fingerprint", ca.Fingerprint()))
		return ca, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load the CA in %s: %w", dir, err)
	}
	return ca, nil
}

// firstHostPKI loads or creates the CA and (re)issues this host's etcd peer
// and client certificates for its advertise address.
func (s *Supervisor) firstHostPKI(lay layout) (*pki.CA, error) {
	dir := lay.pki()
	ca, err := s.loadOrCreateCA(dir, "m3sup cluster CA")
	if err != nil {
		return nil, err
	}
	dns, ips := splitHosts([]string{s.cfg.NodeName, s.cfg.Cluster.Advertise})
	peerCert, peerKey, err := ca.Issue(pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: dns, IPs: ips, Usage: pki.UsagePeer})
	if err != nil {
		return nil, err
	}
	cliCert, cliKey, err := ca.Issue(pki.IssueOptions{CommonName: pki.NodeCN(s.cfg.NodeName), Usage: pki.UsageClient})
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{peerCertFile: peerCert, peerKeyFile: peerKey, clientCertFile: cliCert, clientKeyFile: cliKey} {
		if err := pki.WriteFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

// loadJoinedCA loads the CA a joined voter received with its join, if it
// did (a voter that joined an m3sup that did not share the CA has none).
func (s *Supervisor) loadJoinedCA(lay layout) error {
	ca, err := pki.LoadCA(lay.pki())
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("this voter does not hold the cluster CA (it joined before voters received it): it cannot issue tokens or serve joins")
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ca = ca
	s.mu.Unlock()
	return nil
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// startEtcd starts this host's etcd: a loopback member over mutual TLS in
// single-node mode (startLocalEtcd); in multi-host mode a member over
// mutual TLS on the advertise address (first host, or a joined voter that
// starts as a learner and is promoted), or, on an etcd client-only host, no
// member at all but a client of the voters. Whatever it is, the rest of m3sup uses the returned Etcd's
// client; M3 is configured with every voter either way.
func (s *Supervisor) startEtcd(ctx context.Context, lay layout) (*store.Etcd, error) {
	cfg := s.cfg
	if !s.multiHost() {
		return s.startLocalEtcd(ctx, lay)
	}
	var cf *clusterFile
	if s.opts.Join.URL == "" {
		ca, err := s.firstHostPKI(lay)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.ca = ca
		s.mu.Unlock()
	} else {
		var err error
		if cf, err = readClusterFile(lay); err != nil {
			return nil, err
		}
		if cf.Role == join.RoleVoter {
			if err := s.loadJoinedCA(lay); err != nil {
				return nil, err
			}
		}
	}
	dir := lay.pki()
	var e *store.Etcd
	var err error
	if cf != nil && cf.Role == join.RoleClient {
		e, err = store.ConnectCluster(ctx, store.ClientOptions{
			Endpoints: cf.Endpoints,
			CAFile:    filepath.Join(dir, pki.CACertFile),
			CertFile:  filepath.Join(dir, clientCertFile), KeyFile: filepath.Join(dir, clientKeyFile),
			StartTimeout: cfg.Etcd.StartTimeout.D(),
			Logger:       s.log,
		})
		if err != nil {
			return nil, err
		}
		s.log.Info("etcd client-only host: no local member; using the cluster's voters", zap.Strings("endpoints", e.Client().Endpoints()))
	} else if e, err = s.startMember(ctx, lay, cf); err != nil {
		return nil, err
	}
	s.mu.Lock()
	ca := s.ca
	s.mu.Unlock()
	if ca != nil && e.Member() {
		// A voter that holds the CA sets up etcd's authorization (once; at
		// every start it adds what is missing), as root on its own member.
		clientURL, _, err := s.etcdURLs()
		if err == nil {
			err = s.asRoot(ctx, ca, clientURL, s.ensureClusterAuth)
		}
		if err != nil {
			e.Close()
			return nil, err
		}
	}
	if ca != nil {
		// M3 gets its own certificate: M3's keys only.
		err = issueM3Cert(lay, ca, s.cfg.NodeName)
	} else {
		// A host without the CA key cannot issue one: M3 uses the host's
		// (a client-only host's identity, which cannot touch tokens).
		err = copyFiles(dir, lay.m3PKI(), pki.CACertFile, clientCertFile, clientKeyFile)
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	// M3 talks to every voter.
	if err := s.followVoters(ctx, lay, e.Client()); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// followVoters points M3's etcd endpoints (the configs rendered from now
// on) and cluster.json at the etcd voters of now.
func (s *Supervisor) followVoters(ctx context.Context, lay layout, cli *clientv3.Client) error {
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	members, err := store.Members(mctx, cli)
	if err != nil {
		return fmt.Errorf("list the etcd voters: %w", err)
	}
	var eps, urls []string
	for _, m := range members {
		if m.IsLearner {
			continue
		}
		for _, u := range m.ClientURLs {
			if pu, err := url.Parse(u); err == nil {
				eps = append(eps, pu.Host)
				urls = append(urls, u)
			}
		}
	}
	if len(eps) == 0 {
		return errors.New("list the etcd voters: none has a client URL")
	}
	// A joined host starts its next time from the voters of now, not of
	// its join (voters may have left since).
	cf, err := readClusterFile(lay)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if cf != nil && !slices.Equal(cf.Endpoints, urls) {
		cf.Endpoints = urls
		if err := writeClusterFile(lay, *cf); err != nil {
			s.log.Warn("cannot record the current etcd voters in cluster.json", zap.Error(err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m3Etcd = &m3.EtcdParams{Endpoints: eps, TLS: &m3.EtcdTLS{
		CertPath: containerPKI + "/" + clientCertFile, KeyPath: containerPKI + "/" + clientKeyFile, CAPath: containerPKI + "/" + pki.CACertFile}}
	return nil
}

func readClusterFile(lay layout) (*clusterFile, error) {
	b, err := os.ReadFile(lay.clusterFile())
	if err != nil {
		return nil, err
	}
	cf := &clusterFile{}
	if err := json.Unmarshal(b, cf); err != nil {
		return nil, fmt.Errorf("%s: %w", lay.clusterFile(), err)
	}
	return cf, nil
}

func writeClusterFile(lay layout, cf clusterFile) error {
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", lay.clusterFile(), err)
	}
	return pki.WriteFileAtomic(lay.clusterFile(), b, 0o600)
}

// startMember starts this host's etcd member over mutual TLS: the first
// member of a new cluster (cf nil, the first host) or a joined voter (from
// cluster.json), which starts as a learner and is promoted here.
func (s *Supervisor) startMember(ctx context.Context, lay layout, cf *clusterFile) (*store.Etcd, error) {
	cfg := s.cfg
	clientURL, peerURL, err := s.etcdURLs()
	if err != nil {
		return nil, err
	}
	dir := lay.pki()
	o := store.ClusterOptions{
		Name: cfg.Etcd.Name, Dir: lay.etcd(), ClientURL: clientURL, PeerURL: peerURL,
		TLS: store.ClusterTLS{
			CAFile:   filepath.Join(dir, pki.CACertFile),
			CertFile: filepath.Join(dir, peerCertFile), KeyFile: filepath.Join(dir, peerKeyFile),
			ClientCertFile: filepath.Join(dir, clientCertFile), ClientKeyFile: filepath.Join(dir, clientKeyFile),
		},
		AllowedPeerCN: pki.EtcdPeerCN,
		StartTimeout:  cfg.Etcd.StartTimeout.D(),
		Logger:        s.log,
	}
	if cf != nil {
		o.State, o.InitialCluster = store.StateExisting, cf.InitialCluster
		// A learner serves no clients: talk to the voters until promoted.
		o.Endpoints = cf.Endpoints
	}
	e, err := store.StartClusterEtcd(ctx, o)
	if err != nil {
		return nil, err
	}
	if cf != nil {
		s.setPhase(PhaseStartingEtcd, "learner catching up; promoting")
		if err := store.PromoteWhenReady(ctx, e.Client(), cf.MemberID); err != nil {
			e.Close()
			return nil, err
		}
		s.log.Info("etcd member promoted to voter", zap.String("member", fmt.Sprintf("%x", cf.MemberID)))
		// A voter serves clients: use it, as the first host uses its own,
		// not the voters of the join, which may leave (the first host too).
		e.Client().SetEndpoints(clientURL)
	}
	return e, nil
}

func copyFiles(from, to string, names ...string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(filepath.Join(to, n), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// membership adapts the etcd client to join.Membership.
type membership struct{ cli *clientv3.Client }

func (m membership) Members(ctx context.Context) ([]join.Member, error) {
	ms, err := store.Members(ctx, m.cli)
	return convMembers(ms), err
}

func (m membership) AddLearner(ctx context.Context, peerURL string) (uint64, []join.Member, error) {
	id, ms, err := store.AddLearner(ctx, m.cli, peerURL)
	return id, convMembers(ms), err
}

func (m membership) RemoveMember(ctx context.Context, id uint64) error {
	return store.RemoveMember(ctx, m.cli, id)
}

func convMembers(ms []store.Member) []join.Member {
	out := make([]join.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, join.Member(m))
	}
	return out
}

// tokens returns the join token store, or an error when this host cannot
// issue tokens (it does not hold the CA).
func (s *Supervisor) tokens() (*join.Tokens, error) {
	s.mu.Lock()
	ca, e := s.ca, s.etcd
	s.mu.Unlock()
	if ca == nil || e == nil {
		return nil, fmt.Errorf("%w: join tokens are issued by an etcd voter that holds the cluster CA (the first host, or a voter that joined it), once its etcd is up", api.ErrConflict)
	}
	return &join.Tokens{KV: e.Client(), CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:")}, nil
}

// The API serves tokens through this interface by a type assertion; keep
// the Supervisor implementing it.
var _ api.Tokens = (*Supervisor)(nil)

// CreateToken implements api.Tokens.
func (s *Supervisor) CreateToken(ctx context.Context, o join.TokenOptions) (string, join.TokenInfo, error) {
	ts, err := s.tokens()
	if err != nil {
		return "", join.TokenInfo{}, err
	}
	tok, info, err := ts.Create(ctx, o)
	if errors.Is(err, join.ErrInvalidTokenOptions) {
		err = fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return tok.Encode(), info, err
}

// ListTokens implements api.Tokens.
func (s *Supervisor) ListTokens(ctx context.Context) ([]join.TokenInfo, error) {
	ts, err := s.tokens()
	if err != nil {
		return nil, err
	}
	return ts.List(ctx)
}

// RevokeToken implements api.Tokens.
func (s *Supervisor) RevokeToken(ctx context.Context, id string) error {
	ts, err := s.tokens()
	if err != nil {
		return err
	}
	return ts.Revoke(ctx, id)
}

// joinServer returns the join endpoint actor (cluster.joinListen on a host
// that holds the CA: the first host or a voter that joined it), or nil.
func (s *Supervisor) joinServer(e *store.Etcd) (func() error, func(error), error) {
	s.mu.Lock()
	ca := s.ca
	s.mu.Unlock()
	if s.cfg.Cluster.JoinListen == "" {
		return nil, nil, nil
	}
	if ca == nil {
		s.log.Warn("cluster.joinListen is set but this host does not hold the cluster CA (an etcd client-only host, or a voter that joined before voters received it): not serving joins")
		return nil, nil, nil
	}
	ts := &join.Tokens{KV: e.Client(), CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:")}
	h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: ts, Members: membership{e.Client()},
		MaxVoters: s.cfg.Cluster.MaxVoters, Logger: s.log.Named("join"),
		Readmit: func(ctx context.Context, name string) (bool, error) {
			return cluster.ClearRemoved(ctx, e.Client(), name)
		},
		NameTaken: func(ctx context.Context, name string) (bool, error) {
			return hostNameTaken(ctx, e.Client(), name)
		},
		Authorize: func(ctx context.Context, name string, role join.Role) error {
			if role != join.RoleVoter {
				return store.SetUserRole(ctx, e.Client(), pki.NodeCN(name), store.RoleClientHost)
			}
			// A voter that receives the CA key issues its M3 its own
			// certificate; one without uses its host's.
			if err := store.SetUserRole(ctx, e.Client(), pki.M3CN(name), store.RoleM3); err != nil {
				return err
			}
			return store.SetUserRole(ctx, e.Client(), pki.NodeCN(name), store.RoleRoot)
		}})
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := join.ServerTLS(ca, []string{s.cfg.Cluster.Advertise, s.cfg.NodeName}, time.Now())
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", s.cfg.Cluster.JoinListen)
	if err != nil {
		return nil, nil, fmt.Errorf("join endpoint: %w", err)
	}
	srv := join.NewHTTPServer(h, tlsCfg)
	s.log.Info("serving the join endpoint", zap.String("listen", "https://"+ln.Addr().String()))
	return func() error {
			err := srv.Serve(tls.NewListener(ln, tlsCfg))
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("join endpoint: %w", err)
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}, nil
}

// hostNameTaken reports whether a host of the cluster goes by name: it is
// registered (running now) or has published its state (it ran, and has
// not left or been removed: those forget it, cluster.ForgetOps). Client-only
// hosts have no etcd member, so this is how their names stay unique.
func hostNameTaken(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	hosts, err := cluster.Hosts(ctx, cli)
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
		return true, nil
	}
	states, err := cluster.HostStates(ctx, cli)
	if err != nil {
		return false, err
	}
	_, ok := states[name]
	return ok, nil
}

// registeredHost is this host as the cluster registry lists it: its roles
// (cluster.roles), and on its advertise address its dbnode endpoint and
// coordinator URL for the roles it has; its isolation group and weight from
// cluster.isolationGroup and cluster.weight (by default its node name and
// 100: one group per host).
func (s *Supervisor) registeredHost() (cluster.Host, error) {
	adv, cc := s.cfg.Cluster.Advertise, s.cfg.Cluster
	h := cluster.Host{Name: s.cfg.NodeName, IsolationGroup: cc.IsolationGroup, Weight: cc.Weight, Hostname: adv}
	s.mu.Lock()
	h.HoldsCA = s.ca != nil
	s.mu.Unlock()
	if h.HoldsCA && cc.JoinListen != "" {
		_, port, err := net.SplitHostPort(cc.JoinListen)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("cluster.joinListen %q: %w", cc.JoinListen, err)
		}
		h.JoinURL = "https://" + net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleDBNode) {
		_, port, err := net.SplitHostPort(s.cfg.DBNode.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("dbnode listen address %q: %w", s.cfg.DBNode.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleDBNode)
		h.Endpoint = net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleCoordinator) {
		_, port, err := net.SplitHostPort(s.cfg.Coordinator.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("coordinator listen address %q: %w", s.cfg.Coordinator.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleCoordinator)
		h.Coordinator = "http://" + net.JoinHostPort(adv, port)
	}
	return h, nil
}

// runMultiHost is the cluster automation of a multi-host host: it keeps the
// host registered, campaigns for the placement controller (which inits the
// placement once replication-factor hosts are registered and adds later
// ones), and drives namespaces and readiness like runCluster, but never
// creates the placement itself.
func (s *Supervisor) runMultiHost(ctx context.Context, cli *clientv3.Client, c *m3.Client, desired spec.Cluster, updates <-chan spec.Cluster) error {
	h, err := s.registeredHost()
	if err != nil {
		return err
	}
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		r := &cluster.Registrar{Cli: cli, Host: h, Logger: s.log.Named("registry")}
		g.Add(func() error { return r.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		ctl := &cluster.Controller{Cli: cli, M3: c, Node: s.cfg.NodeName,
			RF: desired.M3.ReplicationFactor, Shards: desired.M3.NumShards, Logger: s.log.Named("controller"),
			Forget: s.remover.Forget,
			OnStep: func(st cluster.Step) {
				if st.Action.Mutates() || st.Err != nil {
					s.log.Info("cluster controller step", zap.String("action", st.Action.String()), zap.Error(st.Err))
				}
			}}
		g.Add(func() error { return ctl.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if !s.waitPlacement(ctx, c, desired.M3.ReplicationFactor) {
				return nil
			}
			return s.runCluster(ctx, c, desired, updates)
		}, func(error) { cancel() })
	}
	return g.Run()
}

// waitPlacement waits until the controller leader has created the
// placement; false means ctx ended first.
func (s *Supervisor) waitPlacement(ctx context.Context, c *m3.Client, rf int) bool {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, exists, err := c.Placement(cctx)
		cancel()
		if err == nil && exists {
			return true
		}
		msg := fmt.Sprintf("waiting for %d hosts to register and the cluster controller to create the placement", rf)
		if err != nil {
			msg += " (coordinator: " + err.Error() + ")"
		}
		s.setPhase(PhaseBootstrapping, msg)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// ensureClusterAuth turns on etcd's authorization for the cluster (see
// store.EnsureAuth) with a user for every host known now: this host and
// every named etcd member as root, every other registered host as a
// client-only host, and M3's certificate. Hosts that join later get their
// user from the join (join.ServerConfig.Authorize).
func (s *Supervisor) ensureClusterAuth(ctx context.Context, cli *clientv3.Client) error {
	members, err := store.Members(ctx, cli)
	if err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	ids := store.Identities{M3: []string{pki.M3CN(s.cfg.NodeName)}, Admins: []string{pki.NodeCN(s.cfg.NodeName)}}
	voter := map[string]bool{s.cfg.NodeName: true}
	for _, m := range members {
		if m.Name != "" && !voter[m.Name] {
			voter[m.Name] = true
			ids.Admins = append(ids.Admins, pki.NodeCN(m.Name))
			ids.M3 = append(ids.M3, pki.M3CN(m.Name))
		}
	}
	hosts, err := cluster.Hosts(ctx, cli)
	if err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	for _, h := range hosts {
		if !voter[h.Name] {
			ids.Clients = append(ids.Clients, pki.NodeCN(h.Name))
		}
	}
	if err := store.EnsureAuth(ctx, cli, ids); err != nil {
		return fmt.Errorf("etcd authorization: %w", err)
	}
	return nil
}
