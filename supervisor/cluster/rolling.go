package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// rolloutPoll is how often the rollout actor looks at this host's
// components. A variable only so tests can shorten it.
var rolloutPoll = 500 * time.Millisecond

// DBNodeSpec is what makes an m3dbnode revision cluster-wide: the release
// and the dbnode settings of the desired spec.
type DBNodeSpec struct {
	Release spec.Release   `json:"release"`
	DBNode  spec.Component `json:"dbnode"`
}

// DBNodeSpecOf is c's m3dbnode revision spec.
func DBNodeSpecOf(c spec.Cluster) DBNodeSpec { return DBNodeSpec{Release: c.Release, DBNode: c.DBNode} }

// Revision is the short hash that names d on every host.
func (d DBNodeSpec) Revision() string {
	b, _ := json.Marshal(d)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}

// Version is what status shows for d: the image in image mode, else the
// release version.
func (d DBNodeSpec) Version() string {
	if d.DBNode.Image != "" {
		return d.DBNode.Image
	}
	return d.Release.Version
}

// DBNodeRevision is what a rendered m3dbnode container hash runs.
type DBNodeRevision struct {
	Revision string
	Spec     DBNodeSpec
	Version  string
	Digest   string
}

// lastGood is the last dbnode revision this host ran healthy.
type lastGood struct {
	Revision string     `json:"revision"`
	Spec     DBNodeSpec `json:"spec"`
	At       time.Time  `json:"at"`
}

// RolloutFile is where a host keeps its last good revision, under its data
// dir.
const RolloutFile = "rollout.json"

// loadLastGood reads path; a missing file is no last good revision.
func loadLastGood(path string) (*lastGood, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read last good m3dbnode spec: %w", err)
	}
	var lg lastGood
	if err := json.Unmarshal(b, &lg); err != nil {
		return nil, fmt.Errorf("read last good m3dbnode spec %s: %w", path, err)
	}
	if lg.Spec.Revision() != lg.Revision {
		return nil, fmt.Errorf("read last good m3dbnode spec %s: revision %s does not match its spec", path, lg.Revision)
	}
	return &lg, nil
}

