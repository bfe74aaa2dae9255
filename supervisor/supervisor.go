// Package supervisor wires m3sup's daemon: the embedded etcd, the container
// runtime, the node agent, the M3 cluster automation, the local API, the
// data dir's disk monitor and the optional metrics listener, as actors of
// one oklog/run group with an orderly shutdown.
package supervisor

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/backup"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/disk"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/logrotate"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/member"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// Options configures a Supervisor.
type Options struct {
	Config  config.Config
	Logger  *zap.Logger
	Version string
	// KeepRunning leaves M3's containers running on shutdown so the next
	// m3sup adopts them.
	KeepRunning bool
	// Progress receives a human progress bar for downloads (a terminal), or nil.
	Progress io.Writer
	// Bundles are air-gap bundles to import before anything is fetched;
	// TrustedKeys, when set, must have signed them (and any bundle dropped
	// into <dataDir>/bundles).
	Bundles     []string
	TrustedKeys []ed25519.PublicKey
	// Notifier tells systemd about readiness, progress and liveness; nil
	// (or one without NOTIFY_SOCKET) does nothing.
	Notifier *systemd.Notifier
	// Join, when its URL is set, joins the cluster of another host before
	// anything starts (multi-host mode).
	Join JoinOptions
	// CPUProbe checks whether M3's per-core queues are safe on this host;
	// nil uses cpucore.Probe (tests inject their own).
	CPUProbe func() cpucore.Result
}

// JoinOptions asks a host to join an existing cluster.
type JoinOptions struct {
	URL   string // https://host:port of the first host's join endpoint
	Token string // K10<ca-hash>::<id>.<secret>
}

// Supervisor is the daemon. Create with New, then Run once.
type Supervisor struct {
	opts Options
	cfg  config.Config
	log  *zap.Logger
	// status is what this host says about itself: phase, readiness,
	// systemd's notifications, the status API and the metrics.
	status *hostStatus

	noFileWarn sync.Once
	// cpuGuard is the CPU-core guard decision, made once in runNode.
	cpuGuard atomic.Pointer[cpuGuard]

	// parts is what runNode has brought up so far.
	parts parts
	// tokens serves `m3sup token` once this host holds the CA and etcd.
	tokens join.TokenService
	// leave serves `m3sup leave` and `m3sup remove-host`.
	leave *leaveAPI
	// art fetches and caches the releases and images, and imports bundles.
	art *artifacts
}

// New returns a supervisor; it does no I/O.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Supervisor{opts: opts, cfg: opts.Config, log: opts.Logger,
		status: newHostStatus(opts.Config.NodeName, opts.Version, opts.Config.Runtime.Containerd.Namespace, opts.Notifier, opts.Logger)}
	s.art = newArtifacts(opts, s.status.metrics)
	s.leave = &leaveAPI{Node: s.cfg.NodeName, MultiHost: s.multiHost}
	return s
}

// ErrNotRoot is returned when m3sup runs without root privileges.
var ErrNotRoot = errors.New("m3sup run must run as root (it manages containerd, mounts and rlimits)")

