package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestLeaver drives `m3sup leave` on client-only host h1 against a real
// etcd and a placement the test sets: the last CA holder and a leave below
// RF are refused and change nothing; an accepted leave is marked, Run
// waits for the instance to go and every shard to be AVAILABLE, and Finish
// removes the containers, deletes h1's keys, writes left.json and reports
// to LeaveDone. A leave marked before a restart resumes by itself, and one
// the daemon stops before it is done reports so.
func TestLeaver(t *testing.T) {
	e := etcdtest.Start(t, "voter")
	cli := e.Client()
	ps := newFakeM3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	progress := make(chan string, 100)
	removed := 0
	host := func(holdsCA bool) LeaverHost {
		l := testLocal(t, "h1", cli, ps)
		l.Progress = func(msg string) { progress <- msg }
		return LeaverHost{Local: l, HoldsCA: holdsCA,
			RemoveContainers: func(context.Context) error { removed++; return nil },
			StopMember:       func() { t.Error("StopMember on a client-only host") }}
	}
	if _, err := Register(ctx, cli, Host{Name: "h1", Roles: []Role{RoleDBNode}, IsolationGroup: "h1", Endpoint: "h1:9000", HoldsCA: true}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, store.ControlsKey("h1"), "{}"); err != nil {
		t.Fatal(err)
	}

	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3", "h4"))
	if _, err := NewLeaver(host(true)).Leave(ctx); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "last host that holds the cluster CA") {
		t.Fatalf("Leave of the last CA holder = %v, want a conflict", err)
	}
	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3"))
	if _, err := NewLeaver(host(false)).Leave(ctx); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "would leave 2 instance(s) for replication factor 3") {
		t.Fatalf("Leave below RF = %v, want a conflict", err)
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || len(lv) != 0 {
		t.Fatalf("leaving records after refusals: %v, %v", lv, err)
	}

	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3", "h4"))
	l := NewLeaver(host(false))
	res, err := l.Leave(ctx)
	if err != nil || res.Node != "h1" || res.EtcdRole != "client" || !res.InPlacement || res.State != api.LeaveStateLeaving {
		t.Fatalf("Leave = %+v, %v", res, err)
	}
	if res, err := l.Leave(ctx); err != nil || res.Message != "already leaving" {
		t.Fatalf("Leave again = %+v, %v", res, err)
	}
	run := make(chan error, 1)
	go func() { run <- l.Run(ctx) }()
	if msg := <-progress; !strings.Contains(msg, "waiting for the cluster controller to remove instance h1") {
		t.Fatalf("progress while h1 is placed: %q", msg)
	}
	ps.set(placementOf(m3.ShardInitializing, "h2", "h3", "h4"))
	for msg := <-progress; !strings.Contains(msg, "instance removed; waiting for every shard to be AVAILABLE"); msg = <-progress {
	}
	ps.set(placementOf(m3.ShardAvailable, "h2", "h3", "h4"))
	if err := <-run; !errors.Is(err, ErrLeft) {
		t.Fatalf("Run = %v, want ErrLeft", err)
	}
	if err := l.Finish(ctx); err != nil || removed != 1 {
		t.Fatalf("Finish = %v (containers removed %d times, want 1)", err, removed)
	}
	if err := l.LeaveDone(ctx); err != nil {
		t.Fatalf("LeaveDone = %v", err)
	}
	if n := keyCount(t, l.host.Local, "h1"); n != 0 {
		t.Fatalf("h1's keys after the leave: %d, want 0", n)
	}
	if _, ok, err := RemovedHost(ctx, cli, "h1"); err != nil || ok {
		t.Fatalf("tombstone after a leave: %t, %v (want none)", ok, err)
	}
	if err := CheckNotLeft(l.host.DataDir); !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), "(h1) left the cluster at") {
		t.Fatalf("left.json after the leave: %v", err)
	}

	// A leave marked before a restart resumes; stopped early, it says so.
	if err := MarkLeaving(ctx, cli, "h1", time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	ps.set(placementOf(m3.ShardAvailable, "h1", "h2", "h3", "h4"))
	for len(progress) > 0 {
		<-progress
	}
	l = NewLeaver(host(false))
	rctx, stop := context.WithCancel(ctx)
	go func() { run <- l.Run(rctx) }()
	<-progress // it waits for M3: the leave resumed
	stop()
	if err := <-run; err != nil {
		t.Fatalf("Run stopped = %v, want nil", err)
	}
	l.Stopped(context.Canceled)
	if err := l.LeaveDone(ctx); err == nil || !strings.Contains(err.Error(), "m3sup stopped before the leave finished") {
		t.Fatalf("LeaveDone after the daemon stopped = %v", err)
	}
}

func TestCheckCAHolders(t *testing.T) {
	voters := []Member{{ID: 1, Name: "host1"}, {ID: 2, Name: "host2"}, {ID: 3, Name: "host3"}}
	ca := func(name string) Host { return Host{Name: name, HoldsCA: true} }
	plain := func(name string) Host { return Host{Name: name} }
	for _, tc := range []struct {
		name    string
		hosts   []Host
		members []Member
		leaving []string
		ok      bool
	}{
		{name: "another voter holds the CA", hosts: []Host{ca("host1"), ca("host2"), plain("host3")}, members: voters, ok: true},
		{name: "only this host holds it", hosts: []Host{ca("host1"), plain("host2"), plain("host3")}, members: voters},
		{name: "the other holder is leaving", hosts: []Host{ca("host1"), ca("host2"), plain("host3")}, members: voters, leaving: []string{"host2"}},
		{name: "the other holder is no voter", hosts: []Host{ca("host1"), ca("host4")}, members: voters},
		{name: "the other holder is a learner", hosts: []Host{ca("host1"), ca("host2")},
			members: []Member{{ID: 1, Name: "host1"}, {ID: 2, Name: "host2", IsLearner: true}}},
		{name: "the other holder is not registered", hosts: []Host{ca("host1")}, members: voters},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lv := map[string]Leaving{}
			for _, n := range tc.leaving {
				lv[n] = Leaving{}
			}
			err := checkCAHolders("host1", tc.hosts, tc.members, lv)
			if tc.ok != (err == nil) {
				t.Fatalf("checkCAHolders = %v, want ok %t", err, tc.ok)
			}
			if err != nil && (!strings.Contains(err.Error(), "last host that holds the cluster CA") || !strings.Contains(err.Error(), "joinListen")) {
				t.Fatalf("refusal does not say why and what to do: %v", err)
			}
		})
	}
}
