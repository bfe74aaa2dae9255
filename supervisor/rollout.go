package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// Rolling changes and automatic revert.
//
// A change of the release or of the dbnode settings is a new m3dbnode
// "revision" (a short hash of those cluster-wide settings; the per-host
// container hash also covers host-local things). Each host rolls to it on
// its own, one host at a time under the restart permit (multi-host mode).
// From the moment a host's m3dbnode leaves its old spec (not while it
// waits for the permit), it has cluster.rolloutDeadline to be running
// healthy (bootstrapped) with every shard AVAILABLE. If it misses that,
// the host marks the revision failed in etcd (with the reason), renders
// its m3dbnode — and the release its coordinator runs — from the last
// revision it ran healthy (kept in <dataDir>/rollout.json, so an m3sup
// restart mid-rollout still knows it), and once that is healthy again
// gives the permit back. Every host renders the last good revision instead
// of a failed one, so the rollout stops where it failed; a desired state
// with any other revision rolls again.

// rolloutPoll is how often the rollout actor looks at this host's
// components. A variable only so tests can shorten it.
var rolloutPoll = 500 * time.Millisecond

// dbnodeSpec is what makes an m3dbnode revision cluster-wide: the release
// and the dbnode settings of the desired spec.
type dbnodeSpec struct {
	Release spec.Release   `json:"release"`
	DBNode  spec.Component `json:"dbnode"`
}

func dbnodeSpecOf(c spec.Cluster) dbnodeSpec { return dbnodeSpec{Release: c.Release, DBNode: c.DBNode} }

// revision is the short hash that names d on every host.
func (d dbnodeSpec) revision() string {
	b, _ := json.Marshal(d)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}

// version is what status shows for d: the image in image mode, else the
// release version.
func (d dbnodeSpec) version() string {
	if d.DBNode.Image != "" {
		return d.DBNode.Image
	}
	return d.Release.Version
}

// lastGood is the last dbnode revision this host ran healthy.
type lastGood struct {
	Revision string     `json:"revision"`
	Spec     dbnodeSpec `json:"spec"`
	At       time.Time  `json:"at"`
}

func (l layout) rolloutFile() string { return filepath.Join(l.root, "rollout.json") }

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
	if lg.Spec.revision() != lg.Revision {
		return nil, fmt.Errorf("read last good m3dbnode spec %s: revision %s does not match its spec", path, lg.Revision)
	}
	return &lg, nil
}

func saveLastGood(path string, lg lastGood) error {
	b, err := json.MarshalIndent(lg, "", "  ")
	if err != nil {
		return fmt.Errorf("save last good m3dbnode spec: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("save last good m3dbnode spec: %w", err)
	}
	return nil
}

// revInfo is what a rendered m3dbnode container hash runs.
type revInfo struct {
	Revision string
	Spec     dbnodeSpec
	Version  string
	Digest   string
}

// rollout is the supervisor's rollout state. Its own lock: it is read on
// the status path and written by render and the rollout actor.
type rollout struct {
	mu         sync.Mutex
	revs       map[string]revInfo // m3dbnode container hash → revision
	lastGood   *lastGood
	failed     map[string]cluster.Failure // revisions known failed
	desired    dbnodeSpec                 // the desired state's (before any halt)
	desiredRev string
	halted     string // the failed revision this host keeps away from, if any

	// replan asks the desired-state actor to plan the last change again.
	replan chan struct{}
	// wake makes the rollout actor look now rather than at its next
	// tick: a component's status changed (the permit goes back the moment
	// the node is healthy, not up to a poll later).
	wake chan struct{}
	// permitSem serialises the permit gates of one host's components.
	permitSem chan struct{}
	// permitSince is when this host took the restart permit.
	permitSince time.Time
}

func newRollout() *rollout {
	return &rollout{revs: map[string]revInfo{}, failed: map[string]cluster.Failure{},
		replan: make(chan struct{}, 1), wake: make(chan struct{}, 1), permitSem: make(chan struct{}, 1)}
}

// poke wakes the rollout actor; it never blocks.
func (r *rollout) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *rollout) kick() {
	select {
	case r.replan <- struct{}{}:
	default:
	}
}

