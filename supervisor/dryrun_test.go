package supervisor

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/render"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestApplyDryRunChangesNothing: `m3sup apply --dry-run` on a running host
// predicts restarts (it renders the new spec) and changes nothing
// anywhere: not etcd, not a file under the data dir, not the rollout.
func TestApplyDryRunChangesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := config.Default()
	cfg.DataDir, cfg.NodeName = t.TempDir(), "n1"
	ports := etcdtest.FreePorts(t, "127.0.0.1", 7)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	cfg.DBNode.ListenAddress, cfg.DBNode.ClusterListenAddress, cfg.DBNode.HTTPNodeListenAddress = addr(0), addr(1), addr(2)
	cfg.DBNode.HTTPClusterListenAddress, cfg.DBNode.DebugListenAddress = addr(3), addr(4)
	cfg.Coordinator.ListenAddress, cfg.Coordinator.MetricsListenAddress = addr(5), addr(6)

	// A host after its first reconcile: etcd with the seeded spec, the
	// release fetched, the components rendered, written, recorded by the
	// rollout and run by the agent.
	e := etcdtest.Start(t, cfg.NodeName)
	cli := e.Client()
	st := store.New(cli)
	s := New(Options{Config: cfg})
	cur, _, err := st.Seed(ctx, SpecFromConfig(cfg), "seed")
	if err != nil {
		t.Fatal(err)
	}
	relDir := t.TempDir()
	writeExecutable(t, filepath.Join(relDir, DBNode))
	writeExecutable(t, filepath.Join(relDir, Coordinator))
	s.art.releases = map[spec.Release]render.Release{cur.Release: unpackedRelease(cur.Release.Version, "sha256:r", relDir)}
	roll := cluster.NewRollout(cluster.Local{Node: cfg.NodeName, DataDir: cfg.DataDir, Etcd: cli}, nil, time.Minute)
	s.parts.update(func(u *up) {
		u.etcd, u.store, u.roll = e, st, roll
		u.m3 = &m3.Client{BaseURL: "http://" + cfg.Coordinator.ListenAddress}
	})
	comps, err := s.desiredComponents(ctx, store.Change{Cluster: cur}, e.HostPort())
	if err != nil {
		t.Fatal(err)
	}
	rt := &runningRuntime{started: make(chan string, len(comps))}
	ag := agent.New(rt, agent.Options{KeepRunning: true})
	agCtx, stopAgent := context.WithCancel(ctx)
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(agCtx, comps) }()
	defer func() { stopAgent(); <-agDone }()
	for range comps {
		select {
		case <-rt.started:
		case <-ctx.Done():
			t.Fatal("the agent started no components")
		}
	}
	s.parts.update(func(u *up) { u.agent = ag })

	type snapshot struct {
		etcdRev  int64
		files    map[string]string
		progress cluster.RolloutProgress
	}
	take := func() snapshot {
		t.Helper()
		r, err := cli.Get(ctx, "m3sup-dry-run-probe")
		if err != nil {
			t.Fatal(err)
		}
		snap := snapshot{etcdRev: r.Header.Revision, files: map[string]string{}}
		err = filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			what := fmt.Sprintf("%v %d %s", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
			if fi.Mode().IsRegular() {
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				what += fmt.Sprintf(" %x", sha256.Sum256(b))
			}
			snap.files[path] = what
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := roll.Progress(ctx, false, nil, ag); p != nil {
			snap.progress = *p
		}
		return snap
	}
	before := take()
	if len(before.files) < 5 || before.progress.DesiredRevision == "" {
		t.Fatalf("the host is not running-ish: %d files, progress %+v", len(before.files), before.progress)
	}

	// A change that renders new configs for both components and a new
	// namespace; then one that changes the release.
	next := cur
	next.DBNode.LogLevel, next.Coordinator.LogLevel = "debug", "debug"
	next.M3.Namespaces = append(append([]spec.Namespace(nil), cur.M3.Namespaces...),
		spec.Namespace{Name: "dryrun", Retention: spec.Duration(48 * time.Hour), BlockSize: spec.Duration(2 * time.Hour)})
	res, err := newControlAPI(s).ApplyCluster(ctx, api.ClusterDoc{Spec: next}, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied || len(res.Changes) == 0 || len(res.Restarts) != 2 || len(res.InPlace) == 0 {
		t.Fatalf("dry run: %+v; want 2 restarts predicted, a namespace created, nothing applied", res)
	}
	newRelease := next
	newRelease.Release.Version, newRelease.Release.URL = "1.5.1", "https://example.invalid/m3_1.5.1.tar.gz"
	if res, err = newControlAPI(s).ApplyCluster(ctx, api.ClusterDoc{Spec: newRelease}, true); err != nil || res.Applied || len(res.Restarts) != 2 {
		t.Fatalf("dry run of a new release: %+v, %v", res, err)
	}

	after := take()
	if after.etcdRev != before.etcdRev {
		t.Errorf("etcd's revision moved from %d to %d", before.etcdRev, after.etcdRev)
	}
	for path, was := range before.files {
		if now, ok := after.files[path]; !ok {
			t.Errorf("%s removed", path)
		} else if now != was {
			t.Errorf("%s changed: %s → %s", path, was, now)
		}
	}
	for path := range after.files {
		if _, ok := before.files[path]; !ok {
			t.Errorf("%s created", path)
		}
	}
	if !reflect.DeepEqual(after.progress, before.progress) {
		t.Errorf("the rollout changed:\n%+v\n→\n%+v", before.progress, after.progress)
	}
	if got, _, _, err := st.Cluster(ctx); err != nil || !reflect.DeepEqual(got, cur) {
		t.Errorf("the stored spec changed: %v", err)
	}
	// Nor did the rollout learn which revision the dry run's m3dbnode
	// hash would run (only the reconcile path records it).
	rel, _ := s.art.cachedRelease(cur.Release)
	r, err := s.render(s.renderInput(next, nil, rel, e.HostPort()))
	if err != nil {
		t.Fatal(err)
	}
	roll.Effective(ctx, next)
	if p, _ := roll.Progress(ctx, false, nil, oneDBNode{hash: r.DBNodeHash}); p == nil || p.OnDesired != 0 {
		t.Errorf("the dry run recorded the revision of its m3dbnode hash: %+v", p)
	}
	if rt.runs() != len(comps) {
		t.Errorf("the dry run started containers: %d runs", rt.runs())
	}
}

// runningRuntime runs every container at once and never ends one.
type runningRuntime struct {
	started chan string
	mu      sync.Mutex
	running []runtime.Status
}

func (r *runningRuntime) Run(_ context.Context, sp runtime.Spec) (runtime.Status, error) {
	st := runtime.Status{ID: sp.ID, Labels: sp.Labels, State: runtime.StateRunning, PID: 1}
	r.mu.Lock()
	r.running = append(r.running, st)
	r.mu.Unlock()
	r.started <- sp.ID
	return st, nil
}

func (r *runningRuntime) runs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

func (r *runningRuntime) Wait(context.Context, string) (<-chan runtime.Exit, error) {
	return make(chan runtime.Exit), nil
}

func (r *runningRuntime) Stop(context.Context, string, time.Duration) (runtime.Exit, error) {
	return runtime.Exit{At: time.Now()}, nil
}

func (r *runningRuntime) Remove(context.Context, string) error { return nil }

func (r *runningRuntime) List(context.Context) ([]runtime.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]runtime.Status(nil), r.running...), nil
}
