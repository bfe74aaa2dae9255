package supervisor

// Removing another host that is gone for good (`m3sup remove-host NAME`,
// multi-host mode), run on any live host. The removed host goes through:
//
//	RemoveHost (API): refuse, changing nothing, when NAME is this host or
//	is registered (alive: it must run `m3sup leave` itself), when M3 would
//	keep fewer than RF instances or isolation groups, or when removing its
//	etcd member would risk quorum; else mark it leaving with RemovedBy
//	(cluster.MarkRemoved) and remove its etcd member (quorum-guarded)
//	→ the controller removes its instance at once; M3 streams its shards
//	from the other replicas until every shard is AVAILABLE
//	→ forgetHost (the waiting RemoveHostDone, or the controller leader for
//	a remove-host nobody waits for): its etcd member if one is left, then
//	one transaction deleting its registry, per-host, rollout and leaving
//	keys and writing its tombstone (cluster.RemovedPrefix) → gone; should
//	it come back on its old data dir, it refuses to run (removed.go).
//
// Every step is idempotent and keyed by name: a remove-host interrupted
// anywhere (this m3sup restarted, the CLI killed) is finished by the
// controller or by running remove-host again.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// RemoveHost implements api.HostRemover.
func (s *Supervisor) RemoveHost(ctx context.Context, name string) (api.RemoveHostResult, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return api.RemoveHostResult{}, api.Errorf(api.ErrInvalid, "remove-host %q: a host name is non-empty, without slashes or spaces", name)
	}
	if name == s.cfg.NodeName {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s: it is this host; run `m3sup leave` to decommission it (nothing changed)", name)
	}
	if !s.multiHost() {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s: this m3sup runs a single-node cluster (no cluster.joinListen, not joined with --join): there is no other host", name)
	}
	s.mu.Lock()
	e, c := s.etcd, s.m3
	s.mu.Unlock()
	if e == nil || c == nil {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s yet: m3sup is still starting (etcd or M3 not connected yet); retry in a moment", name)
	}
	cli := e.Client()
	hosts, err := cluster.Hosts(ctx, cli)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	if slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s: %s is running (registered in etcd); run `m3sup leave` on it (nothing changed)", name, name)
	}
	lv, seen, err := cluster.LeavingHostsAt(ctx, cli)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	p, exists, err := c.Placement(ctx)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: read M3's placement: %w", err)
	}
	members, err := store.Members(ctx, cli)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	res := api.RemoveHostResult{Node: name, EtcdRole: "client", State: api.RemoveStateRemoving}
	var member *store.Member
	if i := slices.IndexFunc(members, func(m store.Member) bool { return m.Name == name }); i >= 0 {
		member = &members[i]
		res.EtcdRole = "voter"
		if member.IsLearner {
			res.EtcdRole = "learner"
		}
	}
	_, res.InPlacement = p.Instances[name]
	rec, leaving := lv[name]

	if !leaving && !res.InPlacement && member == nil {
		// Nothing of it drives M3 or etcd: finish an earlier removal's
		// cleanup, or say there is no such host.
		n, err := hostKeyCount(ctx, cli, name)
		if err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		if n == 0 {
			if r, ok, err := cluster.RemovedHost(ctx, cli, name); err == nil && ok {
				return api.RemoveHostResult{}, api.Errorf(api.ErrNotFound, "no host %s: not in M3's placement, not an etcd member, no records in etcd; it was removed by %s at %s", name, r.RemovedBy, r.At.Format(time.RFC3339))
			}
			return api.RemoveHostResult{}, api.Errorf(api.ErrNotFound, "no host %s: not in M3's placement, not an etcd member, no records in etcd", name)
		}
		if err := denyHost(ctx, cli, name); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		if err := forgetHost(ctx, cli, name, s.cfg.NodeName); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		s.log.Info("removed host's leftover records deleted", zap.String("host", name), zap.Int64("keys", n))
		res.State, res.Message = api.RemoveStateRemoved, fmt.Sprintf("already out of the placement and etcd; deleted its %d leftover record(s)", n)
		return res, nil
	}

	if rec.RemovedBy == "" {
		if exists {
			delete(lv, name)
			if err := cluster.CheckLeave(p, p.ReplicaFactor, name, slices.Sorted(maps.Keys(lv))); err != nil {
				return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s: %w (nothing changed)", api.ErrConflict, name, err)
			}
		}
		if member != nil {
			if err := store.CheckRemoval(ctx, cli, member.ID); err != nil && !errors.Is(err, store.ErrNotMember) {
				return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s: removing its etcd member now would risk the cluster's quorum (nothing changed): %w", api.ErrConflict, name, err)
			}
		}
		since := time.Now()
		if leaving && !rec.Since.IsZero() {
			since = rec.Since // it began `m3sup leave` before it died
		}
		if err := cluster.MarkRemoved(ctx, cli, name, s.cfg.NodeName, since, seen); errors.Is(err, cluster.ErrLeaveRace) {
			return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s now (nothing changed; retry): %w", api.ErrConflict, name, err)
		} else if err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		s.log.Info("removing a host that is gone", zap.String("host", name), zap.Bool("in_placement", res.InPlacement), zap.String("etcd_role", res.EtcdRole))
		res.Message = "marked leaving; the cluster controller removes its instance and M3 streams its shards from the other replicas"
	} else {
		res.Message = "already being removed (by " + rec.RemovedBy + "); resuming"
	}

	if err := denyHost(ctx, cli, name); err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %s is marked leaving, but: %w; run remove-host again on a voter", name, err)
	}
	if member != nil {
		err := store.RemoveMember(ctx, cli, member.ID)
		switch {
		case errors.Is(err, store.ErrNotMember):
		case errors.Is(err, store.ErrQuorumAtRisk):
			return api.RemoveHostResult{}, fmt.Errorf("%w: %s is marked leaving, but its etcd member stays for now: %w; run remove-host again once the voters are healthy", api.ErrConflict, name, err)
		case err != nil:
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %s is marked leaving, but: %w; run remove-host again", name, err)
		default:
			res.EtcdMemberRemoved = true
			s.log.Info("removed host's etcd member removed", zap.String("host", name), zap.String("member", fmt.Sprintf("%x", member.ID)))
		}
	}
	if !res.InPlacement && (!exists || p.AllAvailable()) {
		if err := forgetHost(ctx, cli, name, s.cfg.NodeName); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		res.State, res.Message = api.RemoveStateRemoved, "removed: it had no instance in the placement; its records are gone"
	}
	return res, nil
}

