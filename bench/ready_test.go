package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

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

// readySample is one timed start, in seconds from its start.
type readySample struct {
	ready     float64 // m3sup: first /readyz 200; baseline: namespace ready = true
	setup     float64 // placement and namespace created (M3 can start bootstrapping)
	dbStart   float64 // m3dbnode's first log line
	available float64 // m3dbnode marked its shards AVAILABLE (M3's own tick; see BENCHMARKS.md)
	tail      float64 // ready - available: noticing AVAILABLE, marking ready, answering
	note      string
}

// dbnodeTimes reads, from an m3dbnode JSON log, when its first line and its
// "marked shards as available" line were written (seconds from start, -1
// when absent).
func dbnodeTimes(path string, start time.Time) (first, available float64) {
	first, available = -1, -1
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		var l struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.TS == 0 {
			continue
		}
		sec, frac := math.Modf(l.TS)
		at := time.Unix(int64(sec), int64(frac*1e9)).Sub(start).Seconds()
		if first < 0 {
			first = at
		}
		if available < 0 && strings.HasPrefix(l.Msg, "cluster db successfully marked shards as available") {
			available = at
		}
	}
	return
}

// rounds is how many m3sup/baseline pairs BenchmarkTimeToReady runs:
// $M3SUP_BENCH_ROUNDS, default 5.
func rounds() int {
	if n, err := strconv.Atoi(os.Getenv("M3SUP_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// BenchmarkTimeToReady: m3sup from an empty data dir (warm artifact cache)
// to its first /readyz 200, and the baseline (plain etcd + the same M3
// binaries as processes + the guide's API steps) to namespace ready = true.
// Both poll every 50 ms.
//
// It runs $M3SUP_BENCH_ROUNDS (default 5) rounds, each one m3sup/ and one
// baseline/ sub-benchmark, alternating which goes first, so that load and
// noise hit both alike (go test's -count would repeat each sub-benchmark
// back to back instead). Go names the repeats m3sup#01, baseline#01, ….
// Run it with -benchtime 1x: each sub-benchmark iteration is one start.
// The final ratio/ sub-benchmark reports m3sup/baseline over all rounds
// (each start's breakdown is in its own sub-benchmark's log).
func BenchmarkTimeToReady(b *testing.B) {
	needE2E(b)
	f := setup(b)
	var mine, base []readySample

	runM3sup := func(b *testing.B) {
		var got []readySample
		for b.Loop() {
			b.StopTimer()
			n := newM3supNode(b, f)
			b.StartTimer()
			n.start(b, f)
			took := n.waitReady(b, 5*time.Minute)
			b.StopTimer()
			_, _ = n.recordPIDs()
			s := readySample{ready: took.Seconds(), setup: -1}
			s.dbStart, s.available = dbnodeTimes(filepath.Join(n.dataDir, "components", "m3dbnode", "logs", "m3dbnode.log"), n.started)
			line := []string{fmt.Sprintf("m3sup ready %.2fs", s.ready)}
			if evs, err := readM3supLog(n.logFile); err == nil {
				for _, m := range m3supMilestones {
					if d := milestone(evs, n.started, m.prefixes...); d >= 0 {
						line = append(line, fmt.Sprintf("%s %.2fs", m.name, d.Seconds()))
						if m.name == "shards-bootstrap" {
							s.setup = d.Seconds()
						}
					}
				}
			} else {
				line = append(line, "log: "+err.Error())
			}
			line = append(line, fmt.Sprintf("[m3dbnode: first log %.2fs, shards AVAILABLE %.2fs]", s.dbStart, s.available))
			s.note = strings.Join(line, ", ")
			n.stop(b)
			got = append(got, s)
			b.StartTimer()
		}
		reportSamples(b, got)
		mine = append(mine, got...)
	}

	runBase := func(b *testing.B) {
		var got []readySample
		for b.Loop() {
			b.StopTimer()
			bl := &baseline{}
			b.StartTimer()
			t := runBaseline(b, f, bl)
			b.StopTimer()
			s := readySample{ready: t.ready.Seconds(), setup: t.namespace.Seconds()}
			s.dbStart, s.available = dbnodeTimes(bl.dbnode.log, bl.started)
			s.note = fmt.Sprintf("baseline: %s [m3dbnode: first log %.2fs, shards AVAILABLE %.2fs]", t, s.dbStart, s.available)
			bl.stop(b)
			got = append(got, s)
			b.StartTimer()
		}
		reportSamples(b, got)
		base = append(base, got...)
	}

	for r := range rounds() {
		if r%2 == 0 {
			b.Run("m3sup", runM3sup)
			b.Run("baseline", runBase)
		} else {
			b.Run("baseline", runBase)
			b.Run("m3sup", runM3sup)
		}
	}
	if len(mine) == 0 || len(base) == 0 {
		return
	}

	b.Run("ratio", func(b *testing.B) {
		for b.Loop() {
		}
		col := func(ss []readySample, f func(readySample) float64) []float64 {
			var out []float64
			for _, s := range ss {
				if v := f(s); v >= 0 {
					out = append(out, v)
				}
			}
			return out
		}
		ready := func(s readySample) float64 { return s.ready }
		setupT := func(s readySample) float64 { return s.setup }
		tail := func(s readySample) float64 { return s.tail }
		var paired []float64
		for i := range min(len(mine), len(base)) {
			paired = append(paired, mine[i].ready/base[i].ready)
		}
		rm, rb := median(col(mine, ready)), median(col(base, ready))
		b.ReportMetric(rm/rb, "m3sup/baseline")
		b.ReportMetric(median(paired), "paired-m3sup/baseline")
		b.ReportMetric(median(col(mine, setupT))-median(col(base, setupT)), "Δs/setup")
		b.ReportMetric(median(col(mine, tail))-median(col(base, tail)), "Δs/tail")
		b.Logf("ready s: m3sup %s (median %.2f) / baseline %s (median %.2f) = %.3f; paired ratios %s (median %.3f); target ≤ 1.1, goal ≤ 1.0",
			fmtList(col(mine, ready)), rm, fmtList(col(base, ready)), rb, rm/rb, fmtList(paired), median(paired))
	})
}

// reportSamples reports the medians of one sub-benchmark's starts.
func reportSamples(b *testing.B, ss []readySample) {
	var ready, setup, avail, tail []float64
	for i := range ss {
		s := &ss[i]
		s.tail = -1
		if s.available >= 0 {
			s.tail = s.ready - s.available
			avail = append(avail, s.available)
			tail = append(tail, s.tail)
		}
		ready = append(ready, s.ready)
		if s.setup >= 0 {
			setup = append(setup, s.setup)
		}
		b.Log(s.note)
	}
	b.ReportMetric(median(ready), "s/ready")
	if len(setup) > 0 {
		b.ReportMetric(median(setup), "s/setup")
	}
	if len(avail) > 0 {
		b.ReportMetric(median(avail), "s/available")
		b.ReportMetric(median(tail), "s/tail")
	}
}

func fmtList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// BenchmarkCPUGuard: does the CPU-core guard (m3dbnode sees one processor,
// so M3 keeps one insert queue instead of one per core) change the time to
// ready? m3sup starts with dbnode.cpuCoreGuard on and off in alternating
// pairs, each from an empty data dir with a warm cache, timed to the first
// /readyz 200. With no writes, an unguarded m3dbnode starts on any CPU
// (M3's defect bites on the first insert of a new series), so off is a
// fair arm here. The ratio/ sub-benchmark reports on/off over all rounds.
func BenchmarkCPUGuard(b *testing.B) {
	needE2E(b)
	f := setup(b)
	times := map[string][]float64{}
	arm := func(mode string) func(*testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				n := newM3supNodeGuard(b, f, mode)
				b.StartTimer()
				n.start(b, f)
				took := n.waitReady(b, 5*time.Minute)
				b.StopTimer()
				st, _ := n.recordPIDs()
				if g := st.CPUCoreGuard; g == nil || g.Guard != (mode == "on") {
					b.Fatalf("guard %s: status says %+v", mode, g)
				}
				n.stop(b)
				times[mode] = append(times[mode], took.Seconds())
				b.ReportMetric(took.Seconds(), "s/ready")
				b.StartTimer()
			}
		}
	}
	for r := range rounds() {
		if r%2 == 0 {
			b.Run("on", arm("on"))
			b.Run("off", arm("off"))
		} else {
			b.Run("off", arm("off"))
			b.Run("on", arm("on"))
		}
	}
	on, off := times["on"], times["off"]
	if len(on) == 0 || len(off) == 0 {
		return
	}
	b.Run("ratio", func(b *testing.B) {
		for b.Loop() {
		}
		var paired []float64
		for i := range min(len(on), len(off)) {
			paired = append(paired, on[i]/off[i])
		}
		b.ReportMetric(median(on)/median(off), "on/off")
		b.ReportMetric(median(paired), "paired-on/off")
		b.Logf("ready s: guard on %s (median %.2f) / off %s (median %.2f) = %.3f; paired %s (median %.3f)",
			fmtList(on), median(on), fmtList(off), median(off), median(on)/median(off), fmtList(paired), median(paired))
	})
}
