package supervisor

// Leaving the cluster (`m3sup leave`, multi-host mode). The host goes
// through:
//
//	Leave (API): refuse, changing nothing, on a single-node m3sup, on the
//	last host that holds the CA (checkCAHolders), when M3 would keep fewer
//	than RF instances or isolation groups, or when removing this host's
//	etcd member would risk quorum; else mark it leaving in etcd
//	(cluster.MarkLeaving)
//	→ runLeave: the controller removes this host's instance; m3dbnode keeps
//	running while M3 streams its shards away, until the instance is gone
//	and every shard is AVAILABLE → errLeft stops the daemon's actors (the
//	agent stops the containers, the registrar deregisters)
//	→ finishLeave: remove any container left (--keep-running), remove this
//	host's etcd member (through the other voters, quorum-guarded), delete
//	the registry key, per-host keys and the leaving record, write
//	<dataDir>/left.json
//	→ m3sup exits 0; `m3sup run` on this data dir refuses from now on.
//
// A leave marked before an m3sup restart resumes when m3sup starts again.
//
// Voters: removing one of three leaves two, still a quorum of the new
// two-member cluster, so it is allowed; what is refused is a removal after
// which the remaining voters would not have a healthy majority, and the
// last voter (store.QuorumAfterRemoval).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// PhaseLeaving: `m3sup leave` runs; the message says which step.
const PhaseLeaving = "leaving"

// errLeft ends the daemon's actors once the host's instance is gone from
// the placement: runNode then finishes the leave.
var errLeft = errors.New("this host left the M3 placement")

// ErrHostLeft: `m3sup run` refuses a data dir whose host left the
// cluster (<dataDir>/left.json). The command exits with its own status
// for it, so systemd does not restart a host that left.
var ErrHostLeft = errors.New("this host left the cluster")

// leaveState is this host's leave, shared by the API handler, runLeave
// and runNode.
type leaveState struct {
	requested chan struct{} // closed by request
	reqOnce   sync.Once
	done      chan struct{} // closed by finish; err is set before
	doneOnce  sync.Once
	err       error
}

func newLeaveState() *leaveState {
	return &leaveState{requested: make(chan struct{}), done: make(chan struct{})}
}

// request starts the leave (runLeave waits for it); idempotent.
func (l *leaveState) request() { l.reqOnce.Do(func() { close(l.requested) }) }

// isRequested reports whether a leave was requested.
func (l *leaveState) isRequested() bool {
	select {
	case <-l.requested:
		return true
	default:
		return false
	}
}

// finish reports the leave's end to LeaveDone; the first call wins.
func (l *leaveState) finish(err error) {
	l.doneOnce.Do(func() { l.err = err; close(l.done) })
}

// leftFile records that this host left (<dataDir>/left.json): by itself
// with `m3sup leave`, or removed by another host with `m3sup remove-host`
// while it was down (Removed; removed.go).
type leftFile struct {
	Node    string    `json:"node"`
	Left    time.Time `json:"left"`
	JoinURL string    `json:"joinURL,omitempty"`
	// Removed: another host removed this one; RemovedBy names it when this
	// host could learn it (its tombstone or leaving record).
	Removed   bool   `json:"removed,omitempty"`
	RemovedBy string `json:"removedBy,omitempty"`
}

func (l layout) leftFile() string { return filepath.Join(l.root, "left.json") }

// checkNotLeft refuses to start on a data dir whose host left the cluster.
func checkNotLeft(lay layout) error {
	b, err := os.ReadFile(lay.leftFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", lay.leftFile(), err)
	}
	var lf leftFile
	_ = json.Unmarshal(b, &lf)
	return lf.refusal(lay)
}

// refusal is why m3sup will not run on lay, whose host left as lf says.
func (lf leftFile) refusal(lay layout) error {
	joinURL := lf.JoinURL
	if joinURL == "" {
		joinURL = "<URL>"
	}
	rejoin := fmt.Sprintf("To rejoin, move %s aside (or use a new dataDir) and run `m3sup run --join %s --token <T>` with a new token from `m3sup token create`",
		lay.root, joinURL)
	if !lf.Removed {
		return hostLeftError(fmt.Sprintf("this host (%s) left the cluster at %s with `m3sup leave` (%s); its etcd and M3 data are stale. %s",
			lf.Node, lf.Left.Format(time.RFC3339), lay.leftFile(), rejoin))
	}
	how := fmt.Sprintf("by %s with `m3sup remove-host` at %s", lf.RemovedBy, lf.Left.Format(time.RFC3339))
	if lf.RemovedBy == "" {
		how = fmt.Sprintf("with `m3sup remove-host` on another host (which one, and when, could not be read; noticed at %s)", lf.Left.Format(time.RFC3339))
	}
	return hostLeftError(fmt.Sprintf("this host (%s) was removed from the cluster %s, while it was down (%s); its etcd and M3 data are stale and m3sup will not run on them. %s",
		lf.Node, how, lay.leftFile(), rejoin))
}