func saveLastGood(path string, lg lastGood) error {
	b, err := json.MarshalIndent(lg, "", "  ")
	if err != nil {
		return fmt.Errorf("save last good m3dbnode spec: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("save last good m3dbnode spec: %w", err)
	}
	return nil
}

// Rollout is this host's part in rolling changes and their automatic
// revert.
//
// A change of the release or of the dbnode settings is a new m3dbnode
// revision (DBNodeSpec.Revision: a short hash of those cluster-wide
// settings; the per-host container hash also covers host-local things).
// Each host rolls to it on its own, one host at a time under the restart
// permit (multi-host mode). From the moment a host's m3dbnode leaves its
// old spec (not while it waits for the permit), it has the rollout
// deadline to be running healthy (bootstrapped) with every shard
// AVAILABLE. If it misses that, the host marks the revision failed in etcd
// (with the reason), renders its m3dbnode — and the release its
// coordinator runs — from the last revision it ran healthy (kept in
// <dataDir>/rollout.json, so an m3sup restart mid-rollout still knows it),
// and once that is healthy again gives the permit back. Every host renders
// the last good revision instead of a failed one (Effective), so the
// rollout stops where it failed; a desired state with any other revision
// rolls again.
//
// The reconcile path asks Effective what to render and Records which
// revision each rendered m3dbnode hash runs; Run is the actor that watches
// the components. Its own lock: it is read on the status path too.
type Rollout struct {
	local    Local
	permit   *Permit
	deadline time.Duration
	log      *zap.Logger

	mu         sync.Mutex
	revs       map[string]DBNodeRevision // m3dbnode container hash → revision
	lastGood   *lastGood
	failed     map[string]Failure // revisions known failed
	desired    DBNodeSpec         // the desired state's (before any halt)
	desiredRev string
	halted     string // the failed revision this host keeps away from, if any

	// replan asks the desired-state actor to plan the last change again.
	replan chan struct{}
	// wake makes the rollout actor look now rather than at its next tick.
	wake chan struct{}
}

// NewRollout returns the rollout of l's host, which takes and gives back
// permit, and reverts an m3dbnode not healthy within deadline. It does no
// I/O (see LoadLastGood).
func NewRollout(l Local, permit *Permit, deadline time.Duration) *Rollout {
	return &Rollout{local: l, permit: permit, deadline: deadline, log: l.logger(),
		revs: map[string]DBNodeRevision{}, failed: map[string]Failure{},
		replan: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
}

func (r *Rollout) file() string { return filepath.Join(r.local.DataDir, RolloutFile) }

// LoadLastGood reads the last good revision this host kept, if any.
func (r *Rollout) LoadLastGood() error {
	lg, err := loadLastGood(r.file())
	if err != nil || lg == nil {
		return err
	}
	r.mu.Lock()
	r.lastGood = lg
	r.mu.Unlock()
	return nil
}

// LookNow makes the rollout actor look at the components now rather than
// at its next tick (a component's status changed: the permit goes back the
// moment the node is healthy, not up to a poll later). It never blocks.
func (r *Rollout) LookNow() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Replans receives when the desired-state actor should plan the last
// change again: a rollout halted or failed here, so Effective now answers
// differently.
func (r *Rollout) Replans() <-chan struct{} { return r.replan }

func (r *Rollout) requestReplan() {
	select {
	case r.replan <- struct{}{}:
	default:
	}
}

// Record notes that the m3dbnode container hash runs rev. The reconcile
// path records what it hands the agent; rendering alone (apply --dry-run)
// records nothing.
func (r *Rollout) Record(hash string, rev DBNodeRevision) {
	r.mu.Lock()
	r.revs[hash] = rev
	r.mu.Unlock()
}

func (r *Rollout) revision(hash string) (DBNodeRevision, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.revs[hash]
	return i, ok
}

// Effective is the cluster spec this host renders for desired: desired
// itself, unless desired's m3dbnode revision is marked failed and a last
// good revision is known; then desired with that revision's release and
// dbnode settings (the coordinator keeps desired's own settings). It
// remembers desired's revision as the one status reports on.
func (r *Rollout) Effective(ctx context.Context, desired spec.Cluster) spec.Cluster {
	want := DBNodeSpecOf(desired)
	rev := want.Revision()
	r.mu.Lock()
	r.desired, r.desiredRev = want, rev
	f, failed := r.failed[rev]
	lg := r.lastGood
	r.mu.Unlock()
	if !failed && r.local.Etcd != nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		f, failed, err = RolloutFailed(cctx, r.local.Etcd, rev)
		cancel()
		if err != nil {
			r.log.Warn("cannot tell whether the desired m3dbnode spec failed; rolling to it", zap.String("revision", rev), zap.Error(err))
		} else if failed {
			r.mu.Lock()
			r.failed[rev] = f
			r.mu.Unlock()
		}
	}
	halted := ""
	out := desired
	if failed && lg != nil && lg.Revision != rev {
		halted = rev
		out.Release, out.DBNode = lg.Spec.Release, lg.Spec.DBNode
	}
	r.mu.Lock()
	was := r.halted
	r.halted = halted
	r.mu.Unlock()
	if halted != "" && was != halted {
		r.log.Warn("rollout halted: the desired m3dbnode spec failed; keeping the last good one",
			zap.String("failed", rev), zap.String("failed_on", f.Host), zap.String("reason", f.Reason), zap.String("running", lg.Revision))
	}
	return out
}

// errNotConnected: a restart gate rendered before the daemon connected
// etcd and M3 (no Rollout yet).
var errNotConnected = errors.New("restart permit: etcd or M3 not connected yet")

// RestartGate is a planned-restart gate in multi-host mode (m3dbnode's,
// and m3coordinator's, so a new release also reaches the coordinators one
// host at a time): it takes the cluster-wide restart permit, only while
// every shard is AVAILABLE and, for m3dbnode, only while revision (the
// spec it restarts for) is not marked failed. Run gives the permit back
// once this host has settled. A host that already holds the permit (its
// other component, or a second planned restart before the first settled)
// restarts under it. A nil Rollout's gate refuses.
func (r *Rollout) RestartGate(revision string) func(context.Context) error {
	return func(ctx context.Context) error {
		if r == nil {
			return errNotConnected
		}
		notFailed := NotFailed(r.local.Etcd, revision)
		gate := func(ctx context.Context) error {
			if err := r.local.M3.AllAvailable(ctx); err != nil {
				return err
			}
			return notFailed(ctx)
		}
		took, err := r.permit.Acquire(ctx, gate)
		if err != nil {
			return err
		}
		if took {
			r.log.Info("took the restart permit", zap.String("node", r.local.Node), zap.String("revision", revision))
		}
		return nil
	}
}

// Run is the rollout actor: every poll (or at once after LookNow) it
// publishes this host's components, remembers the last good m3dbnode
// revision, reverts a restart that missed the deadline, follows a halt
// recorded by another host, and releases the restart permit once this host
// has settled. It returns when ctx ends, releasing the permit if this host
// holds it.
func (r *Rollout) Run(ctx context.Context, comps Components) error {
	defer r.permit.Release(context.WithoutCancel(ctx))
	tick := time.NewTicker(rolloutPoll)
	defer tick.Stop()
	var (
		clock     revertClock
		settle    settleClock
		published *HostState
		pending   *Failure // recorded locally, not yet in etcd
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.wake:
		}
		r.step(ctx, comps, &clock, &settle, &pending)
		if hs := r.hostState(comps); published == nil || !reflect.DeepEqual(*published, hs) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := PublishHostState(pctx, r.local.Etcd, hs)
			cancel()
			if err == nil {
				published = &hs
			} else if ctx.Err() == nil {
				r.log.Debug("publish host state", zap.Error(err))
			}
		}
	}
}

