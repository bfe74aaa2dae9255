package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// ErrLeft ends the daemon's actors once this host's instance is gone from
// the placement (Leaver.Run): the daemon then calls Leaver.Finish.
var ErrLeft = errors.New("this host left the M3 placement")

// Leaver is this host's `m3sup leave` (multi-host mode); it implements
// api.Leaver. The host goes through:
//
//	Leave (API): refuse, changing nothing, on the last host that holds the
//	CA (checkCAHolders), when M3 would keep fewer than RF instances or
//	isolation groups, or when removing this host's etcd member would risk
//	quorum; else mark it leaving in etcd (MarkLeaving)
//	→ Run: the controller removes this host's instance; m3dbnode keeps
//	running while M3 streams its shards away, until the instance is gone
//	and every shard is AVAILABLE → ErrLeft stops the daemon's actors (the
//	agent stops the containers, the registrar deregisters)
//	→ Finish: remove any container left (--keep-running), remove this
//	host's etcd member (through the other voters, quorum-guarded), delete
//	the registry key, per-host keys and the leaving record, write
//	<dataDir>/left.json (LeftRecord)
//	→ m3sup exits 0; `m3sup run` on this data dir refuses from now on.
//
// A leave marked before an m3sup restart resumes when m3sup starts again
// (Run finds the leaving record).
//
// Voters: removing one of three leaves two, still a quorum of the new
// two-member cluster, so it is allowed; what is refused is a removal after
// which the remaining voters would not have a healthy majority, and the
// last voter (EtcdAdmin.CheckRemoval).
//
// The refusals before a Leaver exists (a single-node m3sup, etcd or M3 not
// connected yet) are the daemon's.
type Leaver struct {
	host LeaverHost

	requested chan struct{} // closed by request
	reqOnce   sync.Once
	done      chan struct{} // closed by finish; err is set before
	doneOnce  sync.Once
	err       error
}

// LeaverHost is what a leave needs of this host: Local, and the facts and
// effects that only a leave has.
type LeaverHost struct {
	Local
	// Voter: this host runs an etcd member, MemberID.
	Voter    bool
	MemberID uint64
	// HoldsCA: this host holds the cluster CA.
	HoldsCA bool
	// RemoveContainers stops and deletes every m3sup container of this
	// host (the agent already did, unless --keep-running).
	RemoveContainers func(ctx context.Context) error
	// StopMember stops this host's etcd member at once, once it is removed
	// from the cluster.
	StopMember func()
}

// NewLeaver returns this host's Leaver; it does no I/O.
func NewLeaver(h LeaverHost) *Leaver {
	return &Leaver{host: h, requested: make(chan struct{}), done: make(chan struct{})}
}

// request starts the leave (Run waits for it); idempotent.
func (l *Leaver) request() { l.reqOnce.Do(func() { close(l.requested) }) }

// isRequested reports whether a leave was requested.
func (l *Leaver) isRequested() bool {
	select {
	case <-l.requested:
		return true
	default:
		return false
	}
}

// finish reports the leave's end to LeaveDone; the first call wins.
func (l *Leaver) finish(err error) {
	l.doneOnce.Do(func() { l.err = err; close(l.done) })
}

// Leave implements api.Leaver.
func (l *Leaver) Leave(ctx context.Context) (api.LeaveResult, error) {
	h := l.host
	name, cli := h.Node, h.Etcd
	res := api.LeaveResult{Node: name, EtcdRole: "client", State: api.LeaveStateLeaving}
	if h.Voter {
		res.EtcdRole = "voter"
	}
	leaving, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
	}
	p, exists, err := h.M3.Placement(ctx)
	if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: read M3's placement: %w", err)
	}
	_, res.InPlacement = p.Instances[name]
	if _, already := leaving[name]; already {
		res.Message = "already leaving"
		l.request()
		return res, nil
	}
	if h.HoldsCA {
		hosts, err := Hosts(ctx, cli)
		if err != nil {
			return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
		}
		members, err := h.Admin.Members(ctx)
		if err != nil {
			return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
		}
		if err := checkCAHolders(name, hosts, members, leaving); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: %w (nothing changed)", api.ErrConflict, err)
		}
	}
	if exists {
		delete(leaving, name)
		if err := CheckLeave(p, p.ReplicaFactor, name, slices.Sorted(maps.Keys(leaving))); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: %w (nothing changed)", api.ErrConflict, err)
		}
	}
	if h.Voter {
		if err := h.Admin.CheckRemoval(ctx, h.MemberID); err != nil {
			return api.LeaveResult{}, fmt.Errorf("%w: cannot leave: removing this host's etcd member now would risk the cluster's quorum (nothing changed): %w", api.ErrConflict, err)
		}
	}
	if err := MarkLeaving(ctx, cli, name, time.Now(), seen); errors.Is(err, ErrLeaveRace) {
		return api.LeaveResult{}, fmt.Errorf("%w: cannot leave now (nothing changed; retry): %w", api.ErrConflict, err)
	} else if err != nil {
		return api.LeaveResult{}, fmt.Errorf("leave: %w", err)
	}
	h.Logger.Info("leaving the cluster", zap.Bool("in_placement", res.InPlacement), zap.String("etcd_role", res.EtcdRole))
	res.Message = "marked leaving; the cluster controller removes this host's instance, M3 streams its shards away, then m3sup stops its containers, leaves etcd and exits"
	l.request()
	return res, nil
}

