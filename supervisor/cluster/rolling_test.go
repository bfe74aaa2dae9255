package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/spec"
)

func TestLastGoodRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rollout.json")
	if lg, err := loadLastGood(path); err != nil || lg != nil {
		t.Fatalf("missing file: %+v, %v", lg, err)
	}
	d := DBNodeSpec{Release: spec.Release{Version: "1.5.0", URL: "file:///r.tgz", Checksum: "sha256:00"}, DBNode: spec.Component{LogLevel: "info"}}
	if err := saveLastGood(path, lastGood{Revision: d.Revision(), Spec: d, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	lg, err := loadLastGood(path)
	if err != nil || lg == nil || lg.Revision != d.Revision() || lg.Spec.Release != d.Release {
		t.Fatalf("loaded %+v, %v", lg, err)
	}
	// A file whose revision does not match its spec is refused.
	if err := os.WriteFile(path, []byte(`{"revision":"abc","spec":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLastGood(path); err == nil {
		t.Fatal("a tampered last good file was accepted")
	}
}

func TestDBNodeRevision(t *testing.T) {
	base := spec.Cluster{Release: spec.Release{Version: "1.5.0", URL: "u", Checksum: "sha256:aa"}, DBNode: spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"}}
	r := DBNodeSpecOf(base).Revision()
	coord := base
	coord.Coordinator.LogLevel = "warn"
	if DBNodeSpecOf(coord).Revision() != r {
		t.Error("a coordinator-only change changed the dbnode revision")
	}
	for name, mod := range map[string]func(*spec.Cluster){
		"checksum":  func(c *spec.Cluster) { c.Release.Checksum = "sha256:bb" },
		"logLevel":  func(c *spec.Cluster) { c.DBNode.LogLevel = "warn" },
		"config":    func(c *spec.Cluster) { c.DBNode.Config = map[string]any{"db": map[string]any{"x": 1}} },
		"image":     func(c *spec.Cluster) { c.DBNode.Image = "quay.io/m3db/m3dbnode:v1.5.0" },
		"version":   func(c *spec.Cluster) { c.Release.Version = "1.5.1" },
		"insecure":  func(c *spec.Cluster) { c.Release.InsecureSkipChecksum = true },
		"url":       func(c *spec.Cluster) { c.Release.URL = "v" },
		"nothing^1": func(c *spec.Cluster) {},
	} {
		c := base
		mod(&c)
		if got := DBNodeSpecOf(c).Revision(); (got == r) != (name == "nothing^1") || len(got) != 12 {
			t.Errorf("%s: revision %s (base %s)", name, got, r)
		}
	}
}

func TestEffectiveSpec(t *testing.T) {
	r := NewRollout(Local{}, nil, time.Minute)
	good := spec.Cluster{Release: spec.Release{Version: "1.5.0", URL: "u0", Checksum: "sha256:aa"}, DBNode: spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"}}
	bad := good
	bad.Release = spec.Release{Version: "1.5.1", URL: "u1", Checksum: "sha256:bb"}
	bad.Coordinator.LogLevel = "warn"
	ctx := context.Background()

	// No failure: desired as is.
	if got := r.Effective(ctx, bad); got.Release != bad.Release {
		t.Fatalf("effective without a failure: %+v", got.Release)
	}
	// Failed, but nothing known to go back to: desired as is.
	badRev := DBNodeSpecOf(bad).Revision()
	r.failed[badRev] = Failure{Revision: badRev, Host: "host2", Reason: "crash-loop"}
	if got := r.Effective(ctx, bad); got.Release != bad.Release {
		t.Fatalf("effective without a last good spec: %+v", got.Release)
	}
	// Failed with a last good spec: its release and dbnode settings, the
	// desired coordinator settings.
	r.lastGood = &lastGood{Revision: DBNodeSpecOf(good).Revision(), Spec: DBNodeSpecOf(good)}
	got := r.Effective(ctx, bad)
	if got.Release != good.Release || got.DBNode.LogLevel != "info" || got.Coordinator.LogLevel != "warn" {
		t.Fatalf("effective when halted: %+v", got)
	}
	if r.halted != badRev || r.desiredRev != badRev {
		t.Fatalf("halted %q desired %q, want %q", r.halted, r.desiredRev, badRev)
	}
	// A newer desired state rolls again.
	newer := bad
	newer.DBNode.LogLevel = "warn"
	if got := r.Effective(ctx, newer); got.Release != newer.Release || r.halted != "" {
		t.Fatalf("effective for a newer spec: %+v, halted %q", got.Release, r.halted)
	}
}
