package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// TestPermitType: one Permit per host; Acquire takes it once, a second
// Acquire while held takes nothing, Release gives it back, and Held and
// Since follow.
func TestPermitType(t *testing.T) {
	shortPermitTTL(t)
	e := startEtcd(t)
	ctx := testCtx(t)
	p := NewPermit(Local{Node: "a", Etcd: newClient(t, e)})
	if p.Held() || !p.Since().IsZero() {
		t.Fatal("a new permit is held")
	}
	before := time.Now()
	if took, err := p.Acquire(ctx, okGate); err != nil || !took {
		t.Fatalf("Acquire: took %t, %v", took, err)
	}
	if !p.Held() || p.Since().Before(before) || permitHolder(t, e.Client()) != "a" {
		t.Fatalf("after Acquire: held %t since %s holder %q", p.Held(), p.Since(), permitHolder(t, e.Client()))
	}
	refuse := func(context.Context) error { return errors.New("not asked while held") }
	if took, err := p.Acquire(ctx, refuse); err != nil || took {
		t.Fatalf("Acquire while held: took %t, %v", took, err)
	}
	p.Release(ctx)
	p.Release(ctx) // idempotent
	if p.Held() || !p.Since().IsZero() {
		t.Fatal("held after Release")
	}
	waitFor(t, 5*time.Second, "the permit free", func() bool { return keys(t, e.Client(), PermitPrefix+"/") == 0 })
	moving := errors.New("moving")
	if took, err := p.Acquire(ctx, func(context.Context) error { return moving }); !errors.Is(err, moving) || took || p.Held() {
		t.Fatalf("Acquire with a failing gate: took %t, %v", took, err)
	}
}
