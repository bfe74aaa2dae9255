package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EtcdOptions configures the embedded etcd member.
type EtcdOptions struct {
	Name         string        // member name
	Dir          string        // data dir, e.g. <data-dir>/etcd
	ClientURL    string        // listen and advertise URL for clients
	PeerURL      string        // listen and advertise URL for peers
	StartTimeout time.Duration // how long to wait for the member to be ready
	Logger       *zap.Logger
}

// Etcd is the etcd this host uses: a running embedded etcd member plus a
// client connected to it (StartEtcd, StartClusterEtcd), or, on an etcd
// client-only host, just a client of the cluster's voters (ConnectCluster).
// Everything that only needs the etcd API takes Client(); the member's own
// facts (Err, IsLeader, MemberID) answer "none" on a client-only host.
//
// Lifecycle: StartEtcd returns once the member serves requests (or fails);
// Err reports a fatal server error; Stopped is closed when the server
// stopped, on its own (StopErr says why: ErrMemberRemoved) or by Close;
// Close stops the client, then the member.
type Etcd struct {
	srv       *embed.Etcd
	client    *clientv3.Client
	clientURL string
	closeOnce sync.Once
	stopOnce  sync.Once // stops the member (srv)
	state     *memberState
}

// ErrMemberRemoved means this host's etcd member was removed from the
// cluster (`m3sup remove-host` on another host): etcd refuses to run it
// again ("the member has been permanently removed from the cluster"), and
// its data dir is of no use any more.
var ErrMemberRemoved = errors.New("this etcd member was removed from the cluster")

// memberState is what m3sup learns from its member's log: that Close
// began (the member's entries are dropped from then on), or that etcd
// stopped the member because it was removed from the cluster. etcd v3.6
// surfaces neither through embed.Etcd.Err(): its raft transport reports
// the removal (rafthttp's unexported errMemberRemoved, or the same text
// when the member applies its own removal) to the server loop, which logs
// it as "server error" and stops.
type memberState struct {
	closing atomic.Bool
	removed atomic.Bool
}

// removedText is how etcd words a member's removal in its errors.
const removedText = "the member has been permanently removed from the cluster"

// StartEtcd starts a member that serves plain HTTP without authentication
// and waits until it is ready to serve, the timeout expires or ctx is
// cancelled. Anyone who can reach its ports owns it: m3sup itself runs
// every member over mutual TLS (StartClusterEtcd, also for a single node);
// this one is for tests (internal/etcdtest).
func StartEtcd(ctx context.Context, o EtcdOptions) (*Etcd, error) {
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	cu, err := url.Parse(o.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd client URL %q: %w", o.ClientURL, err)
	}
	pu, err := url.Parse(o.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd peer URL %q: %w", o.PeerURL, err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd: create data dir: %w", err)
	}

	cfg, st := memberConfig(o.Name, o.Dir, cu, pu, o.Logger)
	cfg.InitialCluster = fmt.Sprintf("%s=%s", o.Name, pu.String())
	// A lone member elects itself within a randomized 1..(election ticks)
	// after start; five 100 ms ticks keep a (re)start quick while the idle
	// tick costs half of what 50 ms ticks cost (measured: ~0.4% vs ~0.7% of
	// a core for an idle member).
	cfg.TickMs = 100
	cfg.ElectionMs = 500

	srv, err := startMember(ctx, cfg, cu, pu, o.StartTimeout, st)
	if err != nil {
		return nil, err
	}

	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{cu.String()},
		DialTimeout: 5 * time.Second,
		Logger:      o.Logger.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("connect to embedded etcd at %s: %w", cu, err)
	}
	return &Etcd{srv: srv, client: client, clientURL: cu.String(), state: st}, nil
}

// Client returns the client connected to this member (or, on a client-only
// host, to the cluster's voters).
func (e *Etcd) Client() *clientv3.Client { return e.client }

// Member reports whether this host runs an etcd member; false on an etcd
// client-only host.
func (e *Etcd) Member() bool { return e.srv != nil }

// Endpoint returns the member's client URL; on a client-only host, the
// first voter endpoint the client knows.
func (e *Etcd) Endpoint() string {
	if e.srv == nil {
		if eps := e.client.Endpoints(); len(eps) > 0 {
			return eps[0]
		}
	}
	return e.clientURL
}

// HostPort returns the client URL's host:port (what M3's config wants).
func (e *Etcd) HostPort() string {
	u, _ := url.Parse(e.clientURL)
	return u.Host
}

// Err reports fatal server errors; never, without a member (a nil channel).
func (e *Etcd) Err() <-chan error {
	if e.srv == nil {
		return nil
	}
	return e.srv.Err()
}

// Stopped is closed once the member's server has stopped: by Close, or on
// its own (StopErr); never without a member.
func (e *Etcd) Stopped() <-chan struct{} {
	if e.srv == nil {
		return nil
	}
	return e.srv.Server.StopNotify()
}

// StopErr says why the member's server stopped, or is stopping, on its
// own: ErrMemberRemoved when etcd stops it because it was removed from the
// cluster, else a generic error once it stopped; nil while it runs, after
// Close, and without a member. Ask it too when Err reports an error: a
// removed member's listeners fail as its server stops.
func (e *Etcd) StopErr() error {
	if e.srv == nil || e.state.closing.Load() {
		return nil
	}
	select {
	case <-e.srv.Server.StopNotify():
		return stopErr(e.state)
	default:
		if e.state.removed.Load() {
			return ErrMemberRemoved
		}
		return nil
	}
}

