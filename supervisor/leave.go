package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/store"
)

// PhaseLeaving: `m3sup leave` runs; the message says which step.
const PhaseLeaving = "leaving"

// ErrHostLeft: `m3sup run` refuses a data dir whose host left the
// cluster (<dataDir>/left.json). The command exits with its own status
// for it, so systemd does not restart a host that left.
var ErrHostLeft = cluster.ErrHostLeft

// connectLeave builds this host's cluster.Leaver and cluster.HostRemover
// (multi-host mode), once etcd and M3 are connected, and returns the
// Leaver for runNode to run. holdsCA: this host holds the cluster CA.
func (s *Supervisor) connectLeave(local cluster.Local, rt *containerd.Runtime, e *store.Etcd, holdsCA bool) *cluster.Leaver {
	local.Progress = func(msg string) { s.status.setPhase(PhaseLeaving, msg) }
	l := cluster.NewLeaver(cluster.LeaverHost{Local: local, Voter: e.Member(), MemberID: e.MemberID(), HoldsCA: holdsCA,
		RemoveContainers: func(ctx context.Context) error { return removeContainers(ctx, rt, s.cfg.DBNode.StopTimeout.D()) },
		StopMember:       e.StopMember,
	})
	s.leave.connect(l, cluster.NewHostRemover(local))
	return l
}

// leaveAPI is this host's api.Leaver and api.HostRemover: it refuses on a
// single-node m3sup and while the cluster's Leaver and HostRemover are not
// connected (etcd and M3 still starting), and forwards to them after.
type leaveAPI struct {
	Node string
	// MultiHost reports whether this host runs in multi-host mode (Run
	// settles it before the API serves).
	MultiHost func() bool

	mu      sync.Mutex
	leaver  *cluster.Leaver
	remover *cluster.HostRemover
}

var (
	_ api.Leaver      = (*leaveAPI)(nil)
	_ api.HostRemover = (*leaveAPI)(nil)
)

// connect hands the API this host's Leaver and HostRemover (connectLeave).
func (a *leaveAPI) connect(l *cluster.Leaver, r *cluster.HostRemover) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.leaver, a.remover = l, r
}

// parts returns this host's Leaver and HostRemover, nil before connect.
func (a *leaveAPI) parts() (*cluster.Leaver, *cluster.HostRemover) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leaver, a.remover
}

// Leave implements api.Leaver with the cluster.Leaver.
func (a *leaveAPI) Leave(ctx context.Context) (api.LeaveResult, error) {
	if !a.MultiHost() {
		return api.LeaveResult{}, api.Errorf(api.ErrConflict, "cannot leave: this m3sup runs a single-node cluster (no cluster.joinListen, not joined with --join): there is no cluster to leave; stop m3sup instead")
	}
	l, _ := a.parts()
	if l == nil {
		return api.LeaveResult{}, api.Errorf(api.ErrConflict, "cannot leave yet: m3sup is still starting (etcd or M3 not connected yet); retry in a moment")
	}
	return l.Leave(ctx)
}

// LeaveDone implements api.Leaver with the cluster.Leaver.
func (a *leaveAPI) LeaveDone(ctx context.Context) error {
	l, _ := a.parts()
	if l == nil { // no leave was accepted
		<-ctx.Done()
		return ctx.Err()
	}
	return l.LeaveDone(ctx)
}

// RemoveHost implements api.HostRemover with the cluster.HostRemover.
func (a *leaveAPI) RemoveHost(ctx context.Context, name string) (api.RemoveHostResult, error) {
	if err := cluster.CheckRemoveHostName(name, a.Node); err != nil {
		return api.RemoveHostResult{}, err
	}
	if !a.MultiHost() {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s: this m3sup runs a single-node cluster (no cluster.joinListen, not joined with --join): there is no other host", name)
	}
	_, r := a.parts()
	if r == nil {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s yet: m3sup is still starting (etcd or M3 not connected yet); retry in a moment", name)
	}
	return r.RemoveHost(ctx, name)
}

// RemoveHostDone implements api.HostRemover with the cluster.HostRemover.
func (a *leaveAPI) RemoveHostDone(ctx context.Context, name string) error {
	_, r := a.parts()
	if r == nil {
		return api.Errorf(api.ErrConflict, "remove-host %s: m3sup is not connected to etcd and M3", name)
	}
	return r.RemoveHostDone(ctx, name)
}

// leftRecord is this host's <dataDir>/left.json, with the join endpoint it
// joined through (cluster.json's, else --join's) for the advice on
// rejoining in its refusal.
func (s *Supervisor) leftRecord() cluster.LeftRecord {
	dirs := layout{root: s.cfg.DataDir}
	joinURL := s.opts.Join.URL
	if cf, err := join.ReadClusterFile(dirs.clusterFile()); err == nil {
		joinURL = cf.JoinURL
	}
	return cluster.LeftRecord{DataDir: dirs.root, Node: s.cfg.NodeName, JoinURL: joinURL}
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

// etcdAdmin is cluster.EtcdAdmin over package store.
type etcdAdmin struct{ cli *clientv3.Client }

func (a etcdAdmin) Members(ctx context.Context) ([]cluster.Member, error) {
	ms, err := store.Members(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	out := make([]cluster.Member, len(ms))
	for i, m := range ms {
		out[i] = cluster.Member{ID: m.ID, Name: m.Name, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
	}
	return out, nil
}

func (a etcdAdmin) CheckRemoval(ctx context.Context, id uint64) error {
	return memberErr(store.CheckRemoval(ctx, a.cli, id))
}

func (a etcdAdmin) RemoveMember(ctx context.Context, id uint64) error {
	return memberErr(store.RemoveMember(ctx, a.cli, id))
}

func (a etcdAdmin) RemoveMemberNamed(ctx context.Context, name string) error {
	_, err := store.RemoveMemberNamed(ctx, a.cli, name)
	return memberErr(err)
}

func (a etcdAdmin) Deny(ctx context.Context, user string) error {
	return store.SetUserRole(ctx, a.cli, user, store.RoleRemoved)
}

func (a etcdAdmin) HostKeysPrefix(name string) string { return store.HostKeysPrefix(name) }

// memberErr gives store's membership errors cluster's kind as well,
// keeping their message.
func memberErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotMember):
		return kindedErr{err, cluster.ErrNotMember}
	case errors.Is(err, store.ErrQuorumAtRisk):
		return kindedErr{err, cluster.ErrQuorumAtRisk}
	}
	return err
}

// kindedErr is err, also of kind.
type kindedErr struct{ err, kind error }

func (e kindedErr) Error() string   { return e.err.Error() }
func (e kindedErr) Unwrap() []error { return []error{e.err, e.kind} }
