package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/disk"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/readiness"
	"github.com/m3sup/m3sup/supervisor/store"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// Phases of the daemon, reported in status.
const (
	PhaseJoining         = "joining"
	PhaseStartingEtcd    = "starting-etcd"
	PhaseStartingRuntime = "starting-runtime"
	PhaseFetching        = "fetching"
	PhaseStarting        = "starting"
	PhaseBootstrapping   = "bootstrapping"
	PhaseReady           = "ready"
	PhaseStopping        = "stopping"
)

// hostStatus is what this host says about itself, in one place: its phase,
// the readiness verdict (package readiness decides), `m3sup status` and
// GET /readyz (it is the api.Provider), systemd's STATUS=, READY=1 and
// watchdog, and the Prometheus metrics.
//
// The daemon reports into it (setPhase, componentChanged, heartbeat,
// noteChange) and connects the parts it shows as they come up (etcd, the
// runtime, M3, the agent); before a part is connected status shows it as
// starting or waiting. It has its own lock and reads nothing of the
// Supervisor.
type hostStatus struct {
	node, version string
	namespace     string // containerd's, shown in status
	log           *zap.Logger
	notifier      *systemd.Notifier // nil: none
	metrics       *metrics

	readyOnce sync.Once
	// beat is when the node loop last proved it is alive (watchdog).
	beat atomic.Int64
	// shuttingDown is set once the daemon's run ends: the components stop.
	// runCtx is the daemon's run; once it is done the daemon shuts down
	// too. Its cancellation happens before the agent sees it, so no
	// component stopping with the daemon is ever judged a degradation.
	shuttingDown atomic.Bool
	runCtx       atomic.Pointer[context.Context]
	// watchdogWhy is why alive last withheld the watchdog ping ("" when it
	// did not).
	watchdogWhy atomic.Pointer[string]
	// publishMu orders publishStatus calls, so systemd never keeps an
	// older verdict than the last one judged.
	publishMu sync.Mutex

	mu      sync.Mutex
	phase   string
	message string
	// ready: M3's cluster set-up finished once (the phase became ready).
	ready bool
	// statusLine is the last STATUS= sent; degraded whether it was sent
	// while M3 was degraded.
	statusLine string
	degraded   bool
	// stateErrs are the values in etcd this host refuses now.
	stateErrs stateErrors
	src       statusSources
	// lastObserved is the last M3 observation status could make.
	lastObserved    m3.Progress
	lastObserveErr  string
	lastObserveFail time.Time
	// certWarned is what the certificate warning last logged was about
	// (checkCerts).
	certWarned string
}

var _ api.Provider = (*hostStatus)(nil)

// statusSources are the parts status reads, each zero until connected.
type statusSources struct {
	etcd      *store.Etcd
	multiHost bool
	runtime   runtimeInfo
	m3        *m3.Client
	nodes     []string // m3dbnode /health URLs
	rollout   rolloutProgress
	agent     cluster.Components
	observer  componentObserver // the agent, when it can tell
	cpuGuard  *cpucore.Decision
	disk      *disk.Monitor
	certs     certSource
}

// componentObserver says whether the agent still watches its components
// (agent.Agent.Observing).
type componentObserver interface {
	Observing(now time.Time, stale time.Duration) error
}

// observeStale is how old a running component's last liveness probe may
// be before the watchdog stops vouching for m3sup: the agent probes every
// 2s, each probe waits at most 2s.
const observeStale = 30 * time.Second

// runtimeInfo is the container runtime as status shows it.
type runtimeInfo interface{ Info() containerd.Info }

// rolloutProgress is the rollout as status shows it (cluster.Rollout).
type rolloutProgress interface {
	Progress(ctx context.Context, multiHost bool, dbHosts []string, comps cluster.Components) (*cluster.RolloutProgress, []error)
}

func newHostStatus(node, version, namespace string, notifier *systemd.Notifier, log *zap.Logger) *hostStatus {
	h := &hostStatus{node: node, version: version, namespace: namespace, notifier: notifier, log: log}
	h.metrics = newMetrics(h)
	return h
}

// connectCPUGuard shows this host's CPU-core guard decision.
func (h *hostStatus) connectCPUGuard(d cpucore.Decision) {
	h.mu.Lock()
	h.src.cpuGuard = &d
	h.mu.Unlock()
}