func (r *rollout) remember(hash string, info revInfo) {
	r.mu.Lock()
	r.revs[hash] = info
	r.mu.Unlock()
}

func (r *rollout) rev(hash string) (revInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.revs[hash]
	return i, ok
}

func (r *rollout) lastGoodRev() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastGood == nil {
		return ""
	}
	return r.lastGood.Revision
}

// effective is the cluster spec this host renders for desired: desired
// itself, unless desired's m3dbnode revision is marked failed and a last
// good revision is known; then desired with that revision's release and
// dbnode settings (the coordinator keeps desired's own settings).
func (s *Supervisor) effective(ctx context.Context, desired spec.Cluster) spec.Cluster {
	want := dbnodeSpecOf(desired)
	rev := want.revision()
	r := s.roll
	r.mu.Lock()
	r.desired, r.desiredRev = want, rev
	f, failed := r.failed[rev]
	lg := r.lastGood
	r.mu.Unlock()
	if !failed {
		s.mu.Lock()
		e := s.etcd
		s.mu.Unlock()
		if e != nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			f, failed, err = cluster.RolloutFailed(cctx, e.Client(), rev)
			cancel()
			if err != nil {
				s.log.Warn("cannot tell whether the desired m3dbnode spec failed; rolling to it", zap.String("revision", rev), zap.Error(err))
			} else if failed {
				r.mu.Lock()
				r.failed[rev] = f
				r.mu.Unlock()
			}
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
		s.log.Warn("rollout halted: the desired m3dbnode spec failed; keeping the last good one",
			zap.String("failed", rev), zap.String("failed_on", f.Host), zap.String("reason", f.Reason), zap.String("running", lg.Revision))
	}
	return out
}

// rolloutVerdict is what one observation of m3dbnode means for a rollout.
type rolloutVerdict int

const (
	verdictPending rolloutVerdict = iota // nothing to do (yet)
	verdictSettled                       // healthy on its desired revision
	verdictFailed                        // missed the deadline: revert
)

// rolloutObs is one observation of this host's m3dbnode.
type rolloutObs struct {
	Now      time.Time
	DB       agent.Status
	Desired  string // revision of the dbnode's desired container hash
	LastGood string // last revision this host ran healthy; "" when none
	Failed   bool   // Desired is already known failed
	ShardsOK bool   // every shard is AVAILABLE
}

// revertClock decides, from observations alone, when a restarted m3dbnode
// has missed the rollout deadline. The clock runs from the first
// observation of m3dbnode off its old spec (not waiting for the permit)
// towards a revision other than the last good one; it restarts when that
// revision changes. Pure: the caller supplies the time.
type revertClock struct {
	rev   string
	since time.Time
}

func (c *revertClock) observe(o rolloutObs, deadline time.Duration) rolloutVerdict {
	if dbnodeSettled(o.DB) && o.ShardsOK {
		c.rev = ""
		return verdictSettled
	}
	if o.LastGood == "" || o.Desired == "" || o.Desired == o.LastGood || o.Failed ||
		!o.DB.DesiredActive || o.DB.State == agent.StateWaiting {
		// Nothing to go back to, nothing new, or not under way.
		c.rev = ""
		return verdictPending
	}
	if c.rev != o.Desired {
		c.rev, c.since = o.Desired, o.Now
	}
	if o.Now.Sub(c.since) >= deadline {
		c.rev = ""
		return verdictFailed
	}
	return verdictPending
}

