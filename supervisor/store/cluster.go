package store

// This file holds the multi-host side of the embedded etcd: a member that
// serves clients and peers over mutual TLS, and the membership changes m3sup
// makes (add a learner, promote it, remove a member without losing quorum).
//
// A joining host's member goes through:
//
//	AddLearner (by a voter) → StartClusterEtcd(State: existing) → learner
//	catching up → PromoteWhenReady → voter → RemoveMember → gone
//
// A learner serves no client requests; until it is promoted, use a client
// connected to the voters (ClusterOptions.Endpoints does that).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster states for ClusterOptions.State.
const (
	StateNew      = embed.ClusterStateFlagNew      // the first member of a new cluster
	StateExisting = embed.ClusterStateFlagExisting // a member added to a running cluster
)

// ErrQuorumAtRisk means a membership change was refused because it would
// leave (or the cluster already has) fewer healthy voters than a majority.
var ErrQuorumAtRisk = errors.New("quorum at risk")

// ErrNotMember means no member has the given ID.
var ErrNotMember = errors.New("no such etcd member")

// ClusterTLS names the PEM files of a member's TLS material.
type ClusterTLS struct {
	CAFile string // the m3sup CA; the only issuer etcd trusts
	// CertFile/KeyFile: this member's certificate, pki.UsagePeer with
	// CommonName pki.EtcdPeerCN and SANs for its advertised hosts. It serves
	// both listeners and is etcd's client certificate towards its peers and
	// its own gRPC gateway.
	CertFile, KeyFile string
	// ClientCertFile/ClientKeyFile: m3sup's own client certificate
	// (pki.UsageClient) for the client StartClusterEtcd returns.
	ClientCertFile, ClientKeyFile string
}

// ClusterOptions configures a member of a multi-host etcd cluster.
type ClusterOptions struct {
	Name      string // member name, unique in the cluster (the node name)
	Dir       string // data dir
	ClientURL string // https URL to listen on and advertise for clients
	PeerURL   string // https URL to listen on and advertise for peers
	TLS       ClusterTLS
	// AllowedPeerCN is the only client-certificate CN the peer listener
	// admits; pki.EtcdPeerCN in m3sup. Empty admits any CA-issued certificate.
	AllowedPeerCN string
	// InitialCluster is "name=peerURL,..." including this member; for
	// StateExisting, the list AddLearner's caller computed with
	// InitialCluster. Empty means this member alone. Ignored once Dir holds data.
	InitialCluster string
	State          string   // StateNew or StateExisting; empty means StateNew
	Endpoints      []string // client URLs for the returned client; empty means ClientURL
	Logger         *zap.Logger
	StartTimeout   time.Duration // zero means a minute
}

func (o *ClusterOptions) validate() (cu, pu *url.URL, err error) {
	if o.Name == "" {
		return nil, nil, errors.New("etcd member name is empty")
	}
	if o.State == "" {
		o.State = StateNew
	}
	if o.State != StateNew && o.State != StateExisting {
		return nil, nil, fmt.Errorf("etcd cluster state %q: want %q or %q", o.State, StateNew, StateExisting)
	}
	if o.TLS.CAFile == "" || o.TLS.CertFile == "" || o.TLS.KeyFile == "" || o.TLS.ClientCertFile == "" || o.TLS.ClientKeyFile == "" {
		return nil, nil, errors.New("etcd cluster member needs a CA, a member certificate and a client certificate")
	}
	if cu, err = httpsURL("client", o.ClientURL); err != nil {
		return nil, nil, err
	}
	if pu, err = httpsURL("peer", o.PeerURL); err != nil {
		return nil, nil, err
	}
	if o.InitialCluster == "" {
		if o.State == StateExisting {
			return nil, nil, errors.New("joining an existing etcd cluster needs InitialCluster")
		}
		o.InitialCluster = o.Name + "=" + pu.String()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if len(o.Endpoints) == 0 {
		o.Endpoints = []string{cu.String()}
	}
	return cu, pu, nil
}

func httpsURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("etcd %s URL %q: %w", what, s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("etcd %s URL %q: want https://host:port", what, s)
	}
	return u, nil
}

