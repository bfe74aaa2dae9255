package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/store"
)

// placementOf is an RF 3 placement of ids (isolation group = id), 4
// shards each, in state.
func placementOf(state string, ids ...string) m3.Placement {
	p := m3.Placement{Instances: map[string]m3.PlacementInstance{}, NumShards: 4, ReplicaFactor: 3, IsSharded: true}
	for _, id := range ids {
		in := m3.PlacementInstance{ID: id, IsolationGroup: id, Endpoint: id + ":9000"}
		for sh := range 4 {
			in.Shards = append(in.Shards, m3.Shard{ID: uint32(sh), State: state})
		}
		p.Instances[id] = in
	}
	return p
}

// testLocal is host node on etcd cli and the fake M3 f, with its data dir under
// t.TempDir().
func testLocal(t *testing.T, node string, cli *clientv3.Client, f *fakeM3) Local {
	return Local{Node: node, DataDir: t.TempDir(), JoinURL: "https://127.0.0.9:7443", Etcd: cli, M3: f.client(), Admin: storeAdmin{cli},
		Progress: func(string) {}, Logger: zap.NewNop()}
}

// storeAdmin is EtcdAdmin over package store, as the supervisor wires it.
type storeAdmin struct{ cli *clientv3.Client }

func (a storeAdmin) Members(ctx context.Context) ([]Member, error) {
	ms, err := store.Members(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, m := range ms {
		out = append(out, Member{ID: m.ID, Name: m.Name, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out, nil
}

func (a storeAdmin) CheckRemoval(ctx context.Context, id uint64) error {
	return kinded(store.CheckRemoval(ctx, a.cli, id))
}

func (a storeAdmin) RemoveMember(ctx context.Context, id uint64) error {
	return kinded(store.RemoveMember(ctx, a.cli, id))
}

func (a storeAdmin) RemoveMemberNamed(ctx context.Context, name string) error {
	_, err := store.RemoveMemberNamed(ctx, a.cli, name)
	return kinded(err)
}

func (a storeAdmin) Deny(ctx context.Context, user string) error {
	return store.SetUserRole(ctx, a.cli, user, store.RoleRemoved)
}

func (a storeAdmin) HostKeysPrefix(name string) string { return store.HostKeysPrefix(name) }

// kinded adds this package's kind to store's membership errors, keeping
// their message.
func kinded(err error) error {
	switch {
	case errors.Is(err, store.ErrNotMember):
		return kindErr{err, ErrNotMember}
	case errors.Is(err, store.ErrQuorumAtRisk):
		return kindErr{err, ErrQuorumAtRisk}
	}
	return err
}

type kindErr struct{ err, kind error }

func (e kindErr) Error() string   { return e.err.Error() }
func (e kindErr) Unwrap() []error { return []error{e.err, e.kind} }

func keyCount(t *testing.T, l Local, name string) int64 {
	t.Helper()
	n, err := l.hostKeyCount(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoveHost drives `m3sup remove-host` on h1 against a real etcd and
// a placement the test sets: refusals change nothing; a dead h4 is marked
// removed, waits for the controller (here: the test) to drop its instance
// and for every shard to be AVAILABLE, then its records are gone; calling
// again finishes leftover cleanup, and then says there is no such host.
func TestRemoveHost(t *testing.T) {
	e := etcdtest.Start(t, "h1")
	cli := e.Client()
	ps := newFakeM3(t)
	r := NewHostRemover(testLocal(t, "h1", cli, ps))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := Register(ctx, cli, Host{Name: "h2", Roles: []Role{RoleDBNode}, IsolationGroup: "h2", Endpoint: "h2:9000"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3"))
	for _, tc := range []struct{ name, kind, want string }{
		{"h1", "conflict", "it is this host; run `m3sup leave`"},
		{"a/b", "invalid", "without slashes"},
		{"h2", "conflict", "h2 is running (registered in etcd); run `m3sup leave` on it (nothing changed)"},
		{"h3", "conflict", "would leave 2 instance(s) for replication factor 3"},
		{"h9", "not found", "no host h9"},
	} {
		_, err := r.RemoveHost(ctx, tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) || kindOf(err) != tc.kind {
			t.Errorf("RemoveHost(%s) = %v (kind %q), want %s saying %q", tc.name, err, kindOf(err), tc.kind, tc.want)
		}
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || len(lv) != 0 {
		t.Fatalf("leaving records after refusals: %v, %v", lv, err)
	}

	// Dead h4 (never registered here) with records left behind.
	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3", "h4"))
	for _, k := range []string{store.ControlsKey("h4"), RolloutHostsPrefix + "h4"} {
		if _, err := cli.Put(ctx, k, "{}"); err != nil {
			t.Fatal(err)
		}
	}
	res, err := r.RemoveHost(ctx, "h4")
	if err != nil || res.State != api.RemoveStateRemoving || !res.InPlacement || res.EtcdRole != "client" || res.EtcdMemberRemoved {
		t.Fatalf("RemoveHost(h4) = %+v, %v", res, err)
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || lv["h4"].RemovedBy != "h1" {
		t.Fatalf("leaving after RemoveHost(h4): %v, %v (want h4 removed by h1)", lv, err)
	}
	if res, err := r.RemoveHost(ctx, "h4"); err != nil || !strings.Contains(res.Message, "already being removed") {
		t.Fatalf("RemoveHost(h4) again = %+v, %v", res, err)
	}

	// The instance is still placed, then gone with shards moving: not done.
	for _, p := range []m3.Placement{placementOf(m3.ShardAvailable, "h1", "h2", "h3", "h4"), placementOf(m3.ShardInitializing, "h1", "h2", "h3")} {
		ps.set(p)
		msg, done, err := r.step(ctx, "h4")
		if done || err != nil || msg == "" {
			t.Fatalf("step with %v: %q, %t, %v (want waiting)", p.ShardStates(), msg, done, err)
		}
		if n := keyCount(t, r.local, "h4"); n != 3 {
			t.Fatalf("h4's keys while removing: %d, want 3", n)
		}
	}
	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3"))
	if err := r.RemoveHostDone(ctx, "h4"); err != nil {
		t.Fatalf("RemoveHostDone(h4): %v", err)
	}
	if n := keyCount(t, r.local, "h4"); n != 0 {
		t.Fatalf("h4's keys after the removal: %d, want 0", n)
	}
	tomb, ok, err := RemovedHost(ctx, cli, "h4")
	if err != nil || !ok || tomb.RemovedBy != "h1" || tomb.At.IsZero() {
		t.Fatalf("h4's tombstone after the removal: %+v, %t, %v (want removed by h1)", tomb, ok, err)
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || len(lv) != 0 {
		t.Fatalf("leaving after h4 was removed: %v, %v (want none)", lv, err)
	}

	// A crash left a record behind: running it again cleans up.
	if _, err := cli.Put(ctx, store.ControlsKey("h4"), "{}"); err != nil {
		t.Fatal(err)
	}
	if res, err := r.RemoveHost(ctx, "h4"); err != nil || res.State != api.RemoveStateRemoved {
		t.Fatalf("RemoveHost(h4) with a leftover record = %+v, %v", res, err)
	}
	if r, _, _ := RemovedHost(ctx, cli, "h4"); r != tomb {
		t.Fatalf("h4's tombstone after the leftover cleanup: %+v, want the first %+v", r, tomb)
	}
	if _, err := r.RemoveHost(ctx, "h4"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "it was removed by h1 at") {
		t.Fatalf("RemoveHost(h4) once nothing is left = %v, want not found, removed by h1", err)
	}
}

func kindOf(err error) string {
	for _, k := range []error{api.ErrInvalid, api.ErrConflict, api.ErrNotFound} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return ""
}
