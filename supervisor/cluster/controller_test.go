package cluster

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// recorder keeps the steps one controller reported.
type recorder struct {
	mu    sync.Mutex
	steps []Step
}

func (r *recorder) add(s Step) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
}

func (r *recorder) all() []Step {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Step(nil), r.steps...)
}

// since reports whether a step after the first n matches f.
func (r *recorder) since(n int, f func(Step) bool) bool {
	for _, s := range r.all()[min(n, len(r.all())):] {
		if f(s) {
			return true
		}
	}
	return false
}

func waiting(reason string) func(Step) bool {
	return func(s Step) bool {
		return s.Err == nil && s.Action.Kind == KindWait && strings.Contains(s.Action.Reason, reason)
	}
}

func kind(k Kind) func(Step) bool {
	return func(s Step) bool { return s.Err == nil && s.Action.Kind == k }
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// runController starts a controller for node as its own actor and stops
// and joins it when the test ends.
func runController(t *testing.T, cli *clientv3.Client, f *fakeM3, node string, clk *clock) *recorder {
	t.Helper()
	rec := &recorder{}
	c := &Controller{
		Cli: cli, M3: f.client(), Node: node,
		RF: 3, Shards: 4, RemoveAfter: time.Hour,
		Interval: 20 * time.Millisecond, TTL: time.Second,
		OnStep: rec.add,
	}
	if clk != nil {
		c.Now = clk.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", node, err)
		}
	})
	return rec
}

