package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMarkLeaving: the record is idempotent, listed, cleared; a mark made
// on a stale view of the leaving hosts is refused (two concurrent leaves
// cannot both pass CheckLeave against each other's absence).
func TestMarkLeaving(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := testCtx(t)

	_, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkLeaving(ctx, cli, "h3", t0, seen); err != nil {
		t.Fatal(err)
	}
	// h4 decided on the view from before h3 was marked: refused.
	if err := MarkLeaving(ctx, cli, "h4", t0, seen); !errors.Is(err, ErrLeaveRace) {
		t.Fatalf("mark on a stale view = %v, want ErrLeaveRace", err)
	}
	// Marking h3 again keeps its first record.
	if err := MarkLeaving(ctx, cli, "h3", t0.Add(time.Hour), 0); err != nil {
		t.Fatalf("second mark: %v", err)
	}
	lv, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil || len(lv) != 1 || !lv["h3"].Since.Equal(t0) {
		t.Fatalf("leaving hosts: %v, %v (want h3 since %s)", lv, err, t0)
	}
	if err := MarkLeaving(ctx, cli, "h4", t0, seen); err != nil {
		t.Fatalf("mark on a fresh view: %v", err)
	}
	if _, err := cli.Txn(ctx).Then(ForgetOps("h3")...).Commit(); err != nil {
		t.Fatal(err)
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || len(lv) != 1 || lv["h4"].Name != "h4" {
		t.Fatalf("after clearing h3: %v, %v", lv, err)
	}
}

// TestMarkRemoved: remove-host's record carries RemovedBy, replaces a
// leave of the host's own, and is refused on a stale view; ForgetOps drop
// the host's registry, rollout and leaving keys in one transaction.
func TestMarkRemoved(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := testCtx(t)

	if err := MarkLeaving(ctx, cli, "h4", t0, 0); err != nil { // h4 began a leave, then died
		t.Fatal(err)
	}
	_, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkRemoved(ctx, cli, "h4", "h1", t0, 0); err == nil {
		t.Fatal("MarkRemoved without a revision succeeded")
	}
	if err := MarkLeaving(ctx, cli, "h3", t0, 0); err != nil { // another leave lands meanwhile
		t.Fatal(err)
	}
	if err := MarkRemoved(ctx, cli, "h4", "h1", t0, seen); !errors.Is(err, ErrLeaveRace) {
		t.Fatalf("MarkRemoved on a stale view = %v, want ErrLeaveRace", err)
	}
	lv, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkRemoved(ctx, cli, "h4", "h1", lv["h4"].Since, seen); err != nil {
		t.Fatal(err)
	}
	if lv, err = LeavingHosts(ctx, cli); err != nil || lv["h4"].RemovedBy != "h1" || !lv["h4"].Since.Equal(t0) || lv["h3"].RemovedBy != "" {
		t.Fatalf("leaving after MarkRemoved: %+v, %v (want h4 removed by h1 since %s, h3 its own leave)", lv, err, t0)
	}

	for _, k := range []string{RegistryPrefix + "h4", RolloutHostsPrefix + "h4", RolloutHostsPrefix + "h44"} {
		if _, err := cli.Put(ctx, k, "{}"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Txn(ctx).Then(ForgetOps("h4")...).Commit(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/m3sup/v1/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if want := []string{LeavingPrefix + "h3", RolloutHostsPrefix + "h44"}; !slices.Equal(keys, want) {
		t.Fatalf("keys after ForgetOps(h4): %v, want %v", keys, want)
	}
}
