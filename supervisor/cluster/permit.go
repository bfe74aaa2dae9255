package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// PermitPrefix is the etcd mutex that serialises m3dbnode restarts across
// the cluster.
const PermitPrefix = "/m3sup/v1/permits/dbnode"

// permitTTL is the permit's session lease: a host that dies holding the
// permit loses it this long after its last keep-alive. A variable only so
// tests can shorten it.
var permitTTL = 10 * time.Second

// ErrShardsMoving: not every shard is AVAILABLE, so no replica may go down.
var ErrShardsMoving = errors.New("not every shard is AVAILABLE")

// AcquirePermit takes the cluster-wide m3dbnode restart permit for node.
//
// It calls gate first (typically ShardsAvailable) and takes nothing if gate
// fails. Otherwise it waits for the permit, a mutex bound to a fresh
// session lease, for as long as ctx allows, and calls gate again once it
// holds it, since the previous holder's restart may have moved shards; if
// that fails it gives the permit back. The holder's name is written into
// its mutex key, for PermitHolder.
//
// The caller restarts its node, waits until the node is bootstrapped and
// every shard is AVAILABLE again, then calls release. release is
// idempotent; until it is called a goroutine keeps the lease alive. A host
// that dies holding the permit loses it with its lease, as does a holder
// cut off from etcd for longer than the TTL.
func AcquirePermit(ctx context.Context, cli *clientv3.Client, node string, gate func(context.Context) error) (release func(context.Context) error, err error) {
	if err := gate(ctx); err != nil {
		return nil, fmt.Errorf("restart permit for %s: %w", node, err)
	}
	// The session outlives ctx (the permit is held past this call), so it
	// takes ctx's values but not its cancellation; release ends it.
	lease, err := cli.Grant(ctx, ttlSeconds(permitTTL))
	if err != nil {
		return nil, fmt.Errorf("restart permit for %s: grant lease: %w", node, err)
	}
	s, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(ttlSeconds(permitTTL))),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		_, _ = cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("restart permit for %s: session: %w", node, err)
	}
	m := concurrency.NewMutex(s, PermitPrefix)
	var once sync.Once
	var relErr error
	release = func(rctx context.Context) error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(rctx), 5*time.Second)
			defer cancel()
			uerr := m.Unlock(ctx)
			s.Orphan()
			_, rerr := cli.Revoke(ctx, s.Lease()) // frees the permit even if Unlock failed
			if rerr != nil && uerr != nil {
				relErr = fmt.Errorf("release restart permit of %s: %w", node, errors.Join(uerr, rerr))
			}
		})
		return relErr
	}
	if err := m.Lock(ctx); err != nil {
		_ = release(ctx)
		return nil, fmt.Errorf("restart permit for %s: %w", node, err)
	}
	resp, err := cli.Txn(ctx).If(m.IsOwner()).Then(clientv3.OpPut(m.Key(), node, clientv3.WithLease(s.Lease()))).Commit()
	if err == nil && !resp.Succeeded {
		err = concurrency.ErrSessionExpired
	}
	if err != nil {
		_ = release(ctx)
		return nil, fmt.Errorf("restart permit for %s: %w", node, err)
	}
	if err := gate(ctx); err != nil {
		_ = release(ctx)
		return nil, fmt.Errorf("restart permit for %s: after acquiring: %w", node, err)
	}
	return release, nil
}

// PermitHolder returns the node holding the restart permit, if any. node
// is empty for a holder that has not yet written its name.
func PermitHolder(ctx context.Context, cli *clientv3.Client) (node string, held bool, err error) {
	resp, err := cli.Get(ctx, PermitPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithLimit(1))...)
	if err != nil {
		return "", false, fmt.Errorf("read restart permit: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// ShardsAvailable is a permit gate: nil when the placement exists and
// every shard is AVAILABLE, else an error wrapping ErrShardsMoving (or the
// read error).
func ShardsAvailable(c *m3.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		p, exists, err := c.Placement(ctx)
		if err != nil {
			return fmt.Errorf("read placement: %w", err)
		}
		if !exists {
			return fmt.Errorf("no placement: %w", ErrShardsMoving)
		}
		if !p.AllAvailable() {
			return fmt.Errorf("shards %s: %w", shardSummary(p), ErrShardsMoving)
		}
		return nil
	}
}

// InPlacement reports whether instance id is still in the placement. A
// host being decommissioned keeps its m3dbnode running until this is
// false: its shards stream from it while they move.
func InPlacement(ctx context.Context, c *m3.Client, id string) (bool, error) {
	p, exists, err := c.Placement(ctx)
	if err != nil {
		return false, fmt.Errorf("read placement: %w", err)
	}
	_, ok := p.Instances[id]
	return exists && ok, nil
}

// ControllerLeader returns the node leading the placement controller, if
// any.
func ControllerLeader(ctx context.Context, cli *clientv3.Client) (node string, ok bool, err error) {
	resp, err := cli.Get(ctx, ElectionPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithLimit(1))...)
	if err != nil {
		return "", false, fmt.Errorf("read controller leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}
