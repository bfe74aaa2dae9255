package cluster

import (
	"context"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func hostNames(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	hs, err := Hosts(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
	}
	return names
}

func TestRegisterAndHosts(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := testCtx(t)

	h2 := Host{Name: "h2", Roles: []Role{RoleDBNode}, IsolationGroup: "b", Weight: 50, Endpoint: "10.0.0.2:9000", Hostname: "db2"}
	lease, err := Register(ctx, cli, h2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, cli, dbHost("h1", "a"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(ctx, cli, Host{Name: "bad"}, time.Minute); err == nil {
		t.Fatal("Register accepted a host without roles")
	}
	// A key that does not decode is skipped, not fatal.
	if _, err := cli.Put(ctx, RegistryPrefix+"junk", "{"); err != nil {
		t.Fatal(err)
	}
	hs, err := Hosts(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Name != "h1" || !reflect.DeepEqual(hs[1], h2) {
		t.Fatalf("Hosts = %+v, want h1 then %+v", hs, h2)
	}
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if got := hostNames(t, cli); !reflect.DeepEqual(got, []string{"h1"}) {
		t.Fatalf("after revoking h2's lease: %v", got)
	}
}

func TestRegistrar(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()

	if err := (&Registrar{Cli: cli, Host: Host{Name: "x"}}).Run(context.Background()); err == nil {
		t.Fatal("Run accepted an invalid host")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Registrar{Cli: cli, Host: dbHost("h1", "a"), TTL: 2 * time.Second}).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	leaseOf := func() clientv3.LeaseID {
		resp, err := cli.Get(context.Background(), RegistryPrefix+"h1")
		if err != nil || len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	waitFor(t, 10*time.Second, "h1 registered", func() bool { return leaseOf() != 0 })
	first := leaseOf()

	// The lease outlives its TTL while Run keeps it alive.
	ttl, err := cli.TimeToLive(context.Background(), first)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease ttl %v, %v", ttl, err)
	}

	// A lost lease (here: revoked behind Run's back) is replaced.
	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "h1 registered again", func() bool { l := leaseOf(); return l != 0 && l != first })

	// Stopping deregisters at once.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the cleanup
	if leaseOf() != 0 {
		t.Fatal("h1 still registered after Run returned")
	}
}
