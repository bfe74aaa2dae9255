package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/render"
)

// oneDBNode is an agent that runs one m3dbnode container, healthy.
type oneDBNode struct{ hash string }

func (o oneDBNode) Status(name string) (agent.Status, bool) {
	if name != DBNode {
		return agent.Status{}, false
	}
	return agent.Status{Name: DBNode, State: agent.StateRunning, Healthy: true, SpecHash: o.hash, DesiredHash: o.hash, DesiredActive: true}, true
}

func (o oneDBNode) Statuses() []agent.Status {
	st, _ := o.Status(DBNode)
	return []agent.Status{st}
}

// TestRenderRecordsNoRevision: rendering (what apply --dry-run does) leaves
// the rollout alone; the reconcile path records which revision a rendered
// m3dbnode hash runs.
func TestRenderRecordsNoRevision(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	s := New(Options{Config: cfg})
	roll := cluster.NewRollout(cluster.Local{Node: cfg.NodeName, DataDir: cfg.DataDir}, nil, time.Minute)
	s.parts.update(func(u *up) { u.roll = roll })
	desired := roll.Effective(context.Background(), SpecFromConfig(cfg))
	rel := render.Release{Version: "1.5.0", Dir: "/rel", Binaries: map[string]string{DBNode: "/rel/m3dbnode", Coordinator: "/rel/m3coordinator"}}
	in := s.renderInput(desired, nil, rel, "127.0.0.1:2379")
	r, err := s.render(in)
	if err != nil {
		t.Fatal(err)
	}
	rev := dbRevision(in, r)
	onDesired := func() int {
		p, _ := roll.Progress(context.Background(), false, nil, oneDBNode{hash: r.DBNodeHash})
		return p.OnDesired
	}
	if n := onDesired(); n != 0 {
		t.Fatalf("render recorded the revision of %s (%d on desired)", r.DBNodeHash, n)
	}
	if rev.Revision != cluster.DBNodeSpecOf(desired).Revision() || rev.Version != "1.5.0" {
		t.Fatalf("rendered revision %+v", rev)
	}
	roll.Record(r.DBNodeHash, rev)
	if n := onDesired(); n != 1 {
		t.Fatalf("after Record: %d on desired, want 1", n)
	}
}
