package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// LeavingPrefix holds one key per host that is being decommissioned
// (`m3sup leave`): LeavingPrefix + name, JSON Leaving, with no lease — it
// outlives the host's m3sup restarts, so the controller keeps removing the
// host's instance and status keeps showing it as leaving until the host
// has left and deletes the key.
//
// A leaving host goes through:
//
//	MarkLeaving → controller removes its placement instance (Plan, while
//	every shard is AVAILABLE and RF instances and isolation groups remain)
//	→ M3 streams its shards away; the instance is gone and every shard is
//	AVAILABLE → the host stops its containers, leaves etcd and deletes its
//	keys, this record last (ForgetOps) → gone (Leaver)
const LeavingPrefix = "/m3sup/v1/leaving/"

// ErrCannotLeave means a host's leave was refused: removing it would leave
// the placement with fewer instances or isolation groups than the
// replication factor.
var ErrCannotLeave = errors.New("cannot leave")

// Leaving is one leaving host's record.
type Leaving struct {
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
	// RemovedBy is set by `m3sup remove-host` (the host that ran it): the
	// host is gone for good and cannot finish its own leave, so once its
	// instance is out of the placement and every shard is AVAILABLE the
	// controller forgets it (Controller.Forget).
	RemovedBy string `json:"removedBy,omitempty"`
}

// ErrLeaveRace means another host was marked leaving between the reading
// of the leaving hosts and MarkLeaving: decide again.
var ErrLeaveRace = errors.New("another host started leaving at the same time")

// MarkLeaving records that host name is leaving, atomically with the
// decision that allowed it: only if no leaving record was created or
// changed after revision seen (LeavingHostsAt's), so two hosts that each
// checked CheckLeave against the other's absence cannot both be marked
// (ErrLeaveRace). Zero seen skips that condition. A host already marked
// keeps its first record.
func MarkLeaving(ctx context.Context, cli *clientv3.Client, name string, now time.Time, seen int64) error {
	b, err := json.Marshal(Leaving{Name: name, Since: now.UTC()})
	if err != nil {
		return fmt.Errorf("mark %s leaving: %w", name, err)
	}
	key := LeavingPrefix + name
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if seen > 0 {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(LeavingPrefix), "<", seen+1).WithPrefix())
	}
	resp, err := cli.Txn(ctx).If(conds...).Then(clientv3.OpPut(key, string(b))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("mark %s leaving: %w", name, err)
	}
	if !resp.Succeeded && len(resp.Responses) > 0 && len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return fmt.Errorf("mark %s leaving: %w", name, ErrLeaveRace)
	}
	return nil
}

// MarkRemoved records that host name, which is gone for good, is being
// removed by host by (`m3sup remove-host`): a leaving record with
// RemovedBy set, leaving since since (keep a record's own Since when the
// host began a leave before it died). Like MarkLeaving it is atomic with
// the decision, made on the leaving records read at revision seen (which
// must be positive): if any was created or changed since, ErrLeaveRace. It replaces a leaving record of name's own.
func MarkRemoved(ctx context.Context, cli *clientv3.Client, name, by string, since time.Time, seen int64) error {
	if seen <= 0 {
		return fmt.Errorf("mark %s removed: no revision to check against", name)
	}
	b, err := json.Marshal(Leaving{Name: name, Since: since.UTC(), RemovedBy: by})
	if err != nil {
		return fmt.Errorf("mark %s removed: %w", name, err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(LeavingPrefix), "<", seen+1).WithPrefix()).
		Then(clientv3.OpPut(LeavingPrefix+name, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("mark %s removed: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("mark %s removed: %w", name, ErrLeaveRace)
	}
	return nil
}

// ForgetOps are the deletes that drop every key of this package about
// host name: its registry key, its rollout state and, last in the list,
// its leaving record. Run them in one transaction with the caller's own
// per-host keys, so a crash leaves either all of them or none.
func ForgetOps(name string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(RegistryPrefix + name),
		clientv3.OpDelete(RolloutHostsPrefix + name),
		clientv3.OpDelete(LeavingPrefix + name),
	}
}

// LeavingHosts returns every leaving host's record by name.
func LeavingHosts(ctx context.Context, cli *clientv3.Client) (map[string]Leaving, error) {
	out, _, err := LeavingHostsAt(ctx, cli)
	return out, err
}

// LeavingHostsAt is LeavingHosts and the etcd revision it read at, for
// MarkLeaving.
func LeavingHostsAt(ctx context.Context, cli *clientv3.Client) (map[string]Leaving, int64, error) {
	resp, err := cli.Get(ctx, LeavingPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read leaving hosts: %w", err)
	}
	out := make(map[string]Leaving, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), LeavingPrefix)
		var l Leaving
		_ = json.Unmarshal(kv.Value, &l) // a bad record still marks the host leaving
		l.Name = name
		out[name] = l
	}
	return out, resp.Header.Revision, nil
}

// Forgettable decides, purely, which hosts removed with `m3sup
// remove-host` are done: their leaving record has RemovedBy, they are not
// registered (a host that came back finishes its own leave), their
// instance is out of the placement and every shard is AVAILABLE (or there
// is no placement). Sorted by name.
func Forgettable(leaving map[string]Leaving, registered []Host, p m3.Placement, placementExists bool) []string {
	var out []string
	for name, l := range leaving {
		if l.RemovedBy == "" || slices.ContainsFunc(registered, func(h Host) bool { return h.Name == name }) {
			continue
		}
		if placementExists {
			if _, placed := p.Instances[name]; placed || !p.AllAvailable() {
				continue
			}
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// CheckLeave decides, purely, whether host id may leave a placement with
// replication factor rf while the hosts in leaving (besides id) leave too:
// every one of them will be removed, so the instances and isolation groups
// that remain must each number at least rf. A host that is not in the
// placement may always leave.
func CheckLeave(p m3.Placement, rf int, id string, leaving []string) error {
	if _, ok := p.Instances[id]; !ok {
		return nil
	}
	gone := append(slices.Clone(leaving), id)
	groups := map[string]bool{}
	left := 0
	for iid, in := range p.Instances {
		if slices.Contains(gone, iid) {
			continue
		}
		left++
		groups[in.IsolationGroup] = true
	}
	others := ""
	if len(gone) > 1 {
		others = fmt.Sprintf(" (with %d other host(s) leaving)", len(gone)-1)
	}
	if left < rf {
		return fmt.Errorf("%w: removing %s from the placement%s would leave %d instance(s) for replication factor %d; add a host first", ErrCannotLeave, id, others, left, rf)
	}
	if len(groups) < rf {
		return fmt.Errorf("%w: removing %s from the placement%s would leave %d isolation group(s) for replication factor %d; add a host in another isolation group first", ErrCannotLeave, id, others, len(groups), rf)
	}
	return nil
}