// notHealthyReason says why m3dbnode missed the deadline: its state, last
// exit and last log line.
func notHealthyReason(db agent.Status, version string, deadline time.Duration, shardsOK bool) string {
	var what string
	switch {
	case db.State == agent.StateRunning && db.Healthy && !shardsOK:
		what = "bootstrapped, but not every shard is AVAILABLE"
	case db.State == agent.StateRunning && !db.Healthy:
		what = "running, not bootstrapped"
	default:
		what = string(db.State)
		if db.LastExit != nil && db.LastExit.Reason != "" {
			what += " (" + db.LastExit.Reason + ")"
			if !strings.HasPrefix(db.LastExit.Reason, "exited with code") {
				// A Go crash's own line says more than the log's last one.
				return fmt.Sprintf("m3dbnode %s not healthy within %s: %s", version, deadline, what)
			}
		} else if db.LastExit != nil {
			what += fmt.Sprintf(" (last exit code %d)", db.LastExit.Code)
		}
	}
	if n := len(db.LogTail); n > 0 && db.State != agent.StateRunning {
		line := strings.TrimSpace(db.LogTail[n-1])
		if len(line) > 300 {
			line = line[:300] + "…"
		}
		what += ": " + line
	}
	return fmt.Sprintf("m3dbnode %s not healthy within %s: %s", version, deadline, what)
}

// componentSettled: a component other than m3dbnode has finished its
// planned restart (or the operator stopped it).
func componentSettled(st agent.Status) bool {
	return !st.DesiredActive || (st.State == agent.StateRunning && st.Healthy && st.SpecHash == st.DesiredHash)
}

// runRollout is the rollout actor: every rolloutPoll it publishes this
// host's components, remembers the last good m3dbnode revision, reverts a
// restart that missed the deadline, follows a halt recorded by another
// host, and releases the restart permit once this host has settled. On
// return it releases the permit if this host holds it.
func (s *Supervisor) runRollout(ctx context.Context, lay layout, ag *agent.Agent, cli *clientv3.Client, c *m3.Client) error {
	defer s.releasePermit(context.WithoutCancel(ctx))
	tick := time.NewTicker(rolloutPoll)
	defer tick.Stop()
	var (
		clock     revertClock
		published *cluster.HostState
		pending   *cluster.Failure // recorded locally, not yet in etcd
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.roll.wake:
		}
		s.rolloutStep(ctx, lay, ag, cli, c, &clock, &pending)
		if hs := s.hostState(ag); published == nil || !reflect.DeepEqual(*published, hs) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := cluster.PublishHostState(pctx, cli, hs)
			cancel()
			if err == nil {
				published = &hs
			} else if ctx.Err() == nil {
				s.log.Debug("publish host state", zap.Error(err))
			}
		}
	}
}

