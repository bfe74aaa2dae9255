package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
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
	s.roll = roll
	desired := roll.Effective(context.Background(), SpecFromConfig(cfg))
	rel := release{Version: "1.5.0", Dir: t.TempDir()}
	writeExecutable(t, rel.Dir+"/m3dbnode")
	writeExecutable(t, rel.Dir+"/m3coordinator")
	r, err := s.render(layout{root: cfg.DataDir}, desired, nil, rel, "127.0.0.1:2379")
	if err != nil {
		t.Fatal(err)
	}
	onDesired := func() int {
		p, _ := roll.Progress(context.Background(), false, nil, oneDBNode{hash: r.dbHash})
		return p.OnDesired
	}
	if n := onDesired(); n != 0 {
		t.Fatalf("render recorded the revision of %s (%d on desired)", r.dbHash, n)
	}
	if r.dbRevision.Revision != cluster.DBNodeSpecOf(desired).Revision() || r.dbRevision.Version != "1.5.0" {
		t.Fatalf("rendered revision %+v", r.dbRevision)
	}
	roll.Record(r.dbHash, r.dbRevision)
	if n := onDesired(); n != 1 {
		t.Fatalf("after Record: %d on desired, want 1", n)
	}
}
