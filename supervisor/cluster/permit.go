package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// PermitPrefix is the etcd mutex that serialises m3dbnode restarts across
// the cluster.
const PermitPrefix = "/m3sup/v1/permits/dbnode"

// permitTTL is the permit's session lease: a host that dies holding the
// permit loses it this long after its last keep-alive. A variable only so
// tests can shorten it.
var permitTTL = 10 * time.Second

// AcquirePermit takes the cluster-wide m3dbnode restart permit for node.
//
// It calls gate first (typically m3.Client.AllAvailable) and takes nothing
// if gate fails. Otherwise it waits for the permit, a mutex bound to a fresh
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

// Permit is this host's hold on the cluster-wide restart permit: whether
// it holds it, since when, and how to give it back, under one lock. The
// planned-restart gates of this host's components take it (Acquire), one
// at a time, so the host queues for it once; the rollout gives it back
// (Release) once the host has settled.
//
//	free ──Acquire (gate ok, mutex won, gate ok again)──► held ──Release──► free
//	                                                      │
//	                       Acquire while held: nil at once ┘
type Permit struct {
	cli  *clientv3.Client
	node string
	log  *zap.Logger
	sem  chan struct{} // serialises Acquire

	mu      sync.Mutex
	release func(context.Context) error // nil while not held
	since   time.Time
}

// NewPermit returns this host's (l.Node's) permit, not held.
func NewPermit(l Local) *Permit {
	return &Permit{cli: l.Etcd, node: l.Node, log: l.logger(), sem: make(chan struct{}, 1)}
}

// Acquire takes the permit (AcquirePermit with gate) unless this host
// holds it already; took says whether this call took it. One caller at a
// time: a second waits for the first, then finds the permit held.
func (p *Permit) Acquire(ctx context.Context, gate func(context.Context) error) (took bool, err error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-p.sem }()
	if p.Held() {
		return false, nil
	}
	release, err := AcquirePermit(ctx, p.cli, p.node, gate)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	p.release, p.since = release, time.Now()
	p.mu.Unlock()
	return true, nil
}

// Release gives the permit back if this host holds it.
func (p *Permit) Release(ctx context.Context) {
	p.mu.Lock()
	release := p.release
	p.release = nil
	p.mu.Unlock()
	if release == nil {
		return
	}
	if err := release(ctx); err != nil {
		p.log.Warn("release the restart permit", zap.Error(err))
		return
	}
	p.log.Info("released the restart permit", zap.String("node", p.node))
}

// Held reports whether this host holds the permit.
func (p *Permit) Held() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.release != nil
}

// Since is when this host took the permit it holds (the zero time when it
// holds none).
func (p *Permit) Since() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release == nil {
		return time.Time{}
	}
	return p.since
}