// RemoveHostDone implements api.HostRemover: it waits for the controller
// to remove name's instance and for every shard to be AVAILABLE, then
// forgets the host (unless the controller leader already did).
func (s *Supervisor) RemoveHostDone(ctx context.Context, name string) error {
	s.mu.Lock()
	e, c := s.etcd, s.m3
	s.mu.Unlock()
	if e == nil || c == nil {
		return api.Errorf(api.ErrConflict, "remove-host %s: m3sup is not connected to etcd and M3", name)
	}
	cli := e.Client()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := ""
	for {
		msg, done, err := removeHostStep(ctx, cli, c, name, s.cfg.NodeName)
		if err != nil {
			msg = err.Error()
		}
		if done {
			return nil
		}
		if msg != last {
			s.log.Info("removing host", zap.String("host", name), zap.String("state", msg))
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove-host %s: %w (last: %s; the removal goes on)", name, ctx.Err(), msg)
		case <-tick.C:
		}
	}
}

// placementReader reads M3's placement (*m3.Client).
type placementReader interface {
	Placement(ctx context.Context) (m3.Placement, bool, error)
}

// removeHostStep looks once at host name's removal and forgets the host
// when it is done (on host self); it says what it waits for otherwise.
func removeHostStep(ctx context.Context, cli *clientv3.Client, c placementReader, name, self string) (msg string, done bool, err error) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hosts, err := cluster.Hosts(sctx, cli)
	if err != nil {
		return "", false, err
	}
	lv, err := cluster.LeavingHosts(sctx, cli)
	if err != nil {
		return "", false, err
	}
	p, exists, err := c.Placement(sctx)
	if err != nil {
		return "", false, fmt.Errorf("read M3's placement: %w", err)
	}
	_, placed := p.Instances[name]
	if _, leaving := lv[name]; !leaving && !placed {
		return "", true, nil // forgotten (by the controller leader)
	}
	if slices.Contains(cluster.Forgettable(lv, hosts, p, exists), name) {
		if err := forgetHost(sctx, cli, name, self); err != nil {
			return "", false, err
		}
		return "", true, nil
	}
	switch {
	case placed:
		return fmt.Sprintf("waiting for the controller to remove instance %s (%s)", name, shardLine(p)), false, nil
	case slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }):
		return name + " is registered again: it finishes its own leave", false, nil
	}
	return "instance removed; waiting for every shard to be AVAILABLE (" + shardLine(p) + ")", false, nil
}

