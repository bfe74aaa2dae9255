package cluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAutomation: a lone host (RF 1) registers, its controller creates the
// placement, and only then AfterPlacement runs; the first part to return
// ends the others, and Run returns its error once all have.
func TestAutomation(t *testing.T) {
	e := startEtcd(t)
	f := newFakeM3(t)
	ctx := testCtx(t)
	boom := errors.New("boom")
	a := &Automation{
		Local: Local{Node: "h1", Etcd: newClient(t, e), M3: f.client()},
		Host:  dbHost("h1", "a"), RF: 1, Shards: 4,
		AfterPlacement: func(context.Context) error {
			if _, ok := f.placement(); !ok {
				t.Error("AfterPlacement ran before the placement existed")
			}
			if n := keys(t, e.Client(), RegistryPrefix); n != 1 {
				t.Errorf("%d hosts registered, want h1", n)
			}
			return boom
		},
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Run: %v, want AfterPlacement's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if p, ok := f.placement(); !ok || len(p.Instances) != 1 {
		t.Fatalf("placement %+v (exists %t), want h1 alone", p, ok)
	}
}
