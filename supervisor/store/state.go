package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/spec"
)

// Prefix is the root of every key m3sup writes. M3's own keys (_sd.placement,
// _kv) live beside it in the same etcd.
const Prefix = "/m3sup/v1/"

// ClusterKey holds the JSON-encoded spec.Cluster.
const ClusterKey = Prefix + "cluster"

// ErrConflict means a compare-and-swap lost: the key changed since it was read.
var ErrConflict = errors.New("conflict: the cluster spec changed since it was read")

// Store is typed access to m3sup's keys.
type Store struct{ c *clientv3.Client }

// New returns a Store over an etcd client.
func New(c *clientv3.Client) *Store { return &Store{c: c} }

// Cluster reads the desired cluster spec and its mod revision. found is false
// when no spec was written yet.
func (s *Store) Cluster(ctx context.Context) (c spec.Cluster, rev int64, found bool, err error) {
	resp, err := s.c.Get(ctx, ClusterKey)
	if err != nil {
		return c, 0, false, fmt.Errorf("read %s: %w", ClusterKey, err)
	}
	if len(resp.Kvs) == 0 {
		return c, 0, false, nil
	}
	kv := resp.Kvs[0]
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return c, 0, false, fmt.Errorf("decode %s at revision %d: %w", ClusterKey, kv.ModRevision, err)
	}
	return c, kv.ModRevision, true, nil
}

// PutCluster validates c and writes it only if the key's mod revision is
// still expectRev (0: the key must not exist). It returns the new revision.
// An invalid spec or a lost race leaves etcd unchanged.
func (s *Store) PutCluster(ctx context.Context, c spec.Cluster, expectRev int64) (int64, error) {
	if err := c.Validate(); err != nil {
		return 0, fmt.Errorf("invalid cluster spec: %w", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("encode cluster spec: %w", err)
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(ClusterKey), "=", expectRev)).
		Then(clientv3.OpPut(ClusterKey, string(b))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", ClusterKey, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("write %s at revision %d: %w", ClusterKey, expectRev, ErrConflict)
	}
	return resp.Header.Revision, nil
}

// SeedKey holds the hash of the cluster spec last seeded from the config file.
const SeedKey = Prefix + "seed"

// Seed writes c as the desired cluster spec when the config file's spec
// (identified by hash) changed since it was last seeded, or on first boot.
// A spec changed through the API since then stays unless the config changes.
// It returns the spec now in force and whether c was written.
func (s *Store) Seed(ctx context.Context, c spec.Cluster, hash string) (spec.Cluster, bool, error) {
	if err := c.Validate(); err != nil {
		return c, false, fmt.Errorf("invalid cluster spec from the config: %w", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return c, false, fmt.Errorf("encode cluster spec: %w", err)
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(SeedKey), "=", hash)).
		Else(clientv3.OpPut(ClusterKey, string(b)), clientv3.OpPut(SeedKey, hash)).
		Commit()
	if err != nil {
		return c, false, fmt.Errorf("seed %s: %w", ClusterKey, err)
	}
	if !resp.Succeeded {
		return c, true, nil
	}
	cur, _, found, err := s.Cluster(ctx)
	if err != nil {
		return c, false, err
	}
	if !found {
		return c, false, fmt.Errorf("read %s: seed recorded but the spec is missing", ClusterKey)
	}
	return cur, false, nil
}

// ControlsKey holds a host's spec.HostControls.
func ControlsKey(node string) string { return HostKeysPrefix(node) + "controls" }

// HostKeysPrefix holds every per-host key of node (its controls); a host
// that left or was removed has none.
func HostKeysPrefix(node string) string { return Prefix + "hosts/" + node + "/" }

// Controls reads a host's component controls (empty when none were set).
func (s *Store) Controls(ctx context.Context, node string) (spec.HostControls, int64, error) {
	key := ControlsKey(node)
	resp, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", key, err)
	}
	hc := spec.HostControls{}
	if len(resp.Kvs) == 0 {
		return hc, 0, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &hc); err != nil {
		return nil, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return hc, resp.Kvs[0].ModRevision, nil
}

// UpdateControl changes one component's control on a host atomically
// (retrying when another writer raced it) and returns the result.
func (s *Store) UpdateControl(ctx context.Context, node, component string, f func(*spec.Control)) (spec.Control, error) {
	key := ControlsKey(node)
	for {
		hc, rev, err := s.Controls(ctx, node)
		if err != nil {
			return spec.Control{}, err
		}
		c := hc[component]
		f(&c)
		hc[component] = c
		b, err := json.Marshal(hc)
		if err != nil {
			return c, fmt.Errorf("encode %s: %w", key, err)
		}
		resp, err := s.c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).
			Commit()
		if err != nil {
			return c, fmt.Errorf("write %s: %w", key, err)
		}
		if resp.Succeeded {
			return c, nil
		}
	}
}

// Change is one observed change of m3sup's desired state.
type Change struct {
	Cluster  spec.Cluster
	Controls spec.HostControls
	Revision int64
}

// Watch reports the cluster spec and this host's controls now and after
// every change, until ctx is done. A slow reader sees only the latest state.
// The channel closes when ctx is done.
func (s *Store) Watch(ctx context.Context, node string) <-chan Change {
	out := make(chan Change, 1)
	go func() { // owned by ctx: it ends when the caller cancels
		defer close(out)
		for ctx.Err() == nil {
			rev, err := s.emit(ctx, node, out)
			if err != nil {
				if !sleepCtx(ctx, time.Second) {
					return
				}
				continue
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := s.c.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for resp := range wch {
				if resp.Err() != nil {
					break // compacted or lost: read afresh and watch again
				}
				relevant := false
				for _, ev := range resp.Events {
					k := string(ev.Kv.Key)
					if k == ClusterKey || k == ControlsKey(node) {
						relevant = true
					}
				}
				if !relevant {
					continue
				}
				if _, err := s.emit(ctx, node, out); err != nil {
					break
				}
			}
			cancel()
		}
	}()
	return out
}

// emit reads the current state and offers it, replacing an unread one.
func (s *Store) emit(ctx context.Context, node string, out chan Change) (int64, error) {
	resp, err := s.c.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	ch := Change{Controls: spec.HostControls{}, Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		switch string(kv.Key) {
		case ClusterKey:
			if err := json.Unmarshal(kv.Value, &ch.Cluster); err != nil {
				return 0, fmt.Errorf("decode %s: %w", ClusterKey, err)
			}
		case ControlsKey(node):
			if err := json.Unmarshal(kv.Value, &ch.Controls); err != nil {
				return 0, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
		}
	}
	select {
	case <-out: // drop the stale, unread change
	default:
	}
	out <- ch
	return resp.Header.Revision, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