// Run starts everything, keeps it running until ctx is done or a part fails
// fatally, then shuts down in order: components, runtime, etcd, API.
func (s *Supervisor) Run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	dirs := layout{root: s.cfg.DataDir}
	if s.opts.Join.URL == "" { // a host that joined before starts as one
		u, err := join.Resume(dirs.clusterFile(), s.log)
		if err != nil {
			return err
		}
		s.opts.Join.URL = u
	}
	if c := s.cfg.Cluster; !s.multiHost() && !(c.HasRole(config.RoleDBNode) && c.HasRole(config.RoleCoordinator)) {
		return fmt.Errorf("cluster.roles %v: a single-node m3sup runs both dbnode and coordinator; a host with one role belongs to a multi-host cluster (cluster.joinListen on the first host, --join on the others)", c.Roles)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// An existing data dir (made by an older m3sup, by hand, or by a tool
	// with a looser umask) is tightened at every start: it holds the etcd
	// data, the PKI and the release m3sup runs as root.
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("restrict data dir %s to 0700: %w", s.cfg.DataDir, err)
	}
	// A host that left the cluster never starts again on the same data.
	if err := cluster.CheckNotLeft(s.cfg.DataDir); err != nil {
		return err
	}
	// A joining host talks to the cluster before it starts anything but
	// its API (so `m3sup status` and systemd show a join that waits its
	// turn): a refused join leaves nothing running.
	joiner := &join.Joiner{URL: s.opts.Join.URL, Token: s.opts.Join.Token, NodeName: s.cfg.NodeName,
		Advertise: s.cfg.Cluster.Advertise, EtcdURLs: s.memberOptions().AdvertisedURLs,
		PKIDir: dirs.pki(), ClusterFile: dirs.clusterFile(), Logger: s.log,
		Timeout:  s.cfg.Cluster.JoinTimeout.D(),
		Progress: func(msg string) { s.status.setPhase(PhaseJoining, msg) }}
	ln, err := api.Listen(s.cfg.API.Socket)
	if err != nil {
		return err
	}
	ctl := newControlAPI(s)
	etcd := func() *store.Etcd { return s.parts.load().etcd }
	bak := backupAPI{Etcd: etcd, MultiHost: s.multiHost(),
		Meta: backup.Meta{Node: s.cfg.NodeName, Version: s.opts.Version, TempDir: s.cfg.DataDir}}
	srv := api.NewServer(api.Handlers{Provider: s.status, Controller: ctl, Tokens: &s.tokens, Leaver: s.leave, HostRemover: s.leave,
		Backupper: bak, Metrics: s.status.metrics.registry}, s.log)

	var g run.Group
	// The data dir's filesystem is watched from the start: a full disk is
	// as likely to stop etcd from starting as to crash M3 later.
	dm := &disk.Monitor{Path: s.cfg.DataDir, Thresholds: DiskThresholds(s.cfg.Disk), Log: s.log.Named("disk")}
	s.status.connectDisk(dm)
	diskCtx, cancelDisk := context.WithCancel(ctx)
	g.Add(func() error { return dm.Run(diskCtx) }, func(error) { cancelDisk() })
	if addr := s.cfg.Metrics.ListenAddress(); addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			_ = ln.Close()
			_ = os.Remove(s.cfg.API.Socket)
			return fmt.Errorf("listen for Prometheus on %s (metrics.listen): %w", addr, err)
		}
		msrv := api.NewMetricsServer(s.status.metrics.registry, s.log)
		s.log.Info("serving metrics for Prometheus", zap.String("address", mln.Addr().String()))
		g.Add(func() error { return msrv.Serve(mln) }, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = msrv.Shutdown(ctx)
			_ = mln.Close()
		})
	}
	if n := s.opts.Notifier; n != nil {
		wctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.Watchdog(wctx, s.status.alive) }, func(error) { cancel() })
	}
	g.Add(func() error { return srv.Serve(ln) }, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = ln.Close()
		_ = os.Remove(s.cfg.API.Socket)
	})
	nodeCtx, cancelNode := context.WithCancel(ctx)
	g.Add(func() error {
		if s.opts.Join.URL != "" {
			if _, err := os.Stat(dirs.clusterFile()); err != nil {
				s.status.setPhase(PhaseJoining, s.opts.Join.URL)
			}
		}
		if err := joiner.Join(nodeCtx); err != nil {
			return err
		}
		return s.runNode(nodeCtx)
	}, func(error) { cancelNode() })
	return g.Run()
}

// newControlAPI wires this daemon's api.Controller: the store and the agent
// as they come up, the running spec, and rendering for predict.
func newControlAPI(s *Supervisor) *controlAPI {
	return &controlAPI{Node: s.cfg.NodeName, DataDir: s.cfg.DataDir, Roles: s.cfg.Cluster.Roles,
		Store:   func() *store.Store { return s.parts.load().store },
		Agent:   func() *agent.Agent { return s.parts.load().agent },
		Running: s.status.runningSpec,
		Renderer: func(r spec.Release) (renderFunc, bool) {
			rel, ok := s.art.cachedRelease(r)
			etcd := s.parts.load().etcd
			return func(desired spec.Cluster, controls spec.HostControls) ([]agent.Component, error) {
				out, err := s.render(s.renderInput(desired, controls, rel, etcd.HostPort()))
				return out.Components, err
			}, ok
		}}
}

// multiHost reports whether this host runs in multi-host mode.
func (s *Supervisor) multiHost() bool { return s.cfg.Cluster.MultiHost(s.opts.Join.URL) }