// step is one look of the rollout actor.
func (r *Rollout) step(ctx context.Context, comps Components, clock *revertClock, settle *settleClock, pending **Failure) {
	cli := r.local.Etcd
	if f := *pending; f != nil {
		if err := r.recordFailure(ctx, *f); err == nil {
			*pending = nil
		}
	}
	holding := r.permit.Held()
	db, ok := comps.Status(DBNodeComponent)
	if !ok {
		// A host without m3dbnode (cluster.roles) holds the permit only
		// for its coordinator.
		if holding {
			r.releaseWhenCoordinatorWrites(ctx, comps)
		}
		return
	}
	want, _ := r.revision(db.DesiredHash)
	r.mu.Lock()
	lgRev := ""
	if r.lastGood != nil {
		lgRev = r.lastGood.Revision
	}
	_, failed := r.failed[want.Revision]
	desiredRev, halted := r.desiredRev, r.halted
	_, desiredFailed := r.failed[desiredRev]
	r.mu.Unlock()

	// Another host may have halted the rollout this host still heads for.
	if desiredRev != "" && desiredRev != lgRev && !desiredFailed && halted == "" {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		f, found, err := RolloutFailed(cctx, cli, desiredRev)
		cancel()
		if err == nil && found {
			r.mu.Lock()
			r.failed[desiredRev] = f
			r.mu.Unlock()
			r.log.Warn("rollout halted by another host", zap.String("revision", desiredRev), zap.String("host", f.Host), zap.String("reason", f.Reason))
			r.requestReplan()
		}
	}

	// Shards matter only while something rolls (or a first last good
	// revision is to be recorded): otherwise no placement read.
	shardsOK := false
	if holding || (want.Revision != "" && want.Revision != lgRev) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		shardsOK = r.local.M3.AllAvailable(cctx) == nil
		cancel()
	}
	switch clock.observe(rolloutObs{Now: time.Now(), DB: db, Desired: want.Revision, LastGood: lgRev, Failed: failed, ShardsOK: shardsOK}, r.deadline) {
	case verdictSettled:
		if want.Revision != "" && want.Revision != lgRev {
			lg := lastGood{Revision: want.Revision, Spec: want.Spec, At: time.Now().UTC()}
			if err := saveLastGood(r.file(), lg); err != nil {
				r.log.Error("remember the last good m3dbnode spec", zap.Error(err))
			} else {
				r.mu.Lock()
				r.lastGood = &lg
				r.mu.Unlock()
				r.log.Info("m3dbnode healthy on its new spec", zap.String("revision", lg.Revision), zap.String("version", want.Version))
			}
		}
	case verdictFailed:
		f := Failure{Revision: want.Revision, Version: want.Spec.Version(), Host: r.local.Node,
			Reason: notHealthyReason(db, want.Spec.Version(), r.deadline, shardsOK), At: time.Now().UTC()}
		r.log.Error("rollout failed: returning m3dbnode to the last good spec", zap.String("revision", f.Revision),
			zap.String("reason", f.Reason), zap.String("back_to", lgRev))
		r.mu.Lock()
		r.failed[f.Revision] = f
		r.mu.Unlock()
		if err := r.recordFailure(ctx, f); err != nil {
			*pending = &f
		}
		r.requestReplan()
	}

	// Settled: the permit goes back once M3's clients have had the time
	// to reconnect to this m3dbnode (ReconnectGrace).
	if settle.due(time.Now(), holding && dbnodeSettled(db) && shardsOK, ReconnectGrace) {
		r.releaseWhenCoordinatorWrites(ctx, comps)
	}
}