// hostLeftError is checkNotLeft's refusal: its own message, of kind
// ErrHostLeft.
type hostLeftError string

func (e hostLeftError) Error() string        { return string(e) }
func (e hostLeftError) Is(target error) bool { return target == ErrHostLeft }

// Leave implements api.Leaver.
func (s *Supervisor) Leave(ctx context.Context) (api.LeaveResult, error) {
	name := s.cfg.NodeName
	if !s.multiHost() {
		return api.LeaveResult{}, api.Errorf(api.ErrConflict, "cannot leave: this m3sup runs a single-node cluster (no cluster.joinListen, not joined with --join): there is no cluster to leave; stop m3sup instead")
	}
	s.mu.Lock()
	e, c, ca := s.etcd, s.m3, s.ca
	s.mu.Unlock()
	if e == nil || c == nil {
		return api.LeaveResult{}, api.Errorf(api.ErrConflict, "cannot leave yet: m3sup is still starting (etcd or M3 not connected yet); retry in a moment")
	}
	cli := e.Client()
	res := api.LeaveResult{Node: name, EtcdRole: "client", State: api.LeaveStateLeaving}
	if e.Member() {
		res.EtcdRole = "voter"
	}
	lv, seen, err := cluster.LeavingHostsAt(ctx, cli)
	if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
	}
	p, exists, err := c.Placement(ctx)
	if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: read M3's placement: %w", err)
	}
	_, res.InPlacement = p.Instances[name]
	if _, already := lv[name]; already {
		res.Message = "already leaving"
		s.leave.request()
		return res, nil
	}
	if ca != nil {
		hosts, err := cluster.Hosts(ctx, cli)
		if err != nil {
			return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
		}
		members, err := store.Members(ctx, cli)
		if err != nil {
			return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
		}
		if err := checkCAHolders(name, hosts, members, lv); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: %w (nothing changed)", api.ErrConflict, err)
		}
	}
	if exists {
		delete(lv, name)
		if err := cluster.CheckLeave(p, p.ReplicaFactor, name, slices.Sorted(maps.Keys(lv))); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: %w (nothing changed)", api.ErrConflict, err)
		}
	}
	if e.Member() {
		if err := store.CheckRemoval(ctx, cli, e.MemberID()); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: cannot leave: removing this host's etcd member now would risk the cluster's quorum (nothing changed): %w", api.ErrConflict, err)
		}
	}
	if err := cluster.MarkLeaving(ctx, cli, name, time.Now(), seen); errors.Is(err, cluster.ErrLeaveRace) {
		return api.LeaveResult{}, fmt.Errorf("%w: cannot leave now (nothing changed; retry): %w", api.ErrConflict, err)
	} else if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
	}
	s.log.Info("leaving the cluster", zap.Bool("in_placement", res.InPlacement), zap.String("etcd_role", res.EtcdRole))
	res.Message = "marked leaving; the cluster controller removes this host's instance, M3 streams its shards away, then m3sup stops its containers, leaves etcd and exits"
	s.leave.request()
	return res, nil
}

// checkCAHolders refuses the leave of name, a host that holds the cluster
// CA, unless another host that stays (registered, not leaving, an etcd
// voter) holds it too: without one, no host could issue tokens or admit new
// hosts any more.
func checkCAHolders(name string, hosts []cluster.Host, members []store.Member, leaving map[string]cluster.Leaving) error {
	voters := map[string]bool{}
	for _, m := range members {
		if !m.IsLearner && m.Name != "" {
			voters[m.Name] = true
		}
	}
	for _, h := range hosts {
		if _, l := leaving[h.Name]; h.Name != name && h.HoldsCA && voters[h.Name] && !l {
			return nil
		}
	}
	return fmt.Errorf("cannot leave: %s is the last host that holds the cluster CA, without which no host could join the cluster; "+
		"first let another etcd voter hold it: a voter that joins now receives it with its join (voters that joined an older m3sup did not), "+
		"and set cluster.joinListen on that voter to serve joins", name)
}

