package cluster

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTombstone: a tombstone is written with the deletes that forget a
// host, read back, kept when the host is forgotten again, and cleared.
func TestTombstone(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := testCtx(t)
	if _, ok, err := RemovedHost(ctx, cli, "h4"); ok || err != nil {
		t.Fatalf("tombstone before any removal: %t, %v", ok, err)
	}
	if _, err := cli.Put(ctx, RegistryPrefix+"h4", "{}"); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	forget := func(r Removed) bool {
		t.Helper()
		cmp, put, err := Tombstone(r)
		if err != nil {
			t.Fatal(err)
		}
		ops := ForgetOps(r.Node)
		resp, err := cli.Txn(ctx).If(cmp).Then(append(ops, put)...).Else(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	if !forget(Removed{Node: "h4", RemovedBy: "h2", At: at}) {
		t.Fatal("first tombstone not written")
	}
	if n := keys(t, cli, RegistryPrefix); n != 0 {
		t.Fatalf("%d registry keys after forgetting h4", n)
	}
	want := Removed{Node: "h4", RemovedBy: "h2", At: at.UTC()}
	if r, ok, err := RemovedHost(ctx, cli, "h4"); !ok || err != nil || r != want {
		t.Fatalf("tombstone = %+v, %t, %v; want %+v", r, ok, err, want)
	}
	if forget(Removed{Node: "h4", RemovedBy: "h3", At: at.Add(time.Hour)}) {
		t.Fatal("a second forget overwrote the first tombstone")
	}
	if r, _, _ := RemovedHost(ctx, cli, "h4"); r != want {
		t.Fatalf("tombstone after a second forget = %+v, want the first %+v", r, want)
	}
	if _, ok, _ := RemovedHost(ctx, cli, "h5"); ok {
		t.Fatal("h5 has h4's tombstone")
	}
	// An undecodable tombstone still says the host was removed.
	if _, err := cli.Put(ctx, RemovedPrefix+"h6", "garbage"); err != nil {
		t.Fatal(err)
	}
	if r, ok, err := RemovedHost(ctx, cli, "h6"); !ok || err != nil || r.Node != "h6" {
		t.Fatalf("undecodable tombstone = %+v, %t, %v", r, ok, err)
	}
	for _, want := range []bool{true, false} {
		if had, err := ClearRemoved(ctx, cli, "h4"); had != want || err != nil {
			t.Fatalf("ClearRemoved = %t, %v; want %t", had, err, want)
		}
	}
	if resp, err := cli.Get(ctx, RemovedPrefix+"h4", clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("tombstone after ClearRemoved: %v, %v", resp, err)
	}
}