// checkCAHolders refuses the leave of name, a host that holds the cluster
// CA, unless another host that stays (registered, not leaving, an etcd
// voter) holds it too: without one, no host could issue tokens or admit new
// hosts any more.
func checkCAHolders(name string, hosts []Host, members []Member, leaving map[string]Leaving) error {
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
func (l *Leaver) LeaveDone(ctx context.Context) error {
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run is the leave actor: it waits for a leave (requested through the
// API, or marked in etcd before this m3sup started), then for the
// controller to remove this host's instance and M3 to settle, and returns
// ErrLeft; nil when ctx ends first.
func (l *Leaver) Run(ctx context.Context) error {
	h := l.host
	name := h.Node
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leaving, err := LeavingHosts(lctx, h.Etcd)
	cancel()
	if err != nil {
		h.Logger.Warn("cannot tell whether a leave is pending", zap.Error(err))
	} else if _, ok := leaving[name]; ok {
		h.Logger.Info("resuming the leave begun before this m3sup started")
		l.request()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-l.requested:
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p, _, err := h.M3.Placement(pctx)
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
			h.Logger.Info("this host's instance is gone from the placement and every shard is AVAILABLE; stopping", zap.Int("instances", len(p.Instances)))
			return ErrLeft
		}
		h.progress(msg)
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

// Finish runs once the daemon's actors stopped after ErrLeft: it removes
// what is left of this host from the cluster, in order, records the leave
// in the data dir, and reports the outcome to LeaveDone.
func (l *Leaver) Finish(ctx context.Context) error {
	err := l.finishLeave(ctx)
	l.finish(err)
	return err
}

// Stopped tells a requested leave that the daemon stopped (with err)
// before the leave finished; a leave marked in etcd resumes when m3sup
// starts again.
func (l *Leaver) Stopped(err error) {
	if l.isRequested() {
		l.finish(fmt.Errorf("m3sup stopped before the leave finished (%v); it resumes when m3sup starts again", err))
	}
}

func (l *Leaver) finishLeave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	h := l.host
	h.progress("stopping this host's containers")
	if err := h.RemoveContainers(ctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if h.Voter {
		h.progress("removing this host's etcd member")
		if err := l.removeOwnMember(ctx); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
		// At once: a Status request (another host's `m3sup status`, whose
		// client may list this member first) reaching the removed member
		// would crash this process (an etcd panic) before the leave is done.
		h.StopMember()
		h.Logger.Info("etcd member removed", zap.String("member", fmt.Sprintf("%x", h.MemberID)))
	}
	// Registry key, per-host keys, rollout state and, last, the leaving
	// record, in one transaction.
	if err := h.deleteHostKeys(ctx, h.Node, nil); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	path := LeftFile(h.DataDir)
	if err := h.record().recordLeft(time.Now()); err != nil {
		return fmt.Errorf("leave: record it in %s: %w", path, err)
	}
	h.Logger.Info("left the cluster", zap.String("record", path))
	return nil
}

// removeOwnMember removes this host's etcd member through the other
// voters (the client keeps working once the local member is gone), with
// RemoveMember's quorum guard.
func (l *Leaver) removeOwnMember(ctx context.Context) error {
	h := l.host
	id := h.MemberID
	members, err := h.Admin.Members(ctx)
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
		return fmt.Errorf("remove etcd member %x: it is the last voter: %w", id, ErrQuorumAtRisk)
	}
	h.Etcd.SetEndpoints(others...)
	return h.Admin.RemoveMember(ctx, id)
}
