package bench

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyRuns collects every timed iteration of the whole test binary, so the
// ratio sub-benchmark can also report the run's overall medians.
var readyRuns struct {
	sync.Mutex
	m3sup, baseline []float64
}

// m3supMilestones are the m3sup log lines (message prefixes) whose first
// appearance marks a step of the start, in order. Offsets are from the exec.
var m3supMilestones = []struct {
	name     string
	prefixes []string
}{
	{"process", []string{"m3sup starting"}},
	{"etcd", []string{"starting-runtime"}},
	{"containerd", []string{"container runtime ready"}},
	{"fetch", []string{"M3 release found in cache"}},
	{"components", []string{"starting: m3dbnode and m3coordinator"}},
	{"containers-started", []string{"started"}}, // the agent's line, once per component: the first
	{"coordinator", []string{"M3 placement", "bootstrapping: placement"}},
	{"namespaces", []string{"M3 namespaces", "bootstrapping: namespaces"}},
	{"shards-bootstrap", []string{"M3 bootstrapping", "bootstrapping: bootstrapping"}},
	{"marking-ready", []string{"M3 marking-ready", "bootstrapping: marking-ready"}},
	{"ready", []string{"ready: "}},
}

// BenchmarkTimeToReady: m3sup from an empty data dir (warm artifact cache)
// to its first /readyz 200, and the baseline (plain etcd + the same M3
// binaries as processes + the guide's API steps) to namespace ready = true.
// Both poll every 50 ms. The ratio sub-benchmark reports m3sup/baseline of
// the two medians just measured (and of every iteration so far in this
// process, for -count N, where the pairs alternate).
func BenchmarkTimeToReady(b *testing.B) {
	needE2E(b)
	f := setup(b)
	var mine, base []float64

	b.Run("m3sup", func(b *testing.B) {
		var got []float64
		steps := map[string][]float64{}
		for b.Loop() {
			b.StopTimer()
			n := newM3supNode(b, f)
			b.StartTimer()
			n.start(b, f)
			took := n.waitReady(b, 5*time.Minute)
			b.StopTimer()
			_, _ = n.recordPIDs()
			evs, logErr := readM3supLog(n.logFile)
			n.stop(b)
			got = append(got, took.Seconds())
			line := []string{fmt.Sprintf("m3sup ready %.2fs", took.Seconds())}
			if logErr == nil {
				for _, m := range m3supMilestones {
					if d := milestone(evs, n.started, m.prefixes...); d >= 0 {
						steps[m.name] = append(steps[m.name], d.Seconds())
						line = append(line, fmt.Sprintf("%s %.2fs", m.name, d.Seconds()))
					}
				}
			} else {
				b.Logf("m3sup log: %v", logErr)
			}
			b.Log(strings.Join(line, ", "))
			b.StartTimer()
		}
		b.ReportMetric(median(got), "s/ready")
		for _, k := range []string{"containerd", "coordinator", "shards-bootstrap", "marking-ready"} {
			if v, ok := steps[k]; ok {
				b.ReportMetric(median(v), "s/"+k)
			}
		}
		mine = got
	})

	b.Run("baseline", func(b *testing.B) {
		var got []float64
		var coord, boot []float64
		for b.Loop() {
			b.StopTimer()
			bl := &baseline{}
			b.StartTimer()
			t := runBaseline(b, f, bl)
			b.StopTimer()
			bl.stop(b)
			got = append(got, t.ready.Seconds())
			coord = append(coord, t.coordinator.Seconds())
			boot = append(boot, t.bootstrapped.Seconds())
			b.Logf("baseline: %s", t)
			b.StartTimer()
		}
		b.ReportMetric(median(got), "s/ready")
		b.ReportMetric(median(coord), "s/coordinator")
		b.ReportMetric(median(boot), "s/bootstrapped")
		base = got
	})

	if len(mine) == 0 || len(base) == 0 {
		return
	}
	readyRuns.Lock()
	readyRuns.m3sup = append(readyRuns.m3sup, mine...)
	readyRuns.baseline = append(readyRuns.baseline, base...)
	allMine, allBase := median(readyRuns.m3sup), median(readyRuns.baseline)
	nPairs := len(readyRuns.m3sup)
	readyRuns.Unlock()

	b.Run("ratio", func(b *testing.B) {
		for b.Loop() {
		}
		b.ReportMetric(median(mine)/median(base), "m3sup/baseline")
		b.ReportMetric(allMine/allBase, "m3sup/baseline-all")
		b.Logf("this pair: m3sup %.2fs / baseline %.2fs = %.3f; all %d so far: medians %.2fs / %.2fs = %.3f (target ≤ 1.1, goal ≤ 1.0)",
			median(mine), median(base), median(mine)/median(base), nPairs, allMine, allBase, allMine/allBase)
	})
}