// StartClusterEtcd starts a member that speaks mutual TLS on both listeners
// and waits until it is ready, the timeout expires or ctx is cancelled. The
// returned Etcd's client authenticates with the client certificate.
func StartClusterEtcd(ctx context.Context, o ClusterOptions) (*Etcd, error) {
	cu, pu, err := o.validate()
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd: create data dir: %w", err)
	}

	cfg, st := memberConfig(o.Name, o.Dir, cu, pu, o.Logger)
	cfg.InitialCluster = o.InitialCluster
	cfg.ClusterState = o.State
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       o.TLS.CertFile,
		KeyFile:        o.TLS.KeyFile,
		TrustedCAFile:  o.TLS.CAFile,
		ClientCertAuth: true,
	}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile:       o.TLS.CertFile,
		KeyFile:        o.TLS.KeyFile,
		TrustedCAFile:  o.TLS.CAFile,
		ClientCertAuth: true,
		// Peers are authenticated by the CA and the CN below; matching the
		// certificate's SANs against the connection's source address breaks
		// behind NAT and on multi-homed hosts.
		SkipClientSANVerify: true,
	}
	if o.AllowedPeerCN != "" {
		cfg.PeerTLSInfo.AllowedCNs = []string{o.AllowedPeerCN}
	}
	// Refuse configuration changes that would lose quorum (etcd's own guard,
	// beneath RemoveMember's).
	cfg.StrictReconfigCheck = true

	srv, err := startMember(ctx, cfg, cu, pu, o.StartTimeout, st)
	if err != nil {
		return nil, err
	}

	tlsCfg, err := transport.TLSInfo{
		CertFile:      o.TLS.ClientCertFile,
		KeyFile:       o.TLS.ClientKeyFile,
		TrustedCAFile: o.TLS.CAFile,
	}.ClientConfig()
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tlsCfg,
		Logger:      o.Logger.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("connect to etcd at %v: %w", o.Endpoints, err)
	}
	return &Etcd{srv: srv, client: client, clientURL: cu.String(), state: st}, nil
}

// MemberID returns this member's ID; zero on a client-only host.
func (e *Etcd) MemberID() uint64 {
	if e.srv == nil {
		return 0
	}
	return uint64(e.srv.Server.MemberID())
}

// ClientOptions configures ConnectCluster.
type ClientOptions struct {
	// Endpoints are the voters' https client URLs (the join answer's);
	// the client follows later membership changes by itself.
	Endpoints []string
	// CAFile, CertFile, KeyFile: the m3sup CA and this host's client
	// certificate (pki.UsageClient).
	CAFile, CertFile, KeyFile string
	Logger                    *zap.Logger
	StartTimeout              time.Duration // how long to wait for a voter to answer; zero means a minute
}

// ConnectCluster is an etcd client-only host's Etcd: no member runs here,
// the returned client talks to the cluster's voters over mutual TLS. It
// returns once a voter answers a member list, the timeout passes or ctx
// ends.
func ConnectCluster(ctx context.Context, o ClientOptions) (*Etcd, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("connect to etcd: no voter endpoints")
	}
	for _, ep := range o.Endpoints {
		if _, err := httpsURL("client", ep); err != nil {
			return nil, fmt.Errorf("connect to etcd: %w", err)
		}
	}
	if o.CAFile == "" || o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("connect to etcd: a CA and a client certificate are required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	tlsCfg, err := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tlsCfg,
		// No AutoSyncInterval: in client v3.6.16 its SetEndpoints races
		// with the unlocked endpoint read of every Maintenance dial
		// (Status, Snapshot), which status, metrics and backups make. The
		// endpoints are the voters of cluster.json, which m3sup rewrites
		// with the voters of now at every start and desired-state change;
		// the client fails over among them.
		Logger: o.Logger.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %v: %w", o.Endpoints, err)
	}
	cctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	err = retry(cctx, func() (bool, error) {
		lctx, lcancel := context.WithTimeout(cctx, 5*time.Second)
		defer lcancel()
		_, err := client.MemberList(lctx)
		return true, err
	})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("connect to etcd at %v: no voter answered within %s: %w", o.Endpoints, o.StartTimeout, err)
	}
	return &Etcd{client: client, clientURL: o.Endpoints[0]}, nil
}

