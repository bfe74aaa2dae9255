package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
