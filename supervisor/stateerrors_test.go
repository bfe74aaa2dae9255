package supervisor

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestStateErrorsLoggedOnceAndShown: a value refused in etcd is logged
// once (naming the key) however often the watch reports it, shown in
// status while it lasts, and its repair is logged; the spec in force stays
// the last good one the watch carries.
func TestStateErrorsLoggedOnceAndShown(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	cfg := config.Default()
	h := newHostStatus(cfg.NodeName, "test", cfg.Runtime.Containerd.Namespace, nil, zap.New(core))
	good := SpecFromConfig(cfg)
	bad := &store.ValueError{Key: store.ControlsKey("n1"), Revision: 7, Err: errors.New("decode: unexpected end of JSON input")}
	for range 3 {
		h.noteChange(store.Change{Cluster: good, Errors: []*store.ValueError{bad}})
	}
	if n := logs.FilterMessageSnippet("refusing a value in etcd").FilterField(zap.String("key", bad.Key)).Len(); n != 1 {
		t.Fatalf("logged %d times, want once: %v", n, logs.All())
	}
	st := h.Status(context.Background())
	if len(st.StateErrors) != 1 || st.StateErrors[0].Key != bad.Key || st.StateErrors[0].Revision != 7 {
		t.Fatalf("status stateErrors: %+v", st.StateErrors)
	}
	if got := h.runningSpec(); got.Release != good.Release {
		t.Fatalf("spec in force: %+v", got)
	}
	h.noteChange(store.Change{Cluster: spec.Cluster{}})
	if n := logs.FilterMessageSnippet("usable again").Len(); n != 1 {
		t.Fatalf("repair logged %d times", n)
	}
	if st := h.Status(context.Background()); len(st.StateErrors) != 0 {
		t.Fatalf("status after repair: %+v", st.StateErrors)
	}
}