// releaseWhenCoordinatorWrites gives the permit back once this host's
// coordinator (if it runs one) is settled and takes writes again — or once
// the rollout deadline has passed since the permit was taken, so a
// coordinator that never recovers cannot hold the cluster's rollout.
func (r *Rollout) releaseWhenCoordinatorWrites(ctx context.Context, comps Components) {
	co, ok := comps.Status(CoordinatorComponent)
	since := r.permit.Since()
	coordOK := !ok || !co.DesiredActive
	if ok && componentSettled(co) && co.DesiredActive {
		// A restarted coordinator answers /health before its M3DB
		// session can write: the next host may restart its own only
		// once this one takes writes again.
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := r.local.M3.CoordinatorWritable(cctx)
		cancel()
		coordOK = err == nil
	}
	if coordOK || time.Since(since) > r.deadline {
		r.permit.Release(ctx)
	}
}

func (r *Rollout) recordFailure(ctx context.Context, f Failure) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := RecordFailure(cctx, r.local.Etcd, f)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("record the rollout failure in etcd; will retry", zap.Error(err))
	}
	return err
}

// hostState is what this host publishes about its components.
func (r *Rollout) hostState(comps Components) HostState {
	hs := HostState{Host: r.local.Node, Components: []ComponentState{}}
	for _, st := range comps.Statuses() {
		cs := ComponentState{Name: st.Name, State: string(st.State), Healthy: st.Healthy, Version: st.Version}
		if st.Name == DBNodeComponent {
			if info, ok := r.revision(st.SpecHash); ok {
				cs.Revision = info.Revision
				hs.DBNode = RunningSpec{Revision: info.Revision, Version: info.Version, Digest: info.Digest}
			}
		}
		hs.Components = append(hs.Components, cs)
	}
	return hs
}

// OnRevision reports whether h's m3dbnode runs rev, healthy.
func (h HostState) OnRevision(rev string) bool {
	on := false
	for _, c := range h.Components {
		if c.Name == DBNodeComponent {
			on = c.State == string(agent.StateRunning) && c.Healthy && c.Revision == rev
		}
	}
	return on
}

// RolloutProgress is how far the desired m3dbnode revision got.
type RolloutProgress struct {
	DesiredRevision string
	DesiredVersion  string
	Hosts           int      // dbnode hosts (this one, in single-node mode)
	OnDesired       int      // of those, running the desired revision healthy
	Failure         *Failure // set when the rollout halted on it
	Message         string
	// States are the published host states by name (multi-host mode).
	States map[string]HostState
}

// Progress reports the progress of the desired m3dbnode revision; nil
// before Effective saw a desired state. In multi-host mode it counts the
// dbHosts (the registered dbnode hosts) whose published state runs it;
// else this host's m3dbnode (comps, nil before the agent runs). errs are
// failed etcd reads in multi-host mode; the answer stands without them.
func (r *Rollout) Progress(ctx context.Context, multiHost bool, dbHosts []string, comps Components) (p *RolloutProgress, errs []error) {
	r.mu.Lock()
	want, rev := r.desired, r.desiredRev
	f, failed := r.failed[rev]
	r.mu.Unlock()
	if rev == "" {
		return nil, nil
	}
	out := &RolloutProgress{DesiredRevision: rev, DesiredVersion: want.Version()}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if cli := r.local.Etcd; !failed && cli != nil {
		var err error
		if f, failed, err = RolloutFailed(cctx, cli, rev); err != nil && multiHost {
			errs = append(errs, err)
		}
	}
	if multiHost {
		states, err := HostStates(cctx, r.local.Etcd)
		if err != nil {
			errs = append(errs, err)
		}
		out.States = states
		for _, name := range dbHosts {
			out.Hosts++
			if hs, ok := states[name]; ok && hs.OnRevision(rev) {
				out.OnDesired++
			}
		}
	} else if comps != nil {
		out.Hosts = 1
		if db, ok := comps.Status(DBNodeComponent); ok {
			if info, ok := r.revision(db.SpecHash); ok && info.Revision == rev && db.State == agent.StateRunning && db.Healthy {
				out.OnDesired = 1
			}
		}
	}
	if failed {
		out.Failure = &f
		out.Message = fmt.Sprintf("rollout halted: %s: %s; running previous spec", f.Host, f.Reason)
		return out, errs
	}
	what := fmt.Sprintf("m3dbnode %s (%s)", out.DesiredVersion, rev)
	if out.OnDesired == out.Hosts {
		out.Message = fmt.Sprintf("%d/%d on desired %s", out.OnDesired, out.Hosts, what)
	} else {
		out.Message = fmt.Sprintf("rolling: %d/%d on desired %s", out.OnDesired, out.Hosts, what)
	}
	return out, errs
}