// connectDisk shows the data dir's filesystem as m samples it.
func (h *hostStatus) connectDisk(m *disk.Monitor) {
	h.mu.Lock()
	h.src.disk = m
	h.mu.Unlock()
}

// connectEtcd shows this host's etcd (and, in multi-host mode, the cluster).
func (h *hostStatus) connectEtcd(e *store.Etcd, multiHost bool) {
	h.mu.Lock()
	h.src.etcd, h.src.multiHost = e, multiHost
	h.mu.Unlock()
}

// connectRuntime shows the container runtime.
func (h *hostStatus) connectRuntime(rt runtimeInfo) {
	h.mu.Lock()
	h.src.runtime = rt
	h.mu.Unlock()
}

// connectM3 shows M3 as client and the local m3dbnodes (nodes) see it, and
// the rollout's progress.
func (h *hostStatus) connectM3(client *m3.Client, nodes []string, roll rolloutProgress) {
	h.mu.Lock()
	h.src.m3, h.src.nodes, h.src.rollout = client, nodes, roll
	h.mu.Unlock()
}

// connectAgent shows the local components.
func (h *hostStatus) connectAgent(ag cluster.Components) {
	h.mu.Lock()
	h.src.agent = ag
	h.src.observer, _ = ag.(componentObserver)
	h.mu.Unlock()
}

func (h *hostStatus) sources() statusSources {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.src
}

// setPhase records the daemon's phase and message: both go to systemd's
// STATUS=, and a new phase also to the log. PhaseReady means M3's cluster
// set-up finished: from then on the host is ready or degraded.
func (h *hostStatus) setPhase(phase, msg string) {
	h.mu.Lock()
	changed := h.phase != phase
	same := !changed && h.message == msg
	h.phase, h.message = phase, msg
	if phase == PhaseReady {
		h.ready = true
	}
	h.mu.Unlock()
	h.heartbeat()
	if same {
		return
	}
	h.publishStatus()
	if !changed {
		return
	}
	h.log.Info(phaseLine(phase, msg))
	switch phase {
	case PhaseReady:
		h.notifyReady()
	case PhaseStopping:
		_ = h.notifier.Stopping()
	}
}

// setMessage changes the phase's message only (status; systemd's STATUS=
// at the next publish).
func (h *hostStatus) setMessage(msg string) {
	h.mu.Lock()
	h.message = msg
	h.mu.Unlock()
}

// isReady reports whether M3's cluster set-up finished once.
func (h *hostStatus) isReady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}

// publishStatus sends systemd's STATUS= when its line changed: the phase
// line, or, while M3 is degraded on this host, the readiness verdict. A
// change between ready and degraded is logged once each way.
func (h *hostStatus) publishStatus() {
	h.publishMu.Lock()
	defer h.publishMu.Unlock()
	v := h.verdict()
	stopping := h.isShuttingDown()
	if stopping {
		// Components stopping with the daemon are no degradation.
		v.Degraded = false
	}
	h.mu.Lock()
	line := phaseLine(h.phase, h.message)
	if v.Degraded {
		line = v.Reason
	}
	send := line != h.statusLine
	h.statusLine = line
	wasDegraded := h.degraded
	h.degraded = v.Degraded
	h.mu.Unlock()
	if send {
		_ = h.notifier.Status(line)
	}
	switch {
	case stopping: // nor is the host ready again: nothing to log
	case v.Degraded && !wasDegraded:
		h.log.Warn("M3 is not ready on this host: "+v.Reason, zap.String("component", v.Component))
	case !v.Degraded && wasDegraded:
		h.log.Info("M3 is ready again on this host: every component runs and is healthy")
	}
}

// notifyReady sends READY=1 once: when every component first runs (etcd is
// up, the runtime connected and the first reconcile done) or the cluster is
// ready, whichever comes first.
func (h *hostStatus) notifyReady() {
	h.readyOnce.Do(func() { _ = h.notifier.Ready() })
}

// componentChanged is the agent's OnChange: it feeds metrics and systemd's
// STATUS=, and sends READY=1 once every component first runs.
func (h *hostStatus) componentChanged(st agent.Status) {
	h.metrics.componentChanged(st)
	h.publishStatus()
	ag := h.sources().agent
	if ag == nil || st.State != agent.StateRunning {
		return
	}
	for _, c := range ag.Statuses() {
		if c.State != agent.StateRunning && c.DesiredActive {
			return
		}
	}
	h.notifyReady()
}