// memberOptions says which etcd this host runs (member.Start).
func (s *Supervisor) memberOptions() member.Options {
	cfg, dirs := s.cfg, layout{root: s.cfg.DataDir}
	return member.Options{
		NodeName: cfg.NodeName, EtcdName: cfg.Etcd.Name,
		ClientURL: cfg.Etcd.ClientURL, PeerURL: cfg.Etcd.PeerURL,
		MultiHost: s.multiHost(), Joined: s.opts.Join.URL != "",
		Advertise: cfg.Cluster.Advertise, JoinListen: cfg.Cluster.JoinListen, MaxVoters: cfg.Cluster.MaxVoters,
		StartTimeout: cfg.Etcd.StartTimeout.D(),
		CertTTL:      cfg.Cluster.CertLifetime.D(),
		Paths:        member.Paths{PKI: dirs.pki(), M3PKI: dirs.m3PKI(), Etcd: dirs.etcd(), ClusterFile: dirs.clusterFile()},
		Logger:       s.log,
		Progress:     func(msg string) { s.status.setPhase(PhaseStartingEtcd, msg) },
	}
}

// runNode brings the host up in order, then runs the long-lived actors.
func (s *Supervisor) runNode(ctx context.Context) error {
	cfg := s.cfg
	dirs := layout{root: cfg.DataDir}
	// Decided before anything renders a component: the guard shapes
	// m3dbnode's spec and so its hash.
	s.status.connectCPUGuard(s.decideCPUGuard().decision)
	s.status.stopsWith(ctx)

	// Bundles first: they may carry the release and containerd itself.
	bun, err := s.art.importBundles(ctx)
	if err != nil {
		return err
	}
	if bun.releaseChecksum != "" { // the fetch finds the bundled release in the cache
		s.cfg.Release.Checksum = bun.releaseChecksum
	}
	ctdBinary, ctdPath := bun.ctdBinary, bun.pathDirs
	if ctdBinary == "" {
		ctdBinary = cfg.Runtime.Containerd.Binary
	}
	// containerd does not need etcd: start both at once.
	rt := containerd.New(containerd.Options{
		Address:   cfg.Runtime.Containerd.Address,
		Mode:      containerd.Mode(cfg.Runtime.Containerd.Mode),
		Namespace: cfg.Runtime.Containerd.Namespace,
		StateDir:  dirs.containerd(),
		SocketDir: filepath.Dir(cfg.API.Socket),
		Binary:    ctdBinary,
		PathDirs:  ctdPath,
		Logger:    s.log.Named("containerd"),
	})
	rtStart := make(chan error, 1)
	go func() { rtStart <- rt.Start(ctx) }() // joined by runtimeStarted on every path
	runtimeStarted := sync.OnceValue(func() error { return <-rtStart })
	// Shutdown order: the components (the agent, below), then the
	// runtime, then etcd. etcd is the cluster's record: whatever stops
	// before it (the permit, the registry lease, a leave) can still write.
	closeRuntime := sync.OnceFunc(func() {
		_ = runtimeStarted()
		_ = rt.Close()
	})
	defer closeRuntime()

	mo := s.memberOptions()
	s.status.setPhase(PhaseStartingEtcd, mo.Target())
	mem, err := member.Start(ctx, mo)
	if errors.Is(err, store.ErrMemberRemoved) { // removed with `m3sup remove-host` while it was down
		return mo.Removed(ctx, s.leftRecord(), err)
	}
	if err != nil {
		return err
	}
	etcd := mem.Etcd()
	defer func() {
		closeRuntime()
		mem.Close()
	}()
	// A host removed with `m3sup remove-host` never registers or starts M3
	// again on the same data.
	if s.multiHost() {
		if err := s.leftRecord().CheckNotRemoved(ctx, etcd.Client()); err != nil {
			return err
		}
	}
	// The join endpoint (the host that holds the CA, multi-host mode) serves
	// as soon as etcd does, before M3 is fetched, and stops before etcd.
	var joinDone chan error
	if execute, interrupt, err := mem.JoinServer(); err != nil {
		return err
	} else if execute != nil {
		joinDone = make(chan error, 1)
		go func() { joinDone <- execute() }()
		defer interrupt(nil)
	}
	st := store.New(etcd.Client())
	s.parts.update(func(u *up) { u.etcd, u.store, u.member, u.m3Etcd = etcd, st, mem, mem.M3Etcd() })
	s.status.connectEtcd(etcd, s.multiHost())
	s.status.connectCerts(mem.Certs)
	if ca := mem.CA(); ca != nil {
		s.tokens.Enable(etcd.Client(), ca)
	}

	inForce, err := s.loadOrSeedSpec(ctx, st)
	if err != nil {
		return err
	}
	// The watch reports the current state first, then every change.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var lastWatchErr string // the watch's goroutine only
	changes := st.Watch(watchCtx, cfg.NodeName, inForce, func(err error) {
		if err.Error() != lastWatchErr { // each distinct failure once
			lastWatchErr = err.Error()
			s.log.Error("cannot read the desired state from etcd; retrying every second", zap.Error(err))
		}
	})
	defer func() { // the watch ends, and is joined, before etcd closes
		stopWatch()
		for range changes {
		}
	}()
	var first store.Change
	firstWait := time.NewTimer(cfg.Etcd.StartTimeout.D())
	defer firstWait.Stop()
	select {
	case first = <-changes:
	case <-firstWait.C:
		return fmt.Errorf("no desired state read from etcd (%s, %s) within %s (see the error above)",
			store.ClusterKey, store.ControlsKey(cfg.NodeName), cfg.Etcd.StartTimeout.D())
	case <-ctx.Done():
		return ctx.Err()
	}
	s.status.noteChange(first)
	desired := first.Cluster

	s.status.setPhase(PhaseStartingRuntime, "")
	if err := runtimeStarted(); err != nil {
		return err
	}
	s.status.connectRuntime(rt)
	s.art.setRuntime(ctx, rt)
	info := rt.Info()
	s.log.Info("container runtime ready", zap.String("mode", string(info.Mode)), zap.String("address", info.Address), zap.String("version", info.Version))

	client := &m3.Client{BaseURL: "http://" + dialAddr(cfg.Coordinator.ListenAddress), Env: desired.M3.Env, Zone: desired.M3.Zone}
	if !cfg.Cluster.HasRole(config.RoleCoordinator) {
		// No coordinator here: drive M3 through a registered peer's.
		client.BaseURL, client.Endpoint = "", (&cluster.CoordinatorPicker{Cli: etcd.Client()}).Pick
	}
	var nodes []string // the local m3dbnode, if this host runs one
	if cfg.Cluster.HasRole(config.RoleDBNode) {
		nodes = []string{"http://" + dialAddr(cfg.DBNode.HTTPNodeListenAddress)}
	}
	local := cluster.Local{Node: cfg.NodeName, DataDir: cfg.DataDir, JoinURL: s.leftRecord().JoinURL,
		Etcd: etcd.Client(), M3: client, Admin: etcdAdmin{cli: etcd.Client()}, Logger: s.log,
		Progress: func(msg string) { s.status.setPhase(PhaseBootstrapping, msg) }}
	roll := cluster.NewRollout(local, cluster.NewPermit(local), cfg.Cluster.RolloutDeadline.D())
	if err := roll.LoadLastGood(); err != nil {
		s.log.Warn("no last good m3dbnode spec to revert to", zap.Error(err))
	}
	s.parts.update(func(u *up) { u.m3, u.nodes, u.roll = client, nodes, roll })
	s.status.connectM3(client, nodes, roll)
	var leaver *cluster.Leaver
	if s.multiHost() {
		leaver = s.connectLeave(local, rt, etcd, mem.CA() != nil)
	}

	s.status.setPhase(PhaseFetching, desired.Release.URL)
	comps, err := s.desiredComponents(ctx, first, etcd.HostPort())
	if err != nil {
		return err
	}
	ag := agent.New(rt, agent.Options{
		Logger:      s.log.Named("agent"),
		KeepRunning: s.opts.KeepRunning,
		OnChange: func(st agent.Status) {
			s.status.componentChanged(st)
			roll.LookNow()
		},
		OnRestart:   s.status.metrics.restarted,
		CrashReason: m3.CrashReason,
	})
	s.parts.update(func(u *up) { u.agent = ag })
	s.status.connectAgent(ag)
	s.status.setPhase(PhaseStarting, "m3dbnode and m3coordinator")

	clusterUpdates := make(chan spec.Cluster, 1)
	certsRenewed := make(chan struct{}, 1)
	var g run.Group
	{ // certificate renewal: every certificate this host issued itself
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			return mem.RenewCerts(ctx, rand.Float64, func() {
				select { // M3 reads its certificate once: render again
				case certsRenewed <- struct{}{}:
				default:
				}
			})
		}, func(error) { cancel() })
	}
	if joinDone != nil { // the join endpoint, serving since etcd came up
		stop := make(chan struct{})
		g.Add(func() error {
			select {
			case err := <-joinDone:
				return err
			case <-stop:
				return nil
			}
		}, func(error) { close(stop) })
	}
	{ // the embedded etcd: a fatal server error, or its stop (this member
		// was removed from the cluster), stops the daemon
		stop := make(chan struct{})
		g.Add(func() error {
			var err error
			select {
			case err = <-etcd.Err():
			case <-etcd.Stopped():
			case <-stop:
				return nil
			}
			if etcd.StopRequested() { // a leave stopped the member
				<-stop
				return nil
			}
			if serr := etcd.StopErr(); serr != nil {
				err = serr
			} else if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("embedded etcd stopped: %w", err)
		}, func(error) { close(stop) })
	}
	{ // the container runtime (restarts a managed containerd that dies)
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return rt.Supervise(ctx) }, func(error) { cancel() })
	}
	{ // the node agent
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return ag.Run(ctx, comps) }, func(error) {
			s.status.markShuttingDown() // before the agent stops anything
			cancel()
		})
	}
	{ // desired-state changes → the agent and the cluster controller; its
		// tick is the watchdog's proof of life
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			tick := time.NewTicker(10 * time.Second)
			defer tick.Stop()
			last, applied := first, true
			for {
				s.status.heartbeat()
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
					if !applied { // e.g. a full data dir refused the configs: try again
						applied = s.applyChange(ctx, last, etcd.HostPort(), ag, clusterUpdates)
					}
					s.status.checkCerts()
				case <-certsRenewed: // M3's certificate changed: its spec hash did too
					s.status.certsRenewed()
					applied = s.applyChange(ctx, last, etcd.HostPort(), ag, clusterUpdates)
				case <-roll.Replans(): // a rollout halted or failed here: render again
					applied = s.applyChange(ctx, last, etcd.HostPort(), ag, clusterUpdates)
				case ch, ok := <-changes:
					if !ok {
						return nil
					}
					last = ch
					s.status.noteChange(ch)
					applied = s.applyChange(ctx, ch, etcd.HostPort(), ag, clusterUpdates)
				}
			}
		}, func(error) { cancel() })
	}
	{ // rolling changes: host state, last good spec, revert, permit release
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return roll.Run(ctx, ag) }, func(error) { cancel() })
	}
	if s.multiHost() && !etcd.Member() {
		s.log.Info("no scheduled backups on a client-only host: " + errClientOnlyBackup)
	} else { // scheduled backups of the cluster's brain
		ctx, cancel := context.WithCancel(ctx)
		sch := &backup.Scheduler{Dir: filepath.Join(cfg.DataDir, "backups"), Interval: cfg.Backup.Interval.D(),
			Keep: cfg.Backup.Keep, Logger: s.log.Named("backup")}
		meta := backup.Meta{Node: cfg.NodeName, Version: s.opts.Version, TempDir: cfg.DataDir}
		g.Add(func() error { return sch.Run(ctx, etcd.Client(), meta) }, func(error) { cancel() })
	}
	{ // air-gap bundles dropped into <dataDir>/bundles
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return s.art.watchBundles(ctx) }, func(error) { cancel() })
	}
	{ // component logs: rotated by size, by copy and truncate
		ctx, cancel := context.WithCancel(ctx)
		l, lay := cfg.ComponentLogs, layout{root: cfg.DataDir}
		rot := &logrotate.Rotator{
			Paths:  []string{lay.componentLog(DBNode), lay.componentLog(Coordinator)},
			Policy: logrotate.Policy{MaxSize: l.MaxSize, MaxFiles: l.MaxFiles, Compress: l.Compress},
			Logger: s.log.Named("logrotate"),
		}
		g.Add(func() error { return rot.Run(ctx) }, func(error) { cancel() })
	}
	{ // cluster automation
		setup := &m3Setup{M3: client, Nodes: nodes, Node: cfg.NodeName, DBNodeListen: cfg.DBNode.ListenAddress,
			MultiHost: s.multiHost(), ReadyTimeout: cfg.Cluster.ReadyTimeout.D(), Phase: s.status.setPhase, Logger: s.log}
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if s.multiHost() {
				return s.runMultiHost(ctx, local, mem.CA() != nil, desired, clusterUpdates, setup)
			}
			return setup.Run(ctx, desired, clusterUpdates)
		}, func(error) { cancel() })
	}
	if leaver != nil { // `m3sup leave`: returns cluster.ErrLeft once M3 let this host go
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return leaver.Run(ctx) }, func(error) { cancel() })
	}
	err = g.Run()
	if errors.Is(err, cluster.ErrLeft) {
		return leaver.Finish(ctx)
	}
	if leaver != nil {
		leaver.Stopped(err)
	}
	s.status.setPhase(PhaseStopping, "")
	if errors.Is(err, store.ErrMemberRemoved) { // removed while cut off from the cluster
		return mo.Removed(ctx, s.leftRecord(), err)
	}
	return err
}

