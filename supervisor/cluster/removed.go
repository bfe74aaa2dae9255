package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// RemovedPrefix holds one tombstone per host removed for good with `m3sup
// remove-host`: RemovedPrefix + name, JSON Removed, with no lease. It is
// written in the transaction that forgets the host and outlives it, so a
// removed host whose machine comes back on its old data dir refuses to
// run instead of registering again with stale data. A host that leaves by
// itself (`m3sup leave`) gets none: it records its leave in its own data
// dir (left.json), which refuses before etcd is even reached.
//
// A tombstone goes through:
//
//	Tombstone (forgetting a removed host) → the host, if it comes back,
//	refuses to run → ClearRemoved (the join endpoint, when a host joins
//	again under that name with --join and a new token) → gone
const RemovedPrefix = "/m3sup/v1/removed/"

// Removed is a removed host's tombstone.
type Removed struct {
	Node      string    `json:"node"`
	RemovedBy string    `json:"removedBy"` // the host that ran `m3sup remove-host`
	At        time.Time `json:"at"`        // when the host was forgotten
}

// Tombstone returns the condition and put that record r, to run in the
// transaction that forgets r.Node: the put only when the condition holds,
// that is when the host has no tombstone yet (a removal finished again
// keeps the first one's record).
func Tombstone(r Removed) (clientv3.Cmp, clientv3.Op, error) {
	r.At = r.At.UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("encode %s's tombstone: %w", r.Node, err)
	}
	key := RemovedPrefix + r.Node
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.OpPut(key, string(b)), nil
}

// RemovedHost returns host name's tombstone, if it has one. A tombstone
// that does not decode still says the host was removed.
func RemovedHost(ctx context.Context, cli *clientv3.Client, name string) (Removed, bool, error) {
	resp, err := cli.Get(ctx, RemovedPrefix+name)
	if err != nil {
		return Removed{}, false, fmt.Errorf("read %s's tombstone: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return Removed{}, false, nil
	}
	var r Removed
	_ = json.Unmarshal(resp.Kvs[0].Value, &r)
	r.Node = name
	return r, true, nil
}

// ClearRemoved deletes host name's tombstone and reports whether it had
// one: a host joins again under that name.
func ClearRemoved(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	resp, err := cli.Delete(ctx, RemovedPrefix+name)
	if err != nil {
		return false, fmt.Errorf("clear %s's tombstone: %w", name, err)
	}
	return resp.Deleted > 0, nil
}