// StopRequested reports whether m3sup itself stopped the member (Close or
// StopMember), so its stop is no failure.
func (e *Etcd) StopRequested() bool {
	return e.state != nil && e.state.closing.Load()
}

func stopErr(st *memberState) error {
	if st.removed.Load() {
		return ErrMemberRemoved
	}
	return errors.New("the etcd server stopped (see etcd's log)")
}

// IsLeader reports whether this member leads the raft group; false without
// a member.
func (e *Etcd) IsLeader() bool {
	return e.srv != nil && e.srv.Server.Leader() == e.srv.Server.MemberID()
}

// Close stops, in order, the client and the member. It is idempotent.
func (e *Etcd) Close() {
	e.closeOnce.Do(func() {
		_ = e.client.Close()
		e.StopMember()
	})
}

// StopMember stops this host's member and keeps the client, which must by
// then point at other members. A member removed from the cluster must stop
// serving at once: etcd panics on a Status request that reaches a member
// no longer in the membership. Idempotent; a no-op without a member.
func (e *Etcd) StopMember() {
	if e.srv == nil {
		return
	}
	e.stopOnce.Do(func() {
		if e.state != nil {
			e.state.closing.Store(true)
		}
		e.srv.Close()
	})
}

// memberConfig is the embed config every m3sup member shares: its URLs,
// m3sup's logger (etcd's info chatter off unless m3sup logs at debug,
// silent once Close began, watched for the member's removal: the returned
// memberState), no metrics listener, periodic compaction.
func memberConfig(name, dir string, cu, pu *url.URL, logger *zap.Logger) (*embed.Config, *memberState) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialClusterToken = "m3sup"
	// No separate metrics listener; m3sup exports its own metrics.
	cfg.ListenMetricsUrls = nil
	cfg.Metrics = "basic"
	etcdLog := logger.Named("etcd")
	if !logger.Core().Enabled(zap.DebugLevel) {
		etcdLog = etcdLog.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}
	st := &memberState{}
	etcdLog = etcdLog.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return &memberLog{Core: c, st: st} }))
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(etcdLog)
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	// A single edge host does not need a large in-memory snapshot backlog.
	cfg.SnapshotCount = 10000
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	return cfg, st
}

// startMember starts the member and waits until it serves, fails, stops
// (ErrMemberRemoved when etcd reports it removed from the cluster), the
// timeout passes or ctx ends.
func startMember(ctx context.Context, cfg *embed.Config, cu, pu *url.URL, timeout time.Duration, st *memberState) (*embed.Etcd, error) {
	srv, err := embed.StartEtcd(cfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("start etcd: a client or peer address (%s, %s) is already in use by another process: %w", cu.Host, pu.Host, err)
	}
	if err != nil {
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.Dir, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-srv.Server.ReadyNotify():
		return srv, nil
	case err := <-srv.Err():
		srv.Close()
		if st.removed.Load() { // its listeners fail as its server stops
			err = ErrMemberRemoved
		}
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.Dir, err)
	case <-srv.Server.StopNotify():
		srv.Close()
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.Dir, stopErr(st))
	case <-timer.C:
		srv.Close()
		return nil, fmt.Errorf("start etcd: not ready after %s (data dir %s)", timeout, cfg.Dir)
	case <-ctx.Done():
		srv.Close()
		return nil, fmt.Errorf("start etcd: %w", ctx.Err())
	}
}

// memberLog wraps the member's log core: it drops etcd's entries once an
// orderly Close began (etcd reports its own listeners closing as errors,
// "use of closed network connection", which would alarm a reader of a
// clean shutdown), and it watches warnings and errors, whatever m3sup's
// log level, for the member's removal.
type memberLog struct {
	zapcore.Core
	st *memberState
}

func (l *memberLog) Enabled(lvl zapcore.Level) bool {
	return lvl >= zapcore.WarnLevel || l.Core.Enabled(lvl)
}

func (l *memberLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if l.st.closing.Load() && e.Level < zapcore.DPanicLevel {
		return ce
	}
	if e.Level >= zapcore.WarnLevel {
		ce = ce.AddCore(e, removalWatch{l.st})
	}
	return l.Core.Check(e, ce)
}

func (l *memberLog) With(f []zapcore.Field) zapcore.Core {
	return &memberLog{Core: l.Core.With(f), st: l.st}
}

// removalWatch is the core memberLog adds to warnings and errors: an
// entry that says the member was removed marks it so.
type removalWatch struct{ st *memberState }

func (w removalWatch) Enabled(zapcore.Level) bool        { return true }
func (w removalWatch) With([]zapcore.Field) zapcore.Core { return w }
func (w removalWatch) Sync() error                       { return nil }

func (w removalWatch) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, w)
}

func (w removalWatch) Write(e zapcore.Entry, fields []zapcore.Field) error {
	removed := strings.Contains(e.Message, removedText)
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType && strings.Contains(err.Error(), removedText) {
			removed = true
		}
	}
	if removed {
		w.st.removed.Store(true)
	}
	return nil
}
