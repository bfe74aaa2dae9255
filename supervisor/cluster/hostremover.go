package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// HostRemover removes another host that is gone for good (`m3sup
// remove-host NAME`, multi-host mode), run on any live host; it implements
// api.HostRemover. The removed host goes through:
//
//	RemoveHost (API): refuse, changing nothing, when NAME is this host or
//	is registered (alive: it must run `m3sup leave` itself), when M3 would
//	keep fewer than RF instances or isolation groups, or when removing its
//	etcd member would risk quorum; else mark it leaving with RemovedBy
//	(MarkRemoved) and remove its etcd member (quorum-guarded)
//	→ the controller removes its instance at once; M3 streams its shards
//	from the other replicas until every shard is AVAILABLE
//	→ Forget (the waiting RemoveHostDone, or the controller leader for
//	a remove-host nobody waits for): its etcd member if one is left, then
//	one transaction deleting its registry, per-host, rollout and leaving
//	keys and writing its tombstone (RemovedPrefix) → gone; should
//	it come back on its old data dir, it refuses to run (LeftRecord).
//
// Every step is idempotent and keyed by name: a remove-host interrupted
// anywhere (this m3sup restarted, the CLI killed) is finished by the
// controller or by running remove-host again.
//
// The refusals before a HostRemover exists (a single-node m3sup, etcd or
// M3 not connected yet) are the daemon's; CheckRemoveHostName comes first
// either way.
type HostRemover struct {
	local Local
}

// NewHostRemover returns this host's HostRemover; it does no I/O.
func NewHostRemover(l Local) *HostRemover { return &HostRemover{local: l} }

// CheckRemoveHostName refuses, changing nothing, a remove-host of name by
// host self: a bad name (ErrInvalid), or self itself (ErrConflict).
func CheckRemoveHostName(name, self string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return api.Errorf(api.ErrInvalid, "remove-host %q: a host name is non-empty, without slashes or spaces", name)
	}
	if name == self {
		return api.Errorf(api.ErrConflict, "cannot remove %s: it is this host; run `m3sup leave` to decommission it (nothing changed)", name)
	}
	return nil
}

// RemoveHost implements api.HostRemover.
func (r *HostRemover) RemoveHost(ctx context.Context, name string) (api.RemoveHostResult, error) {
	if err := CheckRemoveHostName(name, r.local.Node); err != nil {
		return api.RemoveHostResult{}, err
	}
	cli, c := r.local.Etcd, r.local.M3
	hosts, err := Hosts(ctx, cli)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	if slices.ContainsFunc(hosts, func(h Host) bool { return h.Name == name }) {
		return api.RemoveHostResult{}, api.Errorf(api.ErrConflict, "cannot remove %s: %s is running (registered in etcd); run `m3sup leave` on it (nothing changed)", name, name)
	}
	lv, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	p, exists, err := c.Placement(ctx)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: read M3's placement: %w", err)
	}
	members, err := r.local.Admin.Members(ctx)
	if err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
	}
	res := api.RemoveHostResult{Node: name, EtcdRole: "client", State: api.RemoveStateRemoving}
	var member *Member
	if i := slices.IndexFunc(members, func(m Member) bool { return m.Name == name }); i >= 0 {
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
		n, err := r.local.hostKeyCount(ctx, name)
		if err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		if n == 0 {
			if tomb, ok, err := RemovedHost(ctx, cli, name); err == nil && ok {
				return api.RemoveHostResult{}, api.Errorf(api.ErrNotFound, "no host %s: not in M3's placement, not an etcd member, no records in etcd; it was removed by %s at %s", name, tomb.RemovedBy, tomb.At.Format(time.RFC3339))
			}
			return api.RemoveHostResult{}, api.Errorf(api.ErrNotFound, "no host %s: not in M3's placement, not an etcd member, no records in etcd", name)
		}
		if err := r.deny(ctx, name); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		if err := r.Forget(ctx, name); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		r.local.Logger.Info("removed host's leftover records deleted", zap.String("host", name), zap.Int64("keys", n))
		res.State, res.Message = api.RemoveStateRemoved, fmt.Sprintf("already out of the placement and etcd; deleted its %d leftover record(s)", n)
		return res, nil
	}

	if rec.RemovedBy == "" {
		if exists {
			delete(lv, name)
			if err := CheckLeave(p, p.ReplicaFactor, name, slices.Sorted(maps.Keys(lv))); err != nil {
				return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s: %w (nothing changed)", api.ErrConflict, name, err)
			}
		}
		if member != nil {
			if err := r.local.Admin.CheckRemoval(ctx, member.ID); err != nil && !errors.Is(err, ErrNotMember) {
				return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s: removing its etcd member now would risk the cluster's quorum (nothing changed): %w", api.ErrConflict, name, err)
			}
		}
		since := time.Now()
		if leaving && !rec.Since.IsZero() {
			since = rec.Since // it began `m3sup leave` before it died
		}
		if err := MarkRemoved(ctx, cli, name, r.local.Node, since, seen); errors.Is(err, ErrLeaveRace) {
			return api.RemoveHostResult{}, fmt.Errorf("%w: cannot remove %s now (nothing changed; retry): %w", api.ErrConflict, name, err)
		} else if err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		r.local.Logger.Info("removing a host that is gone", zap.String("host", name), zap.Bool("in_placement", res.InPlacement), zap.String("etcd_role", res.EtcdRole))
		res.Message = "marked leaving; the cluster controller removes its instance and M3 streams its shards from the other replicas"
	} else {
		res.Message = "already being removed (by " + rec.RemovedBy + "); resuming"
	}

	if err := r.deny(ctx, name); err != nil {
		return api.RemoveHostResult{}, fmt.Errorf("remove-host: %s is marked leaving, but: %w; run remove-host again on a voter", name, err)
	}
	if member != nil {
		err := r.local.Admin.RemoveMember(ctx, member.ID)
		switch {
		case errors.Is(err, ErrNotMember):
		case errors.Is(err, ErrQuorumAtRisk):
			return api.RemoveHostResult{}, fmt.Errorf("%w: %s is marked leaving, but its etcd member stays for now: %w; run remove-host again once the voters are healthy", api.ErrConflict, name, err)
		case err != nil:
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %s is marked leaving, but: %w; run remove-host again", name, err)
		default:
			res.EtcdMemberRemoved = true
			r.local.Logger.Info("removed host's etcd member removed", zap.String("host", name), zap.String("member", fmt.Sprintf("%x", member.ID)))
		}
	}
	if !res.InPlacement && (!exists || p.AllAvailable()) {
		if err := r.Forget(ctx, name); err != nil {
			return api.RemoveHostResult{}, fmt.Errorf("remove-host: %w", err)
		}
		res.State, res.Message = api.RemoveStateRemoved, "removed: it had no instance in the placement; its records are gone"
	}
	return res, nil
}