// heartbeat records that the node loop is alive.
func (h *hostStatus) heartbeat() { h.beat.Store(time.Now().UnixNano()) }

// markShuttingDown says the daemon's run ended: components that stop now
// do not degrade the host.
func (h *hostStatus) markShuttingDown() { h.shuttingDown.Store(true) }

// stopsWith says the daemon shuts down once ctx is done.
func (h *hostStatus) stopsWith(ctx context.Context) { h.runCtx.Store(&ctx) }

// isShuttingDown reports whether the daemon is shutting down.
func (h *hostStatus) isShuttingDown() bool {
	if h.shuttingDown.Load() {
		return true
	}
	ctx := h.runCtx.Load()
	return ctx != nil && (*ctx).Err() != nil
}

// alive is the watchdog's test: the daemon is starting (bounded by
// TimeoutStartSec), or its node loop beat within the last 30 s and the
// agent still watches every running component (observeStale). A change of
// verdict is logged once, with the reason.
func (h *hostStatus) alive() bool {
	h.mu.Lock()
	phase, obs := h.phase, h.src.observer
	h.mu.Unlock()
	var why string
	switch phase {
	case "", PhaseJoining, PhaseStartingEtcd, PhaseStartingRuntime, PhaseFetching:
	default:
		now := time.Now()
		if beat := time.Unix(0, h.beat.Load()); now.Sub(beat) >= 30*time.Second {
			why = fmt.Sprintf("the reconcile loop has not run for %s", now.Sub(beat).Round(time.Second))
		} else if obs != nil {
			if err := obs.Observing(now, observeStale); err != nil {
				why = err.Error()
			}
		}
	}
	if was := h.watchdogWhy.Swap(&why); was == nil || *was != why {
		switch {
		case why != "":
			h.log.Error("withholding systemd's watchdog ping: " + why + "; systemd restarts m3sup when WatchdogSec passes")
		case was != nil:
			h.log.Info("systemd's watchdog pings again")
		}
	}
	return why == ""
}

func phaseLine(phase, msg string) string {
	if msg == "" {
		return phase
	}
	return phase + ": " + msg
}