// CheckRemoval is RemoveMember's quorum guard on its own: nil when voter
// id may be removed now, ErrQuorumAtRisk (wrapped) when not, ErrNotMember
// when id is no member. Removing a learner is always allowed.
func CheckRemoval(ctx context.Context, cli *clientv3.Client, id uint64) error {
	members, err := Members(ctx, cli)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return fmt.Errorf("etcd member %x: %w", id, ErrNotMember)
	}
	if members[i].IsLearner {
		return nil
	}
	return checkRemoval(ctx, cli, members, id)
}

// Member is one etcd cluster member. Name is empty until an added member
// has started.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// Members lists the cluster's members (linearizable).
func Members(ctx context.Context, cli *clientv3.Client) ([]Member, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out, nil
}

// AddLearner adds a non-voting member with peerURL and returns its ID and
// the membership that includes it. While etcd calls the cluster unhealthy
// (a member promoted moments ago does not count as active yet) or has no
// leader, it retries until ctx ends. etcd admits one learner at a time: a
// second concurrent join fails with rpctypes.ErrTooManyLearners.
func AddLearner(ctx context.Context, cli *clientv3.Client, peerURL string) (uint64, []Member, error) {
	if _, err := httpsURL("peer", peerURL); err != nil {
		return 0, nil, fmt.Errorf("add etcd learner: %w", err)
	}
	var resp *clientv3.MemberAddResponse
	err := retry(ctx, func() (bool, error) {
		var err error
		resp, err = cli.MemberAddAsLearner(ctx, []string{peerURL})
		return transient(err), err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("add etcd learner %s: %w", peerURL, err)
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return resp.Member.ID, out, nil
}

// PromoteWhenReady promotes learner id to a voter, retrying while etcd says
// the learner has not caught up with the leader (or has no leader for a
// moment). It returns nil if id already is a voter. Without a deadline on
// ctx it gives up after two minutes.
func PromoteWhenReady(ctx context.Context, cli *clientv3.Client, id uint64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	err := retry(ctx, func() (bool, error) {
		_, err := cli.MemberPromote(ctx, id)
		if errors.Is(err, rpctypes.ErrMemberNotLearner) {
			return false, nil
		}
		return err != nil && promoteRetryable(err), err
	})
	if err != nil {
		return fmt.Errorf("promote etcd member %x: %w", id, err)
	}
	return nil
}

// retry calls f until it succeeds, fails for good (again false) or ctx
// ends, waiting a jittered, doubling delay (100 ms up to 2 s) in between.
func retry(ctx context.Context, f func() (again bool, err error)) error {
	delay := 100 * time.Millisecond
	for {
		again, err := f()
		if err == nil || !again {
			return err
		}
		t := time.NewTimer(delay/2 + rand.N(delay)) // [d/2, 3d/2)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func promoteRetryable(err error) bool {
	for _, e := range []error{
		rpctypes.ErrMemberLearnerNotReady,
		rpctypes.ErrNoLeader,
		rpctypes.ErrLeaderChanged,
		rpctypes.ErrNotCapable,
		rpctypes.ErrUnhealthy,
		rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	// Tolerate the wire form too, whatever client-side wrapping is applied.
	return strings.Contains(err.Error(), rpctypes.ErrMemberLearnerNotReady.Error())
}

// transient reports etcd errors that clear without intervention: a cluster
// that counts a member as not yet active, a leader election.
func transient(err error) bool {
	return errors.Is(err, rpctypes.ErrUnhealthy) || errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrLeaderChanged)
}

// HealthTimeout bounds each voter's status check in RemoveMember.
const HealthTimeout = 3 * time.Second

// RemoveMember removes member id. Removing a learner is always allowed.
// Removing a voter is refused with ErrQuorumAtRisk unless a majority of the
// current voters and a majority of the voters that remain both answer a
// status request: m3sup never removes its way below quorum. While etcd
// calls the cluster unhealthy it retries until ctx ends.
func RemoveMember(ctx context.Context, cli *clientv3.Client, id uint64) error {
	members, err := Members(ctx, cli)
	if err != nil {
		return fmt.Errorf("remove etcd member %x: %w", id, err)
	}
	i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return fmt.Errorf("remove etcd member %x: %w", id, ErrNotMember)
	}
	if !members[i].IsLearner {
		if err := checkRemoval(ctx, cli, members, id); err != nil {
			return fmt.Errorf("remove etcd member %x (%s): %w", id, members[i].Name, err)
		}
	}
	// etcd's own check may still call the cluster unhealthy while a member
	// that just came back has not been active for long; retry that.
	err = retry(ctx, func() (bool, error) {
		_, err := cli.MemberRemove(ctx, id)
		return transient(err), err
	})
	if err != nil {
		return fmt.Errorf("remove etcd member %x (%s): %w", id, members[i].Name, err)
	}
	return nil
}

// RemoveMemberNamed removes the member called name (a host's etcd member
// carries the host's name) with RemoveMember's quorum guard; a host that
// is gone for good is removed by name from any live host. It reports
// whether it removed one: none by that name is no error, so it is
// idempotent.
func RemoveMemberNamed(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	if name == "" {
		return false, errors.New("remove etcd member: no name")
	}
	members, err := Members(ctx, cli)
	if err != nil {
		return false, fmt.Errorf("remove etcd member %s: %w", name, err)
	}
	i := slices.IndexFunc(members, func(m Member) bool { return m.Name == name })
	if i < 0 {
		return false, nil
	}
	err = RemoveMember(ctx, cli, members[i].ID)
	if errors.Is(err, ErrNotMember) { // removed meanwhile
		return false, nil
	}
	return err == nil, err
}

// checkRemoval decides whether voter id may go, given each voter's health.
func checkRemoval(ctx context.Context, cli *clientv3.Client, members []Member, id uint64) error {
	healthy := map[uint64]bool{}
	for _, m := range members {
		if !m.IsLearner {
			healthy[m.ID] = memberHealthy(ctx, cli, m)
		}
	}
	return QuorumAfterRemoval(healthy, id)
}

// QuorumAfterRemoval is the guard's decision, pure: voters maps each
// voter's ID to whether it answered. It refuses (ErrQuorumAtRisk) unless a
// majority of the voters and a majority of those left without id are healthy.
func QuorumAfterRemoval(voters map[uint64]bool, id uint64) error {
	count := func(skip uint64) (n, ok int) {
		for vid, h := range voters {
			if vid == skip {
				continue
			}
			n++
			if h {
				ok++
			}
		}
		return n, ok
	}
	n, ok := count(0)
	if ok < n/2+1 {
		return fmt.Errorf("only %d of %d voters are healthy, no quorum to change membership: %w", ok, n, ErrQuorumAtRisk)
	}
	n, ok = count(id)
	if n == 0 {
		return fmt.Errorf("it is the last voter: %w", ErrQuorumAtRisk)
	}
	if ok < n/2+1 {
		return fmt.Errorf("%d of the %d remaining voters would be healthy, fewer than a majority: %w", ok, n, ErrQuorumAtRisk)
	}
	return nil
}

func memberHealthy(ctx context.Context, cli *clientv3.Client, m Member) bool {
	for _, ep := range m.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, HealthTimeout)
		resp, err := cli.Status(sctx, ep)
		cancel()
		if err == nil && len(resp.Errors) == 0 {
			return true
		}
	}
	return false
}
