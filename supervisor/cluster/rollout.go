package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Rollout keys: hosts publish which m3dbnode spec they run; a host whose
// restarted m3dbnode missed the rollout deadline marks that spec failed,
// which halts the rollout on every host.
const (
	// RolloutHostsPrefix + host name: JSON HostState, written by the host.
	RolloutHostsPrefix = "/m3sup/v1/rollout/hosts/"
	// RolloutFailedPrefix + revision: JSON Failure.
	RolloutFailedPrefix = "/m3sup/v1/rollout/failed/"
)

// Failure records a m3dbnode spec revision that did not become healthy in
// time on Host; no host rolls to Revision again.
type Failure struct {
	Revision string    `json:"revision"`
	Version  string    `json:"version"`
	Host     string    `json:"host"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// RunningSpec names the m3dbnode spec a host runs: the cluster-wide
// revision of the dbnode settings, the release version and its digest.
type RunningSpec struct {
	Revision string `json:"revision,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
}

// ComponentState is one component of a host, as the host reports it.
type ComponentState struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Healthy  bool   `json:"healthy"`
	Version  string `json:"version,omitempty"`
	Revision string `json:"revision,omitempty"`
}

// HostState is what a host publishes about its components.
type HostState struct {
	Host       string           `json:"host"`
	DBNode     RunningSpec      `json:"dbnode"`
	Components []ComponentState `json:"components"`
}

// PublishHostState writes h's state.
func PublishHostState(ctx context.Context, cli *clientv3.Client, h HostState) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("publish state of %s: %w", h.Host, err)
	}
	if _, err := cli.Put(ctx, RolloutHostsPrefix+h.Host, string(b)); err != nil {
		return fmt.Errorf("publish state of %s: %w", h.Host, err)
	}
	return nil
}

// HostStates returns every published host state by host name. A key that
// does not decode is skipped.
func HostStates(ctx context.Context, cli *clientv3.Client) (map[string]HostState, error) {
	resp, err := cli.Get(ctx, RolloutHostsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read host states: %w", err)
	}
	out := make(map[string]HostState, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h HostState
		if err := json.Unmarshal(kv.Value, &h); err != nil || h.Host != strings.TrimPrefix(string(kv.Key), RolloutHostsPrefix) {
			continue
		}
		out[h.Host] = h
	}
	return out, nil
}

// RecordFailure marks f.Revision failed. The first record of a revision
// wins: a later host's record (there should be none) does not overwrite it.
func RecordFailure(ctx context.Context, cli *clientv3.Client, f Failure) error {
	if f.Revision == "" {
		return fmt.Errorf("record rollout failure of %s: empty revision", f.Host)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("record rollout failure of %s: %w", f.Revision, err)
	}
	key := RolloutFailedPrefix + f.Revision
	if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
		return fmt.Errorf("record rollout failure of %s: %w", f.Revision, err)
	}
	return nil
}

// RolloutFailed returns the failure recorded for revision, if any.
func RolloutFailed(ctx context.Context, cli *clientv3.Client, revision string) (Failure, bool, error) {
	if revision == "" {
		return Failure{}, false, nil
	}
	resp, err := cli.Get(ctx, RolloutFailedPrefix+revision)
	if err != nil {
		return Failure{}, false, fmt.Errorf("read rollout failure of %s: %w", revision, err)
	}
	if len(resp.Kvs) == 0 {
		return Failure{}, false, nil
	}
	var f Failure
	if err := json.Unmarshal(resp.Kvs[0].Value, &f); err != nil {
		return Failure{}, true, fmt.Errorf("decode rollout failure of %s: %w", revision, err)
	}
	return f, true, nil
}

// ErrRolloutHalted: the spec a host would restart its m3dbnode for is
// marked failed.
var ErrRolloutHalted = fmt.Errorf("rollout halted")

// NotFailed is a permit gate: nil unless revision is marked failed.
func NotFailed(cli *clientv3.Client, revision string) func(context.Context) error {
	return func(ctx context.Context) error {
		f, failed, err := RolloutFailed(ctx, cli, revision)
		if err != nil {
			return err
		}
		if failed {
			return fmt.Errorf("m3dbnode spec %s failed on %s (%s): %w", revision, f.Host, f.Reason, ErrRolloutHalted)
		}
		return nil
	}
}
