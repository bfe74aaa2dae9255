package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
)

// BenchmarkThreeHosts measures the multi-host figures on three hosts
// (127.0.0.2–4, RF 3, 16 shards), each iteration a fresh cluster:
//
//   - ready-s: from the first `m3sup run` to all three hosts ready (joins,
//     etcd promotions, placement init, bootstrap, namespaces ready);
//   - single-restart-s: one host's `m3sup restart m3dbnode` to its node
//     bootstrapped again with the restart permit released, summed over the
//     three hosts (what three careful manual restarts cost);
//   - rollout-s: a dbnode-only `m3sup apply` to every node restarted and the
//     permit released (one host at a time);
//   - rollout/3x-single: the ratio of the two, measured in the same run
//     (target ≤ 1.2);
//   - write-failures: majority writes (one every 200 ms through host 1) that
//     failed during the single restarts and the rollout (target 0).
//
// It is not part of `make test` (benchmarks run only with -bench); `make
// bench` runs it once.
func BenchmarkThreeHosts(b *testing.B) {
	env := needE2E(b)
	rs := serveRelease(b, env.tarball)
	sum := "sha256:" + env.digest
	for b.Loop() {
		start := time.Now()
		h1 := newHostNode(b, "host1", "127.0.0.2", true, rs.url, sum)
		h1.start()
		tok := h1.createToken(b, 2*time.Minute, "--voter", "--uses", "2")
		tokFile := filepath.Join(b.TempDir(), "token")
		if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		cli := h1.tlsEtcd(b)
		h2 := newHostNode(b, "host2", "127.0.0.3", false, rs.url, sum)
		h2.start("--join", h1.joinURL, "--token-file", tokFile)
		waitVoters(b, cli, 2, 2*time.Minute, h1, h2)
		h3 := newHostNode(b, "host3", "127.0.0.4", false, rs.url, sum)
		h3.start("--join", h1.joinURL, "--token-file", tokFile)
		hosts := []*hostNode{h1, h2, h3}
		for _, h := range hosts {
			h.waitReady(8 * time.Minute)
		}
		ready := time.Since(start)
		b.Logf("three hosts ready %s after the first m3sup run", ready.Round(100*time.Millisecond))

		w := startPointWriter(h1.coordURL, "m3sup_bench_single_restarts")
		var single time.Duration
		for _, h := range hosts {
			d := restartDBNode(b, cli, h)
			b.Logf("%s: m3dbnode restart → bootstrapped, permit released: %s", h.ip, d.Round(100*time.Millisecond))
			single += d
		}
		w.finish()
		singleOK, singleFailed := w.counts()

		rollout, rollWrites := rollDBNodes(b, cli, hosts...)
		ratio := rollout.Seconds() / single.Seconds()
		b.Logf("rollout %s vs 3 single restarts %s: ratio %.2f; writes: %d during single restarts (%d failed), %d during the rollout",
			rollout.Round(100*time.Millisecond), single.Round(100*time.Millisecond), ratio, singleOK+singleFailed, singleFailed, rollWrites)

		b.ReportMetric(ready.Seconds(), "ready-s")
		b.ReportMetric(single.Seconds(), "single-restart-s")
		b.ReportMetric(rollout.Seconds(), "rollout-s")
		b.ReportMetric(ratio, "rollout/3x-single")
		b.ReportMetric(float64(singleFailed), "write-failures")

		// The hand-over, from the hosts' own logs: when each took and
		// released the permit and when its m3dbnode stopped, started and
		// was healthy again.
		for _, h := range hosts {
			var lines []string
			for _, l := range strings.Split(h.log(), "\n") {
				for _, k := range []string{"restart permit", "agent planned restart", "agent started", "agent healthy", "agent stopped"} {
					if strings.Contains(l, k) {
						lines = append(lines, l)
						break
					}
				}
			}
			b.Logf("%s timeline:\n%s", h.ip, strings.Join(lines, "\n"))
		}
		stopHosts(b, h3, h2, h1)
	}
}

// restartDBNode runs `m3sup restart m3dbnode` on h and returns how long it
// took until that node ran again, bootstrapped, with the restart permit
// released (so every shard is AVAILABLE again).
func restartDBNode(t testing.TB, cli *clientv3.Client, h *hostNode) time.Duration {
	t.Helper()
	c := api.NewClient(h.socket)
	before := compOf(h.waitReady(time.Minute), "m3dbnode")
	start := time.Now()
	hostCLI(t, h, "restart", "m3dbnode")
	deadline := start.Add(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Status(ctx)
		var held bool
		if err == nil {
			_, held, err = cluster.PermitHolder(ctx, cli)
		}
		cancel()
		db := compOf(st, "m3dbnode")
		if err == nil && !held && db.PID != 0 && db.PID != before.PID && db.State == agent.StateRunning && db.Healthy {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: m3dbnode not restarted and settled 5 min after `m3sup restart` (err %v): %s", h.ip, err, compLine(db))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
