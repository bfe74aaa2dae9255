package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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

// ValueError is a value in etcd that m3sup cannot use: it does not decode,
// or the spec it holds is invalid. It names the key, so a log line or
// `m3sup status` says which one to repair.
type ValueError struct {
	Key      string
	Revision int64 // the value's mod revision
	Err      error
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("%s (revision %d): %v", e.Key, e.Revision, e.Err)
}

func (e *ValueError) Unwrap() error { return e.Err }

// decodeCluster decodes and validates the cluster spec stored at kv: a
// spec read from etcd is checked as strictly as one written by `apply`,
// whoever wrote it.
func decodeCluster(key string, rev int64, b []byte) (spec.Cluster, error) {
	var c spec.Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return spec.Cluster{}, &ValueError{Key: key, Revision: rev, Err: fmt.Errorf("decode: %w", err)}
	}
	if err := c.Validate(); err != nil {
		return spec.Cluster{}, &ValueError{Key: key, Revision: rev, Err: fmt.Errorf("invalid cluster spec: %w", err)}
	}
	return c, nil
}

// decodeControls decodes a host's controls stored at kv.
func decodeControls(key string, rev int64, b []byte) (spec.HostControls, error) {
	hc := spec.HostControls{}
	if err := json.Unmarshal(b, &hc); err != nil {
		return spec.HostControls{}, &ValueError{Key: key, Revision: rev, Err: fmt.Errorf("decode: %w", err)}
	}
	if hc == nil { // the JSON null
		hc = spec.HostControls{}
	}
	return hc, nil
}

// Cluster reads the desired cluster spec and its mod revision. found is false
// when no spec was written yet. A value that does not decode or validate is
// a *ValueError; rev is then still the value's revision (so `apply` can
// replace it).
func (s *Store) Cluster(ctx context.Context) (c spec.Cluster, rev int64, found bool, err error) {
	resp, err := s.c.Get(ctx, ClusterKey)
	if err != nil {
		return c, 0, false, fmt.Errorf("read %s: %w", ClusterKey, err)
	}
	if len(resp.Kvs) == 0 {
		return c, 0, false, nil
	}
	kv := resp.Kvs[0]
	c, err = decodeCluster(ClusterKey, kv.ModRevision, kv.Value)
	if err != nil {
		return c, kv.ModRevision, true, err
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
// A value that does not decode is a *ValueError, returned with empty
// controls and the value's revision.
func (s *Store) Controls(ctx context.Context, node string) (spec.HostControls, int64, error) {
	key := ControlsKey(node)
	resp, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return spec.HostControls{}, 0, nil
	}
	kv := resp.Kvs[0]
	hc, err := decodeControls(key, kv.ModRevision, kv.Value)
	return hc, kv.ModRevision, err
}

// UpdateControl changes one component's control on a host atomically
// (retrying when another writer raced it) and returns the result. A
// corrupt stored value is replaced: the command that changes a control is
// also how an operator repairs it.
func (s *Store) UpdateControl(ctx context.Context, node, component string, f func(*spec.Control)) (spec.Control, error) {
	key := ControlsKey(node)
	for {
		hc, rev, err := s.Controls(ctx, node)
		var ve *ValueError
		if err != nil && !errors.As(err, &ve) {
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
	// Errors lists the values m3sup could not use (each a *ValueError
	// naming its key); Cluster and Controls are then the last good ones
	// (Controls: none, if there never was a good one).
	Errors []*ValueError
}

// Watch reports the cluster spec and this host's controls now and after
// every change, until ctx is done. A slow reader sees only the latest state.
// The channel closes when ctx is done. last is the spec in force: while
// etcd holds a cluster spec that does not decode or validate, or controls
// that do not decode, the Change keeps the last good value and names the
// bad one in Errors; it never stops on a bad value.
//
// onErr, if set, hears each failed read (retried every second); it is
// called on the watch's goroutine.
func (s *Store) Watch(ctx context.Context, node string, last spec.Cluster, onErr func(error)) <-chan Change {
	out := make(chan Change, 1)
	w := &watchState{cluster: last, controls: spec.HostControls{}}
	go func() { // owned by ctx: it ends when the caller cancels
		defer close(out)
		for ctx.Err() == nil {
			rev, err := s.emit(ctx, node, w, out)
			if err != nil {
				if onErr != nil && ctx.Err() == nil {
					onErr(fmt.Errorf("read %s and %s: %w", ClusterKey, ControlsKey(node), err))
				}
				if !sleepCtx(ctx, time.Second) {
					return
				}
				continue
			}
			// One watch per key: a client-only host may not read (or
			// watch) all of /m3sup/v1/, which holds the join tokens.
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			cw := s.c.Watch(wctx, ClusterKey, clientv3.WithRev(rev+1))
			hw := s.c.Watch(wctx, ControlsKey(node), clientv3.WithRev(rev+1))
			for ok := true; ok; {
				var resp clientv3.WatchResponse
				select {
				case resp, ok = <-cw:
				case resp, ok = <-hw:
				}
				if !ok || resp.Err() != nil {
					break // compacted, lost or ended: read afresh and watch again
				}
				if len(resp.Events) == 0 {
					continue
				}
				if _, err := s.emit(ctx, node, w, out); err != nil {
					break
				}
			}
			cancel()
		}
	}()
	return out
}

// watchState is the last good desired state one Watch saw.
type watchState struct {
	cluster  spec.Cluster
	controls spec.HostControls
}

// emit reads the current state and offers it, replacing an unread one.
// Only a failed read is an error; a bad value is reported in the Change.
func (s *Store) emit(ctx context.Context, node string, w *watchState, out chan Change) (int64, error) {
	// Both keys at one revision, and nothing else.
	tx, err := s.c.Txn(ctx).Then(clientv3.OpGet(ClusterKey), clientv3.OpGet(ControlsKey(node))).Commit()
	if err != nil {
		return 0, err
	}
	ch := Change{Revision: tx.Header.Revision}
	controls := spec.HostControls{} // none stored: the defaults
	var kvs []*mvccpb.KeyValue
	for _, r := range tx.Responses {
		kvs = append(kvs, r.GetResponseRange().Kvs...)
	}
	for _, kv := range kvs {
		switch string(kv.Key) {
		case ClusterKey:
			c, err := decodeCluster(ClusterKey, kv.ModRevision, kv.Value)
			var ve *ValueError
			if errors.As(err, &ve) {
				ch.Errors = append(ch.Errors, ve)
			} else {
				w.cluster = c
			}
		case ControlsKey(node):
			hc, err := decodeControls(string(kv.Key), kv.ModRevision, kv.Value)
			var ve *ValueError
			if errors.As(err, &ve) {
				ch.Errors = append(ch.Errors, ve)
				controls = w.controls
			} else {
				controls = hc
			}
		}
	}
	w.controls = controls
	ch.Cluster, ch.Controls = w.cluster, controls
	select {
	case <-out: // drop the stale, unread change
	default:
	}
	out <- ch
	return tx.Header.Revision, nil
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