// RemoveHostDone implements api.HostRemover: it waits for the controller
// to remove name's instance and for every shard to be AVAILABLE, then
// forgets the host (unless the controller leader already did).
func (r *HostRemover) RemoveHostDone(ctx context.Context, name string) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := ""
	for {
		msg, done, err := r.step(ctx, name)
		if err != nil {
			msg = err.Error()
		}
		if done {
			return nil
		}
		if msg != last {
			r.local.Logger.Info("removing host", zap.String("host", name), zap.String("state", msg))
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove-host %s: %w (last: %s; the removal goes on)", name, ctx.Err(), msg)
		case <-tick.C:
		}
	}
}

// step looks once at host name's removal and forgets the host when it is
// done; it says what it waits for otherwise.
func (r *HostRemover) step(ctx context.Context, name string) (msg string, done bool, err error) {
	cli, c := r.local.Etcd, r.local.M3
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hosts, err := Hosts(sctx, cli)
	if err != nil {
		return "", false, err
	}
	lv, err := LeavingHosts(sctx, cli)
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
	if slices.Contains(Forgettable(lv, hosts, p, exists), name) {
		if err := r.Forget(sctx, name); err != nil {
			return "", false, err
		}
		return "", true, nil
	}
	switch {
	case placed:
		return fmt.Sprintf("waiting for the controller to remove instance %s (%s)", name, shardLine(p)), false, nil
	case slices.ContainsFunc(hosts, func(h Host) bool { return h.Name == name }):
		return name + " is registered again: it finishes its own leave", false, nil
	}
	return "instance removed; waiting for every shard to be AVAILABLE (" + shardLine(p) + ")", false, nil
}

// Forget drops a removed host from the cluster: its etcd member if one
// is left (quorum-guarded), then, in one transaction, its per-host keys,
// registry key, rollout state and leaving record, and its tombstone is
// written (unless it has one): removed by its leaving record's RemovedBy,
// else by this host (the one forgetting it). Idempotent. The controller
// leader calls it too (Controller.Forget), for a remove-host nobody waits
// for.
func (r *HostRemover) Forget(ctx context.Context, name string) error {
	if err := r.local.Admin.RemoveMemberNamed(ctx, name); err != nil {
		return fmt.Errorf("forget %s: %w", name, err)
	}
	by := r.local.Node
	lv, err := LeavingHosts(ctx, r.local.Etcd)
	if err != nil {
		return fmt.Errorf("forget %s: %w", name, err)
	}
	if rec := lv[name]; rec.RemovedBy != "" {
		by = rec.RemovedBy
	}
	return r.local.deleteHostKeys(ctx, name, &Removed{Node: name, RemovedBy: by, At: time.Now()})
}

// deny is the deny-list of remove-host: the removed host's etcd
// identities (its client certificate's CN, and its M3's) keep only the
// right to read the tombstones and leaving records, at once and on
// connections already open (etcd checks permissions per request), so a
// removed host that comes back learns who removed it and nothing else. A
// join under the same name with a valid token gives them back.
func (r *HostRemover) deny(ctx context.Context, name string) error {
	for _, u := range []string{pki.NodeCN(name), pki.M3CN(name)} {
		if err := r.local.Admin.Deny(ctx, u); err != nil {
			return fmt.Errorf("deny %s's etcd identity: %w", name, err)
		}
	}
	return nil
}