// Status implements api.Provider.
func (h *hostStatus) Status(ctx context.Context) api.Status {
	h.mu.Lock()
	st := api.Status{
		Node:    h.node,
		Version: h.version,
		Phase:   h.phase,
		Message: h.message,
	}
	st.StateErrors = slices.Clone(h.stateErrs.cur)
	src := h.src
	h.mu.Unlock()
	if d := src.cpuGuard; d != nil {
		g := *d
		st.CPUCoreGuard = &g
	}
	st.Disk = diskStatus(src.disk)

	st.Etcd.State = "starting"
	if etcd := src.etcd; etcd != nil {
		st.Etcd.State = "running"
		st.Etcd.Endpoint = etcd.Endpoint()
		st.Etcd.Leader = etcd.IsLeader()
		if src.multiHost {
			st.Etcd.Role = "voter"
			if !etcd.Member() {
				st.Etcd.Role = "client" // no member here; Endpoint is a voter's
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if ml, err := etcd.Client().MemberList(cctx); err == nil {
			st.Etcd.Members = len(ml.Members)
		} else {
			st.Etcd.Error = err.Error()
		}
		if sr, err := etcd.Client().Status(cctx, etcd.Endpoint()); err == nil {
			st.Etcd.DBSize = sr.DbSize
		}
		cancel()
	}
	if src.runtime != nil {
		info := src.runtime.Info()
		st.Containerd = api.ContainerdStatus{Mode: string(info.Mode), Address: info.Address, Version: info.Version,
			Connected: info.Connected, PID: info.ManagedPID, Namespace: h.namespace}
	} else {
		st.Containerd.Mode = "starting"
	}
	st.M3.Phase = "waiting"
	if src.m3 != nil {
		p, errText := h.observeM3Status(ctx)
		st.M3 = m3Status(p, errText)
		if h.isReady() {
			st.M3.Phase = "ready"
		}
	}
	if src.etcd != nil && src.multiHost {
		st.Cluster = clusterStatus(ctx, src.etcd.Client())
	}
	if src.etcd != nil && src.rollout != nil {
		st.Rollout = rolloutStatus(ctx, src.rollout, st.Cluster, src.agent)
	}
	// Last: the components' state as of now, not as of before the M3 look.
	if src.agent != nil {
		st.Components = src.agent.Statuses()
	}
	st.Readiness = h.judge(st.Components)
	st.Ready = st.Readiness.Ready
	st.Certs, _ = h.certs()
	return st
}

// Ready implements api.Provider: the cluster accepts writes when bootstrap
// finished and, right now, the coordinator answers, every shard is AVAILABLE,
// every node is bootstrapped and every namespace is ready.
func (h *hostStatus) Ready(ctx context.Context) error {
	if v := h.verdict(); !v.Ready {
		return errors.New(v.Reason)
	}
	h.mu.Lock()
	client, nodes, phase := h.src.m3, h.src.nodes, h.phase
	h.mu.Unlock()
	if client == nil {
		return fmt.Errorf("phase %s", phase)
	}
	p, err := client.Observe(ctx, nodes)
	if err != nil {
		return err
	}
	// The one M3 judgement (m3.Observe's phase): placement, every shard
	// AVAILABLE, every node bootstrapped, every namespace ready.
	if p.Phase != m3.PhaseReady {
		return fmt.Errorf("%s: %s", p.Phase, p.Message)
	}
	return nil
}

// verdict is whether this host serves M3 now (see package readiness).
func (h *hostStatus) verdict() readiness.Verdict {
	var comps []agent.Status
	if ag := h.sources().agent; ag != nil {
		comps = ag.Statuses()
	}
	return h.judge(comps)
}

func (h *hostStatus) judge(comps []agent.Status) readiness.Verdict {
	h.mu.Lock()
	everReady, setup := h.ready, phaseLine(h.phase, h.message)
	h.mu.Unlock()
	return readiness.Judge(everReady, setup, comps)
}

// observeM3Status looks at M3 briefly: status and metrics must answer at
// once, so when M3 is slow (e.g. its etcd client reconnecting after an m3sup
// restart) the last observation stands in, marked stale.
func (h *hostStatus) observeM3Status(ctx context.Context) (m3.Progress, string) {
	h.mu.Lock()
	client, nodes := h.src.m3, h.src.nodes
	last, lastErr, failedAt := h.lastObserved, h.lastObserveErr, h.lastObserveFail
	h.mu.Unlock()
	if client == nil {
		return m3.Progress{}, "not started"
	}
	// After a failed look, answer from the last observation for a second
	// rather than make every status call wait on an unresponsive M3.
	if !failedAt.IsZero() && time.Since(failedAt) < time.Second {
		return last, "stale: " + lastErr
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	p, err := client.Observe(cctx, nodes)
	cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.lastObserved, h.lastObserveFail = p, time.Time{}
		return p, ""
	}
	h.lastObserveErr, h.lastObserveFail = err.Error(), time.Now()
	if h.lastObserved.Phase != "" {
		return h.lastObserved, "stale: " + err.Error()
	}
	return p, err.Error()
}

// observeM3 is observeM3Status for metrics: ok when anything was observed.
func (h *hostStatus) observeM3(ctx context.Context) (m3.Progress, bool) {
	p, _ := h.observeM3Status(ctx)
	return p, p.Phase != ""
}

func m3Status(p m3.Progress, errText string) api.M3Status {
	out := api.M3Status{Phase: string(p.Phase), Message: p.Message, Shards: p.ShardStates, Error: errText,
		PlacementExists: p.PlacementExists, Instances: p.Instances, NodesBootstrapped: p.NodesBootstrapped()}
	for name, ready := range p.Namespaces {
		out.Namespaces = append(out.Namespaces, api.NamespaceStatus{Name: name, Ready: ready})
	}
	sort.Slice(out.Namespaces, func(i, j int) bool { return out.Namespaces[i].Name < out.Namespaces[j].Name })
	return out
}

// clusterStatus reads the multi-host view from etcd: the registered hosts
// with their etcd role (and hosts being removed with remove-host), the controller leader and the permit holder.
func clusterStatus(ctx context.Context, cli *clientv3.Client) *api.ClusterStatus {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := &api.ClusterStatus{Hosts: []api.HostStatus{}}
	var errs []error
	members := map[string]string{} // member name → voter or learner
	if ml, err := cli.MemberList(cctx); err == nil {
		for _, m := range ml.Members {
			role := "voter"
			if m.IsLearner {
				role = "learner"
			}
			members[m.Name] = role
		}
	} else {
		errs = append(errs, err)
	}
	hosts, err := cluster.Hosts(cctx, cli)
	if err != nil {
		errs = append(errs, err)
	}
	leaving, err := cluster.LeavingHosts(cctx, cli)
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range hosts {
		_, isLeaving := leaving[h.Name]
		hs := api.HostStatus{Name: h.Name, Endpoint: h.Endpoint, Roles: []string{}, EtcdRole: "client",
			IsolationGroup: h.IsolationGroup, Weight: h.Weight, Leaving: isLeaving}
		if r, ok := members[h.Name]; ok {
			hs.EtcdRole = r
		}
		hs.HoldsCA, hs.JoinURL = h.HoldsCA, h.JoinURL
		for _, r := range h.Roles {
			hs.Roles = append(hs.Roles, string(r))
		}
		out.Hosts = append(out.Hosts, hs)
	}
	for name, l := range leaving {
		if l.RemovedBy == "" || slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
			continue // a host that leaves itself is registered until it left
		}
		hs := api.HostStatus{Name: name, Roles: []string{}, EtcdRole: "client", Leaving: true, RemovedBy: l.RemovedBy}
		if r, ok := members[name]; ok {
			hs.EtcdRole = r
		}
		out.Hosts = append(out.Hosts, hs)
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Name < out.Hosts[j].Name })
	if leader, ok, err := cluster.ControllerLeader(cctx, cli); err != nil {
		errs = append(errs, err)
	} else if ok {
		out.ControllerLeader = leader
	}
	if holder, held, err := cluster.PermitHolder(cctx, cli); err != nil {
		errs = append(errs, err)
	} else {
		out.PermitHolder, out.PermitHeld = holder, held
	}
	if err := errors.Join(errs...); err != nil {
		out.Error = err.Error()
	}
	return out
}

