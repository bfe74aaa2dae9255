package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
)

// hostCLI runs `m3sup ARGS --socket` h's socket.
func hostCLI(t testing.TB, h *hostNode, args ...string) string {
	t.Helper()
	cmd := m3sup(append(args, "--socket", h.socket)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("m3sup %v: %v:\n%s", args, err, out.String())
	}
	return out.String()
}

// hostCLIErr runs an m3sup command against h's socket and returns its
// output and error.
func hostCLIErr(h *hostNode, args ...string) (string, error) {
	cmd := m3sup(append(args, "--socket", h.socket)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// rollDBNodes applies a dbnode-only change through hosts[0] while writing a
// point every 200 ms through hosts[0]'s coordinator (majority writes) and
// polling every host's status every 100 ms. Every m3dbnode restarts once
// for the spec change, never two at a time, under the cluster permit; no
// write fails and every point reads back. It returns how long the rollout
// took (apply to permit released) and how many writes it made.
func rollDBNodes(t testing.TB, cli *clientv3.Client, hosts ...*hostNode) (took time.Duration, writes int) {
	h1 := hosts[0]
	apis := make([]*api.Client, len(hosts))
	before := make([]agent.Status, len(hosts))
	for i, h := range hosts {
		apis[i] = api.NewClient(h.socket)
		before[i] = compOf(h.waitReady(time.Minute), "m3dbnode")
		if before[i].State != agent.StateRunning || !before[i].Healthy || before[i].PID == 0 {
			t.Fatalf("%s: m3dbnode before the change: %s", h.ip, compLine(before[i]))
		}
	}

	// Status shows the whole cluster from any host.
	st := statusCLI(t, hosts[len(hosts)-1].socket)
	if st.Cluster == nil || len(st.Cluster.Hosts) != len(hosts) || st.Cluster.ControllerLeader == "" || st.Cluster.PermitHeld {
		t.Fatalf("cluster status from %s: %+v (want %d hosts, a controller leader, no permit holder)", hosts[len(hosts)-1].ip, st.Cluster, len(hosts))
	}
	for _, h := range st.Cluster.Hosts {
		if h.EtcdRole != "voter" || len(h.Roles) != 2 || h.Endpoint == "" {
			t.Errorf("cluster status host %+v: want an etcd voter with dbnode and coordinator and an endpoint", h)
		}
	}
	out := hostCLI(t, hosts[len(hosts)-1], "status")
	t.Logf("status on %s:\n%s", hosts[len(hosts)-1].ip, out)
	if !strings.Contains(out, "HOST") || !strings.Contains(out, "permit: none") || !strings.Contains(out, "controller leader") {
		t.Errorf("status lacks the hosts table or permit line:\n%s", out)
	}

	var doc api.ClusterDoc
	if err := json.Unmarshal([]byte(hostCLI(t, h1, "get", "cluster", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	level := "warn"
	if doc.Spec.DBNode.LogLevel == level {
		level = "info"
	}
	doc.Spec.DBNode.LogLevel = level

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup

	// Writer: one series per point, so every point is visible in a query.
	w := startPointWriter(h1.coordURL, "m3sup_e2e_rolling")
	defer w.finish()

	// Poller: every host's dbnode and the permit holder.
	var (
		pmu      sync.Mutex
		maxDown  int
		downSeen string
		holders  = map[string]bool{}
		// statusHolders: the permit holders the hosts' status showed.
		statusHolders = map[string]bool{}
		pollErrors    int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			down, line, seen := 0, "", []int(nil)
			for i, c := range apis {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := c.Status(sctx)
				cancel()
				if err != nil {
					pmu.Lock()
					pollErrors++
					pmu.Unlock()
					continue
				}
				if st.Cluster != nil && st.Cluster.PermitHeld {
					pmu.Lock()
					statusHolders[st.Cluster.PermitHolder] = true
					pmu.Unlock()
				}
				if db := compOf(st, "m3dbnode"); dbnodeDown(db) {
					down++
					line += hosts[i].ip + ": " + compLine(db) + "; "
					seen = append(seen, i)
				}
			}
			if down > 1 {
				down, line = confirmDown(ctx, apis, hosts, seen)
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			holder, held, err := cluster.PermitHolder(pctx, cli)
			cancel()
			pmu.Lock()
			if down > maxDown {
				maxDown, downSeen = down, line
			}
			if err == nil && held {
				holders[holder] = true
			}
			pmu.Unlock()
		}
	}()

	time.Sleep(time.Second) // some writes before the change
	start := time.Now()
	out = hostCLI(t, h1, "apply", "-f", writeDoc(t, doc))
	t.Logf("apply dbnode.logLevel → %s:\n%s", level, out)

	// Every dbnode restarts once for the spec change and is healthy again.
	deadline := time.Now().Add(10 * time.Minute)
	for i, h := range hosts {
		for {
			st, err := apis[i].Status(context.Background())
			if err == nil {
				db := compOf(st, "m3dbnode")
				if db.PID != 0 && db.PID != before[i].PID && db.State == agent.StateRunning && db.Healthy {
					if db.LastReason != agent.ReasonSpec || db.Restarts != before[i].Restarts+1 {
						t.Errorf("%s: m3dbnode reason %q restarts %d, want %q and %d", h.ip, db.LastReason, db.Restarts, agent.ReasonSpec, before[i].Restarts+1)
					}
					t.Logf("%s: m3dbnode restarted and healthy %s after apply: %s", h.ip, time.Since(start).Round(100*time.Millisecond), compLine(db))
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: m3dbnode not restarted and healthy 10 min after apply: %v %+v", h.ip, err, compOf(st, "m3dbnode"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The last holder gives the permit back once every shard is AVAILABLE.
	for {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, held, err := cluster.PermitHolder(pctx, cli)
		cancel()
		if err == nil && !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("permit still held (err %v) 10 min after apply", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took = time.Since(start)
	t.Logf("rolling dbnode change done in %s (every dbnode restarted, permit released)", took.Round(100*time.Millisecond))
	time.Sleep(time.Second) // writes after the rollout
	stop()
	wg.Wait()

	for i, h := range hosts {
		st, err := apis[i].Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if db := compOf(st, "m3dbnode"); db.Restarts != before[i].Restarts+1 {
			t.Errorf("%s: m3dbnode restarted %d times during the rollout, want once", h.ip, db.Restarts-before[i].Restarts)
		}
	}
	t.Logf("permit holders seen: %v; most dbnodes down at once: %d %s; status poll errors: %d", holders, maxDown, downSeen, pollErrors)
	if maxDown > 1 {
		t.Errorf("%d m3dbnodes down at once: %s", maxDown, downSeen)
	}
	t.Logf("permit holders shown by status: %v", statusHolders)
	if len(statusHolders) == 0 {
		t.Error("no host's status showed a permit holder during the rollout")
	}
	for i, h := range hosts {
		st, err := apis[i].Status(context.Background())
		if err != nil || st.Cluster == nil || st.Cluster.PermitHeld {
			t.Errorf("%s: status after the rollout: err %v, cluster %+v (want a cluster section, permit free)", h.ip, err, st.Cluster)
		}
	}
	if out := hostCLI(t, hosts[len(hosts)-1], "status"); !strings.Contains(out, "permit: none") {
		t.Errorf("status after the rollout lacks permit: none:\n%s", out)
	}
	if len(holders) == 0 {
		t.Error("no permit holder observed during the rollout")
	}
	ok, failed := w.verify(t, h1.coordURL, "during the rollout")
	return took, ok + failed
}

// dbnodeDown: the node does not serve — stopping, starting, or running but
// not bootstrapped yet. A node waiting for the permit still serves.
func dbnodeDown(db agent.Status) bool {
	return !db.Healthy || (db.State != agent.StateRunning && db.State != agent.StateWaiting)
}

// confirmDown re-checks a sighting of several m3dbnodes down at once. The
// hosts are asked one after another, so a node that became healthy a few
// milliseconds before the next host stopped its own can look down together
// with it. It asks the hosts seen down again, in reverse order, and returns
// how many are down in that second look and their lines: a real overlap
// (a restart takes over a second) is seen twice.
func confirmDown(ctx context.Context, apis []*api.Client, hosts []*hostNode, seen []int) (int, string) {
	down, line := 0, ""
	for j := len(seen) - 1; j >= 0; j-- {
		i := seen[j]
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := apis[i].Status(sctx)
		cancel()
		if err != nil {
			continue
		}
		if db := compOf(st, "m3dbnode"); dbnodeDown(db) {
			down++
			line += hosts[i].ip + ": " + compLine(db) + "; "
		}
	}
	return down, line
}