func (s *Supervisor) rolloutStep(ctx context.Context, lay layout, ag *agent.Agent, cli *clientv3.Client, c *m3.Client,
	clock *revertClock, pending **cluster.Failure) {
	r := s.roll
	if f := *pending; f != nil {
		if err := s.recordFailure(ctx, cli, *f); err == nil {
			*pending = nil
		}
	}
	db, ok := ag.Status(DBNode)
	if !ok {
		// A host without m3dbnode (cluster.roles) holds the permit only
		// for its coordinator.
		s.mu.Lock()
		holding := s.permitRelease != nil
		s.mu.Unlock()
		if holding {
			s.releaseWhenCoordinatorWrites(ctx, ag, c)
		}
		return
	}
	want, _ := r.rev(db.DesiredHash)
	r.mu.Lock()
	lgRev := ""
	if r.lastGood != nil {
		lgRev = r.lastGood.Revision
	}
	_, failed := r.failed[want.Revision]
	desiredRev, halted := r.desiredRev, r.halted
	_, desiredFailed := r.failed[desiredRev]
	r.mu.Unlock()
	s.mu.Lock()
	holding := s.permitRelease != nil
	s.mu.Unlock()

	// Another host may have halted the rollout this host still heads for.
	if desiredRev != "" && desiredRev != lgRev && !desiredFailed && halted == "" {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		f, found, err := cluster.RolloutFailed(cctx, cli, desiredRev)
		cancel()
		if err == nil && found {
			r.mu.Lock()
			r.failed[desiredRev] = f
			r.mu.Unlock()
			s.log.Warn("rollout halted by another host", zap.String("revision", desiredRev), zap.String("host", f.Host), zap.String("reason", f.Reason))
			r.kick()
		}
	}

	// Shards matter only while something rolls (or a first last good
	// revision is to be recorded): otherwise no placement read.
	shardsOK := false
	if holding || (want.Revision != "" && want.Revision != lgRev) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		shardsOK = cluster.ShardsAvailable(c)(cctx) == nil
		cancel()
	}
	deadline := s.cfg.Cluster.RolloutDeadline.D()
	switch clock.observe(rolloutObs{Now: time.Now(), DB: db, Desired: want.Revision, LastGood: lgRev, Failed: failed, ShardsOK: shardsOK}, deadline) {
	case verdictSettled:
		if want.Revision != "" && want.Revision != lgRev {
			lg := lastGood{Revision: want.Revision, Spec: want.Spec, At: time.Now().UTC()}
			if err := saveLastGood(lay.rolloutFile(), lg); err != nil {
				s.log.Error("remember the last good m3dbnode spec", zap.Error(err))
			} else {
				r.mu.Lock()
				r.lastGood = &lg
				r.mu.Unlock()
				s.log.Info("m3dbnode healthy on its new spec", zap.String("revision", lg.Revision), zap.String("version", want.Version))
			}
		}
	case verdictFailed:
		f := cluster.Failure{Revision: want.Revision, Version: want.Spec.version(), Host: s.cfg.NodeName,
			Reason: notHealthyReason(db, want.Spec.version(), deadline, shardsOK), At: time.Now().UTC()}
		s.log.Error("rollout failed: returning m3dbnode to the last good spec", zap.String("revision", f.Revision),
			zap.String("reason", f.Reason), zap.String("back_to", lgRev))
		r.mu.Lock()
		r.failed[f.Revision] = f
		r.mu.Unlock()
		if err := s.recordFailure(ctx, cli, f); err != nil {
			*pending = &f
		}
		r.kick()
	}

	if holding && dbnodeSettled(db) && shardsOK {
		s.releaseWhenCoordinatorWrites(ctx, ag, c)
	}
}

// releaseWhenCoordinatorWrites gives the permit back once this host's
// coordinator (if it runs one) is settled and takes writes again — or once
// the rollout deadline has passed since the permit was taken, so a
// coordinator that never recovers cannot hold the cluster's rollout.
func (s *Supervisor) releaseWhenCoordinatorWrites(ctx context.Context, ag *agent.Agent, c *m3.Client) {
	r := s.roll
	co, ok := ag.Status(Coordinator)
	r.mu.Lock()
	since := r.permitSince
	r.mu.Unlock()
	coordOK := !ok || !co.DesiredActive
	if ok && componentSettled(co) && co.DesiredActive {
		// A restarted coordinator answers /health before its M3DB
		// session can write: the next host may restart its own only
		// once this one takes writes again.
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := coordinatorWritable(cctx, c.BaseURL)
		cancel()
		coordOK = err == nil
	}
	if coordOK || time.Since(since) > s.cfg.Cluster.RolloutDeadline.D() {
		s.releasePermit(ctx)
	}
}

func (s *Supervisor) recordFailure(ctx context.Context, cli *clientv3.Client, f cluster.Failure) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := cluster.RecordFailure(cctx, cli, f)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("record the rollout failure in etcd; will retry", zap.Error(err))
	}
	return err
}

// hostState is what this host publishes about its components.
func (s *Supervisor) hostState(ag *agent.Agent) cluster.HostState {
	hs := cluster.HostState{Host: s.cfg.NodeName, Components: []cluster.ComponentState{}}
	for _, st := range ag.Statuses() {
		cs := cluster.ComponentState{Name: st.Name, State: string(st.State), Healthy: st.Healthy, Version: st.Version}
		if st.Name == DBNode {
			if info, ok := s.roll.rev(st.SpecHash); ok {
				cs.Revision = info.Revision
				hs.DBNode = cluster.RunningSpec{Revision: info.Revision, Version: info.Version, Digest: info.Digest}
			}
		}
		hs.Components = append(hs.Components, cs)
	}
	return hs
}