// forgetHost drops a removed host from the cluster: its etcd member if one
// is left (quorum-guarded), then, in one transaction, its per-host keys,
// registry key, rollout state and leaving record, and its tombstone is
// written (unless it has one): removed by its leaving record's RemovedBy,
// else by self (the host forgetting it). Idempotent.
func forgetHost(ctx context.Context, cli *clientv3.Client, name, self string) error {
	if _, err := store.RemoveMemberNamed(ctx, cli, name); err != nil {
		return fmt.Errorf("forget %s: %w", name, err)
	}
	by := self
	lv, err := cluster.LeavingHosts(ctx, cli)
	if err != nil {
		return fmt.Errorf("forget %s: %w", name, err)
	}
	if rec := lv[name]; rec.RemovedBy != "" {
		by = rec.RemovedBy
	}
	return deleteHostKeys(ctx, cli, name, &cluster.Removed{Node: name, RemovedBy: by, At: time.Now()})
}

// deleteHostKeys deletes every etcd key about host name in one
// transaction, its leaving record last, and writes tomb, if not nil, as
// its tombstone unless it has one. `m3sup leave` writes none: the host
// that left records it in its own data dir (left.json), which refuses
// before etcd is reached, and a host that left may join again with a new
// data dir without anything to clear.
func deleteHostKeys(ctx context.Context, cli *clientv3.Client, name string, tomb *cluster.Removed) error {
	ops := append([]clientv3.Op{clientv3.OpDelete(store.HostKeysPrefix(name), clientv3.WithPrefix())}, cluster.ForgetOps(name)...)
	txn := cli.Txn(ctx)
	if tomb != nil {
		cmp, put, err := cluster.Tombstone(*tomb)
		if err != nil {
			return fmt.Errorf("delete %s's keys: %w", name, err)
		}
		txn = txn.If(cmp).Then(append(ops, put)...).Else(ops...)
	} else {
		txn = txn.Then(ops...)
	}
	if _, err := txn.Commit(); err != nil {
		return fmt.Errorf("delete %s's keys: %w", name, err)
	}
	return nil
}

// hostKeyCount counts the etcd keys about host name that deleteHostKeys
// deletes.
func hostKeyCount(ctx context.Context, cli *clientv3.Client, name string) (int64, error) {
	var n int64
	for _, get := range []struct {
		key  string
		opts []clientv3.OpOption
	}{
		{store.HostKeysPrefix(name), []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}},
		{cluster.RegistryPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
		{cluster.RolloutHostsPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
		{cluster.LeavingPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
	} {
		resp, err := cli.Get(ctx, get.key, get.opts...)
		if err != nil {
			return 0, fmt.Errorf("read %s's keys: %w", name, err)
		}
		n += resp.Count
	}
	return n, nil
}

// denyHost is the deny-list of remove-host: the removed host's etcd
// identities (its client certificate's CN, and its M3's) keep only the
// right to read the tombstones and leaving records, at once and on
// connections already open (etcd checks permissions per request), so a
// removed host that comes back learns who removed it and nothing else. A
// join under the same name with a valid token gives them back.
func denyHost(ctx context.Context, cli *clientv3.Client, name string) error {
	for _, u := range []string{pki.NodeCN(name), pki.M3CN(name)} {
		if err := store.SetUserRole(ctx, cli, u, store.RoleRemoved); err != nil {
			return fmt.Errorf("deny %s's etcd identity: %w", name, err)
		}
	}
	return nil
}