// loadOrSeedSpec returns the desired cluster spec from etcd. The config
// file's cluster settings are written there on first boot and whenever the
// file's settings change; otherwise the stored spec stays in force.
//
// A host that joined another one never seeds: the cluster's desired state
// belongs to the cluster (the first host seeds it, `m3sup apply` changes
// it), and a joiner's own file must not overwrite it. It waits for the spec
// instead.
func (s *Supervisor) loadOrSeedSpec(ctx context.Context, st *store.Store) (spec.Cluster, error) {
	if s.opts.Join.URL != "" {
		return s.waitSpec(ctx, st)
	}
	c := SpecFromConfig(s.cfg)
	b, err := json.Marshal(c)
	if err != nil {
		return c, fmt.Errorf("encode cluster spec: %w", err)
	}
	sum := sha256.Sum256(b)
	cur, written, err := st.Seed(ctx, c, hex.EncodeToString(sum[:]))
	var ve *store.ValueError
	if errors.As(err, &ve) {
		// Someone wrote a spec that does not decode or validate (and the
		// config did not change since it was seeded): run the config's
		// spec; status shows the bad key until `m3sup apply` replaces it.
		s.status.noteStateErrors([]*store.ValueError{ve})
		s.log.Warn("running the config file's cluster spec until a valid one is applied", zap.String("key", ve.Key))
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if written {
		s.log.Info("cluster spec written from the config")
	} else {
		s.log.Info("using the cluster spec stored in etcd")
	}
	return cur, nil
}

// waitSpec reads the cluster spec the first host seeded, waiting for it
// (up to etcd's start timeout) if this host joined before it was written.
func (s *Supervisor) waitSpec(ctx context.Context, st *store.Store) (spec.Cluster, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Etcd.StartTimeout.D())
	defer cancel()
	for logged := false; ; logged = true {
		c, _, found, err := st.Cluster(ctx)
		if err == nil && found {
			s.log.Info("using the cluster's desired state from etcd (a joined host never seeds it from its config)")
			return c, nil
		}
		if err == nil && !logged {
			s.log.Info("waiting for the first host to write the cluster's desired state")
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not written by the first host")
			}
			return spec.Cluster{}, fmt.Errorf("read the cluster spec %s: %w", store.ClusterKey, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// SpecFromConfig is the cluster spec a config file describes.
func SpecFromConfig(cfg config.Config) spec.Cluster {
	c := spec.Cluster{
		Release: spec.Release{
			Version:              cfg.Release.Version,
			URL:                  cfg.Release.URL,
			Checksum:             cfg.Release.Checksum,
			InsecureSkipChecksum: cfg.Release.InsecureSkipChecksum,
		},
		M3: spec.M3{
			Env:               cfg.Cluster.Env,
			Zone:              cfg.Cluster.Zone,
			NumShards:         cfg.Cluster.NumShards,
			ReplicationFactor: cfg.Cluster.ReplicationFactor,
			IsolationGroup:    cfg.Cluster.IsolationGroup,
		},
		DBNode:      spec.Component{LogLevel: cfg.DBNode.LogLevel, Image: cfg.DBNode.Image},
		Coordinator: spec.Component{LogLevel: cfg.Coordinator.LogLevel, Image: cfg.Coordinator.Image},
	}
	for _, ns := range cfg.Cluster.Namespaces {
		c.M3.Namespaces = append(c.M3.Namespaces, spec.Namespace{
			Name:         ns.Name,
			Retention:    spec.Duration(ns.Retention.D()),
			BlockSize:    spec.Duration(ns.BlockSize.D()),
			BufferPast:   spec.Duration(ns.BufferPast.D()),
			BufferFuture: spec.Duration(ns.BufferFuture.D()),
			IndexEnabled: ns.Indexed(),
		})
	}
	return c
}

// dialAddr turns a listen address into one a local client can dial.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
