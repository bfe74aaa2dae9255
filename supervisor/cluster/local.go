package cluster

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// Local is how the multi-host types (Permit, Rollout, Automation, Leaver,
// HostRemover) reach the host they run on: plain values and the clients the
// daemon connected, never the daemon itself. The supervisor fills it in once
// etcd and M3 are connected.
type Local struct {
	Node    string // this host's name: its registry key and placement instance ID
	DataDir string // the host's data dir: rollout.json and left.json are kept there
	// JoinURL is the join endpoint this host joined through, for the advice
	// on rejoining in left.json's refusal; empty on the first host.
	JoinURL string
	Etcd    *clientv3.Client // the cluster's etcd
	M3      *m3.Client       // the coordinator API this host uses (its own or a peer's)
	// Admin is what leave and remove-host do to etcd beyond this package's
	// keys (package store, adapted by the supervisor).
	Admin EtcdAdmin
	// Progress, if set, reports what this host waits for: the cluster
	// coming together (shown as the bootstrapping phase) or a step of its
	// leave (the leaving phase).
	Progress func(msg string)
	Logger   *zap.Logger // nil means no logs
}

// record is this host's left.json.
func (l Local) record() LeftRecord {
	return LeftRecord{DataDir: l.DataDir, Node: l.Node, JoinURL: l.JoinURL}
}

func (l Local) logger() *zap.Logger {
	if l.Logger == nil {
		return zap.NewNop()
	}
	return l.Logger
}

func (l Local) progress(msg string) {
	if l.Progress != nil {
		l.Progress(msg)
	}
}

// Components is this host's node agent as the rollout sees it: the status
// of one component by name, and of all of them.
type Components interface {
	Status(name string) (agent.Status, bool)
	Statuses() []agent.Status
}

// Component names, as the daemon gives them to the agent (also their
// container ids).
const (
	DBNodeComponent      = "m3dbnode"
	CoordinatorComponent = "m3coordinator"
)

// Member is one etcd member as leave and remove-host see it.
type Member struct {
	ID         uint64
	Name       string // empty until an added member has started
	ClientURLs []string
	IsLearner  bool
}

// EtcdAdmin is what leave and remove-host change in etcd beyond this
// package's keys: the membership, the access control and the per-host
// keys of package store, which this package does not import (the
// supervisor adapts store to it).
//
// Errors keep store's messages; those about membership match the kinds
// ErrNotMember and ErrQuorumAtRisk.
type EtcdAdmin interface {
	// Members lists the etcd members (linearizable).
	Members(ctx context.Context) ([]Member, error)
	// CheckRemoval is RemoveMember's quorum guard alone: nil when member id
	// may be removed now, ErrQuorumAtRisk when not, ErrNotMember when id is
	// no member.
	CheckRemoval(ctx context.Context, id uint64) error
	// RemoveMember removes member id, quorum-guarded (ErrQuorumAtRisk); a
	// learner always may go.
	RemoveMember(ctx context.Context, id uint64) error
	// RemoveMemberNamed removes the member called name, quorum-guarded;
	// none by that name is no error.
	RemoveMemberNamed(ctx context.Context, name string) error
	// Deny makes the removed host's role etcd user's only one: it may read
	// tombstones and leaving records, nothing else.
	Deny(ctx context.Context, user string) error
	// HostKeysPrefix is the prefix of host name's per-host keys outside
	// this package (its controls and status), deleted when it goes.
	HostKeysPrefix(name string) string
}

// Membership error kinds (EtcdAdmin's).
var (
	// ErrNotMember: no etcd member has the given ID.
	ErrNotMember = errors.New("no such etcd member")
	// ErrQuorumAtRisk: a membership change was refused because it would
	// leave (or the cluster already has) fewer healthy voters than a
	// majority.
	ErrQuorumAtRisk = errors.New("quorum at risk")
)

// deleteHostKeys deletes every etcd key about host name in one
// transaction, its leaving record last, and writes tomb, if not nil, as
// its tombstone unless it has one. `m3sup leave` writes none: the host
// that left records it in its own data dir (left.json), which refuses
// before etcd is reached, and a host that left may join again with a new
// data dir without anything to clear.
func (l Local) deleteHostKeys(ctx context.Context, name string, tomb *Removed) error {
	ops := append([]clientv3.Op{clientv3.OpDelete(l.Admin.HostKeysPrefix(name), clientv3.WithPrefix())}, ForgetOps(name)...)
	txn := l.Etcd.Txn(ctx)
	if tomb != nil {
		cmp, put, err := Tombstone(*tomb)
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
func (l Local) hostKeyCount(ctx context.Context, name string) (int64, error) {
	var n int64
	for _, get := range []struct {
		key  string
		opts []clientv3.OpOption
	}{
		{l.Admin.HostKeysPrefix(name), []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}},
		{RegistryPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
		{RolloutHostsPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
		{LeavingPrefix + name, []clientv3.OpOption{clientv3.WithCountOnly()}},
	} {
		resp, err := l.Etcd.Get(ctx, get.key, get.opts...)
		if err != nil {
			return 0, fmt.Errorf("read %s's keys: %w", name, err)
		}
		n += resp.Count
	}
	return n, nil
}

// shardLine sums up p for a progress message.
func shardLine(p m3.Placement) string {
	return fmt.Sprintf("%d instances, shards %v", len(p.Instances), p.ShardStates())
}