// rolloutStatus is the progress of the desired m3dbnode revision. In
// multi-host mode (cs not nil) it also fills in each registered host's
// components and dbnode spec, as the hosts published them.
func (s *Supervisor) rolloutStatus(ctx context.Context, cli *clientv3.Client, cs *api.ClusterStatus, ag *agent.Agent) *api.RolloutStatus {
	r := s.roll
	r.mu.Lock()
	want, rev := r.desired, r.desiredRev
	f, failed := r.failed[rev]
	r.mu.Unlock()
	if rev == "" {
		return nil
	}
	out := &api.RolloutStatus{DesiredRevision: rev, DesiredVersion: want.version()}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !failed && cli != nil {
		var err error
		if f, failed, err = cluster.RolloutFailed(cctx, cli, rev); err != nil && cs != nil {
			cs.Error = strings.TrimPrefix(cs.Error+"; "+err.Error(), "; ")
		}
	}
	if cs != nil {
		states, err := cluster.HostStates(cctx, cli)
		if err != nil {
			cs.Error = strings.TrimPrefix(cs.Error+"; "+err.Error(), "; ")
		}
		for i := range cs.Hosts {
			h := &cs.Hosts[i]
			if !slices.Contains(h.Roles, string(cluster.RoleDBNode)) {
				continue
			}
			out.Hosts++
			hs, ok := states[h.Name]
			if !ok {
				continue
			}
			on := false
			for _, c := range hs.Components {
				h.Components = append(h.Components, api.HostComponent{Name: c.Name, State: c.State, Healthy: c.Healthy, Version: c.Version})
				if c.Name == DBNode {
					on = c.State == string(agent.StateRunning) && c.Healthy && c.Revision == rev
				}
			}
			h.DBNode = &api.HostDBNode{Revision: hs.DBNode.Revision, Version: hs.DBNode.Version, Digest: hs.DBNode.Digest, OnDesired: on}
			if on {
				out.OnDesired++
			}
		}
	} else if ag != nil {
		out.Hosts = 1
		if db, ok := ag.Status(DBNode); ok {
			if info, ok := r.rev(db.SpecHash); ok && info.Revision == rev && db.State == agent.StateRunning && db.Healthy {
				out.OnDesired = 1
			}
		}
	}
	if failed {
		out.Halted = true
		out.Failure = &api.RolloutFailure{Revision: f.Revision, Version: f.Version, Host: f.Host, Reason: f.Reason, At: f.At}
		out.Message = fmt.Sprintf("rollout halted: %s: %s; running previous spec", f.Host, f.Reason)
		return out
	}
	what := fmt.Sprintf("m3dbnode %s (%s)", out.DesiredVersion, rev)
	if out.OnDesired == out.Hosts {
		out.Message = fmt.Sprintf("%d/%d on desired %s", out.OnDesired, out.Hosts, what)
	} else {
		out.Message = fmt.Sprintf("rolling: %d/%d on desired %s", out.OnDesired, out.Hosts, what)
	}
	return out
}

// coordinatorWritable asks m3coordinator's GET /ready: nil when it knows
// at least one namespace and can write to every one.
func coordinatorWritable(ctx context.Context, baseURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/ready", nil)
	if err != nil {
		return fmt.Errorf("coordinator ready: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("coordinator ready: %w", err)
	}
	defer resp.Body.Close()
	var r struct {
		ReadyWrites    []json.RawMessage `json:"readyWrites"`
		NotReadyWrites []json.RawMessage `json:"notReadyWrites"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("coordinator ready: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return fmt.Errorf("coordinator ready: %w", err)
	}
	if len(r.ReadyWrites) == 0 || len(r.NotReadyWrites) > 0 {
		return fmt.Errorf("coordinator ready: %d namespace(s) writable, %d not", len(r.ReadyWrites), len(r.NotReadyWrites))
	}
	return nil
}