// LeaveDone implements api.Leaver.
func (s *Supervisor) LeaveDone(ctx context.Context) error {
	select {
	case <-s.leave.done:
		return s.leave.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runLeave is the leave actor: it waits for a leave (requested through the
// API, or marked in etcd before this m3sup started), then for the
// controller to remove this host's instance and M3 to settle, and returns
// errLeft; nil when ctx ends first.
func (s *Supervisor) runLeave(ctx context.Context, cli *clientv3.Client, c *m3.Client) error {
	name := s.cfg.NodeName
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lv, err := cluster.LeavingHosts(lctx, cli)
	cancel()
	if err != nil {
		s.log.Warn("cannot tell whether a leave is pending", zap.Error(err))
	} else if _, ok := lv[name]; ok {
		s.log.Info("resuming the leave begun before this m3sup started")
		s.leave.request()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-s.leave.requested:
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p, _, err := c.Placement(pctx)
		cancel()
		var msg string
		switch in, placed := p.Instances[name]; {
		case err != nil:
			msg = "reading M3's placement: " + err.Error()
		case placed && hasShardState(in, m3.ShardLeaving):
			msg = "M3 streams this host's shards to the others: " + shardLine(p)
		case placed:
			msg = "waiting for the cluster controller to remove instance " + name + " from the placement (" + shardLine(p) + ")"
		case !p.AllAvailable() && len(p.Instances) > 0:
			msg = "instance removed; waiting for every shard to be AVAILABLE (" + shardLine(p) + ")"
		default:
			s.log.Info("this host's instance is gone from the placement and every shard is AVAILABLE; stopping", zap.Int("instances", len(p.Instances)))
			return errLeft
		}
		s.setPhase(PhaseLeaving, msg)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func hasShardState(in m3.PlacementInstance, state string) bool {
	return slices.ContainsFunc(in.Shards, func(sh m3.Shard) bool { return sh.State == state })
}

func shardLine(p m3.Placement) string {
	return fmt.Sprintf("%d instances, shards %v", len(p.Instances), p.ShardStates())
}

// finishLeave runs once the daemon's actors stopped after errLeft: it
// removes what is left of this host from the cluster, in order, and
// records the leave in the data dir.
func (s *Supervisor) finishLeave(ctx context.Context, lay layout, rt *containerd.Runtime, e *store.Etcd) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	name := s.cfg.NodeName
	s.setPhase(PhaseLeaving, "stopping this host's containers")
	if err := removeContainers(ctx, rt, s.cfg.DBNode.StopTimeout.D()); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	cli := e.Client()
	if e.Member() {
		s.setPhase(PhaseLeaving, "removing this host's etcd member")
		if err := removeOwnMember(ctx, cli, e.MemberID()); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
		// At once: a Status request (another host's `m3sup status`, whose
		// client may list this member first) reaching the removed member
		// would crash this process (an etcd panic) before the leave is done.
		e.StopMember()
		s.log.Info("etcd member removed", zap.String("member", fmt.Sprintf("%x", e.MemberID())))
	}
	// Registry key, per-host keys, rollout state and, last, the leaving
	// record, in one transaction.
	if err := deleteHostKeys(ctx, cli, name, nil); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	lf := leftFile{Node: name, Left: time.Now().UTC(), JoinURL: s.opts.Join.URL}
	if cf, err := join.ReadClusterFile(lay.clusterFile()); err == nil {
		lf.JoinURL = cf.JoinURL
	}
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if err := pki.WriteFileAtomic(lay.leftFile(), b, 0o600); err != nil {
		return fmt.Errorf("leave: record it in %s: %w", lay.leftFile(), err)
	}
	s.log.Info("left the cluster", zap.String("record", lay.leftFile()))
	return nil
}

// removeContainers stops and deletes every m3sup container in the
// runtime's namespace (the agent already did, unless --keep-running).
func removeContainers(ctx context.Context, rt *containerd.Runtime, stopTimeout time.Duration) error {
	list, err := rt.List(ctx)
	if err != nil {
		return fmt.Errorf("remove containers: %w", err)
	}
	var errs []error
	for _, c := range list {
		if c.Labels[runtime.LabelOwner] != runtime.OwnerValue {
			continue
		}
		if _, err := rt.Stop(ctx, c.ID, stopTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove containers: %w", err)
	}
	return nil
}

// removeOwnMember removes this host's etcd member through the other
// voters (the client keeps working once the local member is gone), with
// RemoveMember's quorum guard.
func removeOwnMember(ctx context.Context, cli *clientv3.Client, id uint64) error {
	members, err := store.Members(ctx, cli)
	if err != nil {
		return err
	}
	var others []string
	for _, m := range members {
		if m.ID != id && !m.IsLearner {
			others = append(others, m.ClientURLs...)
		}
	}
	if len(others) == 0 {
		return fmt.Errorf("remove etcd member %x: it is the last voter: %w", id, store.ErrQuorumAtRisk)
	}
	cli.SetEndpoints(others...)
	return store.RemoveMember(ctx, cli, id)
}
