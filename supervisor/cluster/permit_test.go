package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/m3"
)

func shortPermitTTL(t *testing.T) {
	old := permitTTL
	permitTTL = time.Second
	t.Cleanup(func() { permitTTL = old })
}

func okGate(context.Context) error { return nil }

func permitHolder(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	node, held, err := PermitHolder(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	if !held {
		return ""
	}
	return node
}

type acquired struct {
	release func(context.Context) error
	err     error
}

// acquireAsync runs AcquirePermit as its own goroutine; the result arrives
// on the returned channel.
func acquireAsync(ctx context.Context, cli *clientv3.Client, node string, gate func(context.Context) error) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		r, err := AcquirePermit(ctx, cli, node, gate)
		ch <- acquired{r, err}
	}()
	return ch
}

func TestPermitOneHolder(t *testing.T) {
	shortPermitTTL(t)
	e := startEtcd(t)
	ctx := testCtx(t)

	relA, err := AcquirePermit(ctx, newClient(t, e), "a", okGate)
	if err != nil {
		t.Fatal(err)
	}
	if got := permitHolder(t, e.Client()); got != "a" {
		t.Fatalf("holder %q, want a", got)
	}

	var bGates atomic.Int32
	b := acquireAsync(ctx, newClient(t, e), "b", func(context.Context) error { bGates.Add(1); return nil })
	waitFor(t, limit, "b queued", func() bool { return keys(t, e.Client(), PermitPrefix+"/") == 2 })
	select {
	case r := <-b:
		t.Fatalf("b acquired while a holds the permit (err %v)", r.err)
	default:
	}
	if got := permitHolder(t, e.Client()); got != "a" {
		t.Fatalf("holder %q while b waits, want a", got)
	}

	if err := relA(ctx); err != nil {
		t.Fatal(err)
	}
	if err := relA(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
	r := <-b
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := permitHolder(t, e.Client()); got != "b" {
		t.Fatalf("holder %q, want b", got)
	}
	if n := bGates.Load(); n != 2 {
		t.Fatalf("b's gate ran %d times, want before and after acquiring", n)
	}
	if err := r.release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := keys(t, e.Client(), PermitPrefix+"/"); n != 0 {
		t.Fatalf("%d permit keys after both released", n)
	}
}

func TestPermitHolderCrash(t *testing.T) {
	shortPermitTTL(t)
	e := startEtcd(t)
	ctx := testCtx(t)

	cliA := newClient(t, e)
	if _, err := AcquirePermit(ctx, cliA, "a", okGate); err != nil {
		t.Fatal(err)
	}
	b := acquireAsync(ctx, newClient(t, e), "b", okGate)
	waitFor(t, limit, "b queued", func() bool { return keys(t, e.Client(), PermitPrefix+"/") == 2 })

	start := time.Now()
	_ = cliA.Close() // a's host dies holding the permit; nobody releases
	select {
	case r := <-b:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Logf("b acquired %s after a died", time.Since(start).Round(time.Millisecond))
		_ = r.release(ctx)
	case <-time.After(permitTTL + 5*time.Second): // etcd's lease expiry granularity adds up to a few seconds
		t.Fatal("b did not acquire after a's lease expired")
	}
}

func TestPermitGate(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	cli := e.Client()

	moving := errors.New("shards moving")
	if _, err := AcquirePermit(ctx, cli, "a", func(context.Context) error { return moving }); !errors.Is(err, moving) {
		t.Fatalf("AcquirePermit with a failing gate: %v", err)
	}
	if n := keys(t, cli, PermitPrefix+"/"); n != 0 {
		t.Fatalf("%d permit keys after a failing gate", n)
	}

	// The gate passes, then fails once the permit is held (the previous
	// holder's restart moved shards): nothing stays held.
	calls := 0
	gate := func(context.Context) error {
		calls++
		if calls > 1 {
			return moving
		}
		return nil
	}
	if _, err := AcquirePermit(ctx, cli, "a", gate); !errors.Is(err, moving) || calls != 2 {
		t.Fatalf("gate failing after acquire: err %v, %d gate calls", err, calls)
	}
	if n := keys(t, cli, PermitPrefix+"/"); n != 0 {
		t.Fatalf("%d permit keys after the second gate failed", n)
	}
	if got := permitHolder(t, cli); got != "" {
		t.Fatalf("holder %q, want none", got)
	}
}

func TestPermitWaitCancelled(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	rel, err := AcquirePermit(ctx, e.Client(), "a", okGate)
	if err != nil {
		t.Fatal(err)
	}
	defer rel(ctx)

	bctx, cancel := context.WithCancel(ctx)
	b := acquireAsync(bctx, newClient(t, e), "b", okGate)
	waitFor(t, limit, "b queued", func() bool { return keys(t, e.Client(), PermitPrefix+"/") == 2 })
	cancel()
	if r := <-b; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", r.err)
	}
	waitFor(t, limit, "b's queue entry gone", func() bool { return keys(t, e.Client(), PermitPrefix+"/") == 1 })
}

func TestShardsAvailableAndInPlacement(t *testing.T) {
	f := newFakeM3(t)
	c := f.client()
	ctx := testCtx(t)
	gate := ShardsAvailable(c)
	if err := gate(ctx); !errors.Is(err, ErrShardsMoving) {
		t.Fatalf("no placement: %v", err)
	}
	if in, err := InPlacement(ctx, c, "h1"); err != nil || in {
		t.Fatalf("InPlacement without placement: %v %v", in, err)
	}
	f.setInitState(m3.ShardInitializing)
	if err := c.InitPlacement(ctx, 4, 3, []m3.Instance{
		{ID: "h1", IsolationGroup: "a", Endpoint: "h1:9000"},
		{ID: "h2", IsolationGroup: "b", Endpoint: "h2:9000"},
		{ID: "h3", IsolationGroup: "c", Endpoint: "h3:9000"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := gate(ctx); !errors.Is(err, ErrShardsMoving) {
		t.Fatalf("initializing shards: %v", err)
	}
	f.settle()
	if err := gate(ctx); err != nil {
		t.Fatalf("all available: %v", err)
	}
	if in, err := InPlacement(ctx, c, "h1"); err != nil || !in {
		t.Fatalf("InPlacement(h1): %v %v", in, err)
	}
	if in, err := InPlacement(ctx, c, "h9"); err != nil || in {
		t.Fatalf("InPlacement(h9): %v %v", in, err)
	}
}