// rolloutStatus is the progress of the desired m3dbnode revision
// (cluster.Rollout.Progress). In multi-host mode (cs not nil) it also fills
// in each registered host's components and dbnode spec, as the hosts
// published them.
func rolloutStatus(ctx context.Context, roll rolloutProgress, cs *api.ClusterStatus, comps cluster.Components) *api.RolloutStatus {
	var dbHosts []string
	if cs != nil {
		for _, h := range cs.Hosts {
			if slices.Contains(h.Roles, string(cluster.RoleDBNode)) {
				dbHosts = append(dbHosts, h.Name)
			}
		}
	}
	p, errs := roll.Progress(ctx, cs != nil, dbHosts, comps)
	for _, err := range errs {
		cs.Error = strings.TrimPrefix(cs.Error+"; "+err.Error(), "; ")
	}
	if p == nil {
		return nil
	}
	if cs != nil {
		for i := range cs.Hosts {
			h := &cs.Hosts[i]
			if !slices.Contains(h.Roles, string(cluster.RoleDBNode)) {
				continue
			}
			hs, ok := p.States[h.Name]
			if !ok {
				continue
			}
			for _, c := range hs.Components {
				h.Components = append(h.Components, api.HostComponent{Name: c.Name, State: c.State, Healthy: c.Healthy, Version: c.Version})
			}
			h.DBNode = &api.HostDBNode{Revision: hs.DBNode.Revision, Version: hs.DBNode.Version, Digest: hs.DBNode.Digest,
				OnDesired: hs.OnRevision(p.DesiredRevision)}
		}
	}
	out := &api.RolloutStatus{DesiredRevision: p.DesiredRevision, DesiredVersion: p.DesiredVersion,
		Hosts: p.Hosts, OnDesired: p.OnDesired, Message: p.Message}
	if f := p.Failure; f != nil {
		out.Halted = true
		out.Failure = &api.RolloutFailure{Revision: f.Revision, Version: f.Version, Host: f.Host, Reason: f.Reason, At: f.At}
	}
	return out
}