func register(t *testing.T, cli *clientv3.Client, hosts ...Host) []clientv3.LeaseID {
	t.Helper()
	var leases []clientv3.LeaseID
	for _, h := range hosts {
		l, err := Register(context.Background(), cli, h, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	return leases
}

const limit = 15 * time.Second

func TestControllerValidates(t *testing.T) {
	if err := (&Controller{}).Run(context.Background()); err == nil {
		t.Fatal("Run without clients succeeded")
	}
}

func TestControllerInitOnlyWithRFHosts(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	rec := runController(t, newClient(t, e), f, "c1", nil)

	register(t, e.Client(), dbHost("h1", "a"), dbHost("h2", "b"), coordHost("q1"))
	waitFor(t, limit, "wait for a third db host", func() bool { return rec.since(0, waiting("2 of 3 db hosts")) })
	if m := f.muts(); len(m) != 0 {
		t.Fatalf("mutations before RF hosts: %v", m)
	}

	register(t, e.Client(), dbHost("h3", "c"))
	waitFor(t, limit, "converged", func() bool { return rec.since(0, kind(KindNone)) })
	if m := f.muts(); !reflect.DeepEqual(m, []string{"init h1,h2,h3"}) {
		t.Fatalf("mutations %v, want one init", m)
	}
	p, _ := f.placement()
	if p.NumShards != 4 || p.ReplicaFactor != 3 || p.Instances["h2"].Endpoint != "h2.lan:9000" {
		t.Fatalf("placement %+v", p)
	}
}

func TestControllerOnlyLeaderActs(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	rec1 := runController(t, newClient(t, e), f, "c1", nil)
	waitFor(t, limit, "c1 leads", func() bool { return len(rec1.all()) > 0 })
	rec2 := runController(t, newClient(t, e), f, "c2", nil)
	waitFor(t, limit, "c2 campaigns", func() bool { return keys(t, e.Client(), ElectionPrefix) == 2 })

	register(t, e.Client(), dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"))
	waitFor(t, limit, "placement", func() bool { _, ok := f.placement(); return ok })
	n := len(rec1.all())
	register(t, e.Client(), dbHost("h4", "a"))
	waitFor(t, limit, "h4 added", func() bool { return rec1.since(n, kind(KindAdd)) })
	n = len(rec1.all())
	waitFor(t, limit, "c1 waits for the move", func() bool { return rec1.since(n, waiting("shards moving")) })
	f.settle()
	n = len(rec1.all())
	waitFor(t, limit, "converged", func() bool { return rec1.since(n, kind(KindNone)) })

	if m := f.muts(); !reflect.DeepEqual(m, []string{"init h1,h2,h3", "add h4"}) {
		t.Fatalf("mutations %v", m)
	}
	if s := rec2.all(); len(s) != 0 {
		t.Fatalf("the follower stepped: %v", s)
	}
}

func TestControllerTakeover(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	f.setInitState(m3.ShardInitializing) // the new cluster is still bootstrapping
	cli1 := newClient(t, e)
	rec1 := runController(t, cli1, f, "c1", nil)
	waitFor(t, limit, "c1 leads", func() bool { return len(rec1.all()) > 0 })
	rec2 := runController(t, newClient(t, e), f, "c2", nil)
	waitFor(t, limit, "c2 campaigns", func() bool { return keys(t, e.Client(), ElectionPrefix) == 2 })

	register(t, e.Client(), dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"))
	waitFor(t, limit, "placement", func() bool { _, ok := f.placement(); return ok })
	register(t, e.Client(), dbHost("h4", "a"))
	n := len(rec1.all())
	waitFor(t, limit, "c1 waits for shards", func() bool { return rec1.since(n, waiting("INITIALIZING")) })

	// c1's host dies mid-operation: its client goes, its lease expires.
	_ = cli1.Close()
	waitFor(t, limit, "c2 takes over", func() bool { return len(rec2.all()) > 0 })
	if !waiting("shards moving")(rec2.all()[0]) {
		t.Fatalf("c2's first step %v, want a wait for the shards", rec2.all()[0])
	}
	stepsOfC1 := len(rec1.all())

	f.settle() // the nodes finish bootstrapping
	waitFor(t, limit, "c2 adds h4", func() bool { return rec2.since(0, kind(KindAdd)) })
	f.settle()
	waitFor(t, limit, "converged", func() bool { return rec2.since(0, kind(KindNone)) })
	if m := f.muts(); !reflect.DeepEqual(m, []string{"init h1,h2,h3", "add h4"}) {
		t.Fatalf("mutations %v, want init once and add once", m)
	}
	if len(rec1.all()) != stepsOfC1 {
		t.Fatalf("c1 stepped after losing its session: %v", rec1.all()[stepsOfC1:])
	}
}

func TestControllerAddWaitsForAvailable(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	f.setInitState(m3.ShardInitializing)
	rec := runController(t, newClient(t, e), f, "c1", nil)
	register(t, e.Client(), dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"))
	waitFor(t, limit, "placement", func() bool { _, ok := f.placement(); return ok })

	register(t, e.Client(), dbHost("h4", "a"))
	n := len(rec.all())
	waitFor(t, limit, "three waits with h4 registered", func() bool {
		waits := 0
		for _, s := range rec.all()[n:] {
			if waiting("12 INITIALIZING")(s) {
				waits++
			}
		}
		return waits >= 3
	})
	if m := f.muts(); len(m) != 1 {
		t.Fatalf("mutations while shards initialize: %v", m)
	}
	f.settle()
	waitFor(t, limit, "h4 added", func() bool { return rec.since(n, kind(KindAdd)) })
	n = len(rec.all())
	waitFor(t, limit, "waits for the move", func() bool { return rec.since(n, waiting("1 INITIALIZING, 1 LEAVING")) })
	f.settle()
	waitFor(t, limit, "converged", func() bool { return rec.since(n, kind(KindNone)) })
}

func TestControllerRemovesAfterGrace(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	clk := &clock{now: t0}
	leases := register(t, e.Client(), dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"), dbHost("h4", "a"))
	rec := runController(t, newClient(t, e), f, "c1", clk)
	waitFor(t, limit, "converged", func() bool { return rec.since(0, kind(KindNone)) })

	if _, err := e.Client().Revoke(context.Background(), leases[3]); err != nil { // h4 deregisters
		t.Fatal(err)
	}
	n := len(rec.all())
	waitFor(t, limit, "grace", func() bool { return rec.since(n, waiting("unregistered h4")) })
	clk.advance(time.Hour - time.Second)
	n = len(rec.all())
	waitFor(t, limit, "still grace", func() bool { return rec.since(n, waiting("unregistered h4")) })
	if m := f.muts(); len(m) != 1 {
		t.Fatalf("mutations within grace: %v", m)
	}
	clk.advance(time.Second)
	waitFor(t, limit, "h4 removed", func() bool { return rec.since(n, kind(KindRemove)) })
	f.settle()
	n = len(rec.all())
	waitFor(t, limit, "converged", func() bool { return rec.since(n, kind(KindNone)) })
	if m := f.muts(); !reflect.DeepEqual(m, []string{"init h1,h2,h3,h4", "remove h4"}) {
		t.Fatalf("mutations %v", m)
	}
}

// TestControllerForgetsRemovedHost: a host marked removed (`m3sup
// remove-host`) after it died is removed at once, without the grace of a
// vanished host; once every shard is AVAILABLE again the leader deletes
// its leaving record and keys (finishing a remove-host nobody waits for).
// A leave of a host's own is never forgotten by the controller.
func TestControllerForgetsRemovedHost(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	ctx := testCtx(t)
	cli := e.Client()
	leases := register(t, cli, dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"), dbHost("h4", "a"), dbHost("h5", "b"))
	rec := runController(t, newClient(t, e), f, "c1", &clock{now: t0})
	waitFor(t, limit, "converged", func() bool { return rec.since(0, kind(KindNone)) })

	for _, l := range leases[3:] { // h4 and h5 die
		if _, err := cli.Revoke(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, RolloutHostsPrefix+"h4", "{}"); err != nil {
		t.Fatal(err)
	}
	// h5 had begun a leave of its own: the controller removes its
	// instance but leaves its record to h5.
	if err := MarkLeaving(ctx, cli, "h5", t0, 0); err != nil {
		t.Fatal(err)
	}
	_, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkRemoved(ctx, cli, "h4", "h1", t0, seen); err != nil {
		t.Fatal(err)
	}
	waitFor(t, limit, "both removed", func() bool {
		f.settle() // M3 streams the shards (for the first removal while the second waits)
		return len(f.muts()) == 3
	})
	f.settle()
	waitFor(t, limit, "h4 forgotten", func() bool {
		lv, err := LeavingHosts(ctx, cli)
		_, still := lv["h4"]
		return err == nil && !still
	})
	if m := f.muts(); !reflect.DeepEqual(m[:1], []string{"init h1,h2,h3,h4,h5"}) || !reflect.DeepEqual(slices.Sorted(slices.Values(m[1:])), []string{"remove h4", "remove h5"}) {
		t.Fatalf("mutations %v", m)
	}
	n := len(rec.all())
	waitFor(t, limit, "converged", func() bool { return rec.since(n, kind(KindNone)) })
	lv, err := LeavingHosts(ctx, cli)
	if err != nil || len(lv) != 1 || lv["h5"].RemovedBy != "" {
		t.Fatalf("leaving after h4 was forgotten: %v, %v (want h5's own leave only)", lv, err)
	}
	if resp, err := cli.Get(ctx, RolloutHostsPrefix+"h4"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("h4's rollout state after it was forgotten: %v, %v", resp, err)
	}
}
