package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// Supervision benchmarks: how fast m3sup reacts to a crash, to a desired
// state change and to its own restart. Each benchmark starts ONE cluster
// (untimed) and runs every iteration against it; run them with a fixed
// iteration count, e.g.
//
//	M3SUP_E2E_RELEASE=$PWD/.cache/m3-release/m3_1.5.0_linux_amd64.tar.gz \
//	  go test ./bench -run '^$' -bench 'CrashToRunning|ApplyToRestart|Adoption' -benchtime 5x -timeout 30m
//
// Each reports its own medians with b.ReportMetric (ms/...); the ns/op
// figure is the timed part only and is not the interesting number.

// supPoll is the polling interval of these benchmarks (status, /proc, /health).
const supPoll = 5 * time.Millisecond

// supNamespace keeps these benchmarks' containers apart from other m3sup
// runs on the host (runc state lives under /run/containerd/runc/<ns>).
const supNamespace = "m3sup-bench-sup"

// supCluster starts one m3sup (warm cache) and waits until it is ready.
func supCluster(b *testing.B) (*fixture, *m3supNode) {
	b.Helper()
	needE2E(b)
	f := setup(b)
	n := newM3supNode(b, f)
	cfg, err := os.ReadFile(n.config)
	if err != nil {
		b.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("namespace: m3sup-bench\n"), []byte("namespace: "+supNamespace+"\n"), 1)
	if err := os.WriteFile(n.config, cfg, 0o600); err != nil {
		b.Fatal(err)
	}
	n.start(b, f)
	b.Cleanup(func() {
		_, _ = n.recordPIDs()
		n.stop(b)
	})
	took := n.waitReady(b, 5*time.Minute)
	b.Logf("cluster ready in %s", took.Round(100*time.Millisecond))
	if _, err := n.recordPIDs(); err != nil {
		b.Fatal(err)
	}
	return f, n
}

// supStatus is one status call through the unix socket; it also records
// the pids for cleanup.
func supStatus(n *m3supNode) (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.NewClient(n.socket).Status(ctx)
}

func supComp(st api.Status, name string) agent.Status {
	for _, c := range st.Components {
		if c.Name == name {
			return c
		}
	}
	return agent.Status{Name: name}
}

// supWait polls cond every supPoll until true; it fails b after timeout.
func supWait(b *testing.B, n *m3supNode, timeout time.Duration, what string, cond func() (bool, string)) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, desc := cond()
		if ok {
			return time.Now()
		}
		last = desc
		if n.proc.exited() {
			b.Fatalf("%s: m3sup exited (%v); log tail:\n%s", what, n.proc.err, n.proc.tail(30))
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(supPoll)
	}
}

// supWaitComp polls the status until cond holds for component name.
func supWaitComp(b *testing.B, n *m3supNode, name string, timeout time.Duration, what string, cond func(agent.Status) bool) (agent.Status, time.Time) {
	b.Helper()
	var got agent.Status
	at := supWait(b, n, timeout, what, func() (bool, string) {
		st, err := supStatus(n)
		if err != nil {
			return false, err.Error()
		}
		got = supComp(st, name)
		return cond(got), fmt.Sprintf("%+v", got)
	})
	return got, at
}

// supLogLine is one JSON line of m3sup's log with the fields used here.
type supLogLine struct {
	at        time.Time
	msg       string
	logger    string
	component string
	pid       uint32
}

func readSupLog(path string) []supLogLine {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []supLogLine
	for line := range strings.SplitSeq(string(data), "\n") {
		var l struct {
			TS        string `json:"ts"`
			Msg       string `json:"msg"`
			Logger    string `json:"logger"`
			Component string `json:"component"`
			PID       uint32 `json:"pid"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil {
			continue
		}
		out = append(out, supLogLine{at: at, msg: l.Msg, logger: l.Logger, component: l.Component, pid: l.PID})
	}
	return out
}

// firstLog is the first line at or after since whose message starts with
// prefix (and, when component is set, is about it); ok false when none.
func firstLog(lines []supLogLine, since time.Time, component, prefix string) (supLogLine, bool) {
	for _, l := range lines {
		// Log times have millisecond resolution: allow for the truncation.
		if l.at.Before(since.Add(-time.Millisecond)) {
			continue
		}
		if component != "" && l.component != component {
			continue
		}
		if strings.HasPrefix(l.msg, prefix) {
			return l, true
		}
	}
	return supLogLine{}, false
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtMs(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// reportAll reports the median of each series and logs every iteration.
func reportAll(b *testing.B, order []string, series map[string][]float64) {
	for _, k := range order {
		v, ok := series[k]
		if !ok || len(v) == 0 {
			continue
		}
		b.ReportMetric(median(v), "ms/"+k)
		b.Logf("%-22s median %7.1f ms  all %s", k, median(v), fmtMs(v))
	}
}

// statusLatency measures how long one status call takes (it reads etcd and
// M3 each time), which bounds the status-based figures' resolution.
func statusLatency(n *m3supNode) float64 {
	var xs []float64
	for range 20 {
		t := time.Now()
		_, _ = supStatus(n)
		xs = append(xs, ms(time.Since(t)))
	}
	return median(xs)
}

// healthAfter polls the coordinator's /health until it answers 200 from a
// process other than oldPID (it first waits for oldPID to be gone).
func healthAfter(coordURL string, oldPID uint32, timeout time.Duration) (time.Time, bool) {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	gone := false
	for time.Now().Before(deadline) {
		if !gone && !pidAlive(int(oldPID), "m3coordinator") {
			gone = true
		}
		if gone {
			resp, err := hc.Get(coordURL + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return time.Now(), true
				}
			}
		}
		time.Sleep(supPoll)
	}
	return time.Time{}, false
}

// resetCoordinator makes the coordinator's next crash a first crash: a
// planned (manual) restart starts a clean restart record. Untimed.
func resetCoordinator(b *testing.B, n *m3supNode) agent.Status {
	b.Helper()
	st, err := supStatus(n)
	if err != nil {
		b.Fatal(err)
	}
	old := supComp(st, "m3coordinator")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := api.NewClient(n.socket).Control(ctx, "m3coordinator", "restart"); err != nil {
		b.Fatal(err)
	}
	c, _ := supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator restarted (manual)", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.Healthy && c.PID != 0 && c.PID != old.PID
	})
	return c
}

// BenchmarkCrashToRunning: SIGKILL m3coordinator; time until the status
// shows a new running pid (polled every 5 ms), until the agent logged the
// exit and the start, and until the new coordinator's /health answers.
// Before each crash a manual restart resets the restart record, so every
// iteration measures a FIRST crash (the policy restarts it at once; a
// second crash within 60 s of running waits ~1 s — measured separately).
func BenchmarkCrashToRunning(b *testing.B) {
	_, n := supCluster(b)
	b.Logf("status call median latency %.1f ms", statusLatency(n))
	series := map[string][]float64{}
	for b.Loop() {
		b.StopTimer()
		co := resetCoordinator(b, n)
		db := supComp(mustStatus(b, n), "m3dbnode")
		b.StartTimer()

		t0 := time.Now()
		if err := syscall.Kill(int(co.PID), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		healthCh := make(chan time.Time, 1)
		go func() {
			at, _ := healthAfter(n.coordURL, co.PID, time.Minute)
			healthCh <- at
		}()
		got, running := supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator running again", func(c agent.Status) bool {
			return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID
		})
		healthAt := <-healthCh
		b.StopTimer()

		series["running"] = append(series["running"], ms(running.Sub(t0)))
		if !healthAt.IsZero() {
			series["health"] = append(series["health"], ms(healthAt.Sub(t0)))
		}
		lines := readSupLog(n.logFile)
		if l, ok := firstLog(lines, t0, "m3coordinator", "m3coordinator exited"); ok {
			series["exit-seen-log"] = append(series["exit-seen-log"], ms(l.at.Sub(t0)))
		}
		if l, ok := firstLog(lines, t0, "m3coordinator", "started"); ok {
			series["started-log"] = append(series["started-log"], ms(l.at.Sub(t0)))
		}
		if got.LastReason != agent.ReasonCrash {
			b.Errorf("reason %q, want crash", got.LastReason)
		}
		if d := supComp(mustStatus(b, n), "m3dbnode"); d.PID != db.PID {
			b.Errorf("m3dbnode pid changed %d → %d", db.PID, d.PID)
		}

		// A second crash right away: the policy's backoff (1 s ± 20%).
		supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator healthy", func(c agent.Status) bool { return c.Healthy })
		t1 := time.Now()
		if err := syscall.Kill(int(got.PID), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		_, again := supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator running after a second crash", func(c agent.Status) bool {
			return c.State == agent.StateRunning && c.PID != 0 && c.PID != got.PID
		})
		series["second-crash-running"] = append(series["second-crash-running"], ms(again.Sub(t1)))
		supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator healthy", func(c agent.Status) bool { return c.Healthy })
		b.StartTimer()
	}
	b.StopTimer()
	reportAll(b, []string{"running", "exit-seen-log", "started-log", "health", "second-crash-running"}, series)
}

func mustStatus(b *testing.B, n *m3supNode) api.Status {
	b.Helper()
	st, err := supStatus(n)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkApplyToRestart: apply a coordinator-only change (logLevel
// info ↔ warn) and time, from the apply call's return, the status showing
// the restart (stopping or a new pid), the old pid's disappearance from
// /proc, the new pid running and the new coordinator healthy. The
// m3dbnode must not restart.
func BenchmarkApplyToRestart(b *testing.B) {
	_, n := supCluster(b)
	c := api.NewClient(n.socket)
	series := map[string][]float64{}
	for b.Loop() {
		b.StopTimer()
		st := mustStatus(b, n)
		co, db := supComp(st, "m3coordinator"), supComp(st, "m3dbnode")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		doc, err := c.Cluster(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if doc.Spec.Coordinator.LogLevel == "warn" {
			doc.Spec.Coordinator.LogLevel = "info"
		} else {
			doc.Spec.Coordinator.LogLevel = "warn"
		}
		b.StartTimer()

		t := time.Now()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		res, err := c.ApplyCluster(ctx, doc, false)
		cancel()
		t0 := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		goneCh := make(chan time.Time, 1)
		go func() {
			for time.Since(t0) < time.Minute {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", co.PID)); err != nil {
					goneCh <- time.Now()
					return
				}
				time.Sleep(supPoll)
			}
			goneCh <- time.Time{}
		}()
		var seen time.Time
		got, running := supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator restarted for the change", func(c agent.Status) bool {
			if seen.IsZero() && (c.State == agent.StateStopping || c.State == agent.StateStarting || (c.PID != 0 && c.PID != co.PID)) {
				seen = time.Now()
			}
			return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID
		})
		gone := <-goneCh
		b.StopTimer()

		series["apply-call"] = append(series["apply-call"], ms(t0.Sub(t)))
		series["status-restarting"] = append(series["status-restarting"], ms(seen.Sub(t0)))
		if !gone.IsZero() {
			series["old-pid-gone"] = append(series["old-pid-gone"], ms(gone.Sub(t0)))
		}
		series["new-pid-running"] = append(series["new-pid-running"], ms(running.Sub(t0)))
		if got.LastReason != agent.ReasonSpec {
			b.Errorf("reason %q, want spec-change", got.LastReason)
		}
		_, healthy := supWaitComp(b, n, "m3coordinator", time.Minute, "coordinator healthy", func(c agent.Status) bool { return c.Healthy })
		series["healthy"] = append(series["healthy"], ms(healthy.Sub(t0)))
		lines := readSupLog(n.logFile)
		if l, ok := firstLog(lines, t, "m3coordinator", "planned restart"); ok {
			series["planned-log"] = append(series["planned-log"], ms(l.at.Sub(t0)))
		}
		if l, ok := firstLog(lines, t, "m3coordinator", "stopped"); ok {
			series["stopped-log"] = append(series["stopped-log"], ms(l.at.Sub(t0)))
		}
		if l, ok := firstLog(lines, t, "m3coordinator", "started"); ok {
			series["started-log"] = append(series["started-log"], ms(l.at.Sub(t0)))
		}
		if d := supComp(mustStatus(b, n), "m3dbnode"); d.PID != db.PID || d.Restarts != db.Restarts {
			b.Errorf("m3dbnode restarted: pid %d → %d, restarts %d → %d", db.PID, d.PID, db.Restarts, d.Restarts)
		}
		if len(res.Restarts) != 1 || !strings.HasPrefix(res.Restarts[0], "m3coordinator") {
			b.Errorf("apply predicted restarts %v, want only m3coordinator", res.Restarts)
		}
		b.StartTimer()
	}
	b.StopTimer()
	reportAll(b, []string{"apply-call", "planned-log", "status-restarting", "stopped-log", "old-pid-gone", "started-log", "new-pid-running", "healthy"}, series)
}

// BenchmarkAdoption: SIGKILL m3sup, start it again and time until the status
// shows both components adopted with the same pids, and until /readyz; the
// m3sup log says where the time goes.
func BenchmarkAdoption(b *testing.B) {
	f, n := supCluster(b)
	series := map[string][]float64{}
	steps := []struct{ name, component, prefix string }{
		{"log-process", "", "m3sup starting"},
		{"log-etcd-up", "", "starting-runtime"},
		{"log-containerd-up", "", "container runtime ready"},
		{"log-release-checked", "", "M3 release found in cache"},
		{"log-agent-start", "", "starting: m3dbnode and m3coordinator"},
		{"log-adopted-dbnode", "m3dbnode", "adopted running container"},
		{"log-adopted-coord", "m3coordinator", "adopted running container"},
		{"log-ready", "", "ready: "},
	}
	for b.Loop() {
		b.StopTimer()
		st := mustStatus(b, n)
		db, co := supComp(st, "m3dbnode"), supComp(st, "m3coordinator")
		oldCtd := st.Containerd.PID
		b.StartTimer()

		if err := n.proc.cmd.Process.Kill(); err != nil {
			b.Fatal(err)
		}
		<-n.proc.done
		killed := time.Now()
		n.start(b, f)
		t0 := n.started
		// Side probe: when does the (adopted) coordinator answer a placement
		// read again? It needs the new embedded etcd.
		placementCh := make(chan time.Time, 1)
		go func() {
			c := &m3.Client{BaseURL: n.coordURL}
			for time.Since(t0) < time.Minute {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _, err := c.Placement(ctx)
				cancel()
				if err == nil {
					placementCh <- time.Now()
					return
				}
				time.Sleep(supPoll)
			}
			placementCh <- time.Time{}
		}()
		var adoptedSt api.Status
		var firstAnswer time.Time
		var slowest time.Duration
		adopted := supWait(b, n, time.Minute, "both components adopted", func() (bool, string) {
			callStart := time.Now()
			st, err := supStatus(n)
			if err != nil {
				return false, err.Error()
			}
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			}
			slowest = max(slowest, time.Since(callStart))
			adoptedSt = st
			a, c := supComp(st, "m3dbnode"), supComp(st, "m3coordinator")
			return a.Adopted && c.Adopted && a.PID == db.PID && c.PID == co.PID, fmt.Sprintf("%+v %+v", a, c)
		})
		ready := n.waitReady(b, 5*time.Minute) // polls /readyz every 50 ms
		b.StopTimer()

		series["adopted"] = append(series["adopted"], ms(adopted.Sub(t0)))
		series["status-first-answer"] = append(series["status-first-answer"], ms(firstAnswer.Sub(t0)))
		series["status-slowest-call"] = append(series["status-slowest-call"], ms(slowest))
		if at := <-placementCh; !at.IsZero() {
			series["coord-placement-get-ok"] = append(series["coord-placement-get-ok"], ms(at.Sub(t0)))
		}
		series["readyz"] = append(series["readyz"], ms(ready))
		lines := readSupLog(n.logFile)
		for _, s := range steps {
			if l, ok := firstLog(lines, t0, s.component, s.prefix); ok {
				series[s.name] = append(series[s.name], ms(l.at.Sub(t0)))
			}
		}
		if _, ok := firstLog(lines, t0, "", "stopping a containerd left by an earlier m3sup"); ok {
			series["stale-containerd-stopped"] = append(series["stale-containerd-stopped"], 1)
		}
		st2 := adoptedSt
		for _, c := range st2.Components {
			if c.Restarts != 0 || (c.Name == "m3dbnode" && c.PID != db.PID) || (c.Name == "m3coordinator" && c.PID != co.PID) {
				b.Errorf("M3 restarted across the m3sup restart: %+v", c)
			}
		}
		if pidAlive(oldCtd, "containerd") && st2.Containerd.PID != oldCtd {
			b.Errorf("the killed m3sup's containerd (pid %d) still runs", oldCtd)
		}
		_, _ = n.recordPIDs()
		b.Logf("killed→exec %.1f ms", ms(t0.Sub(killed)))
		b.StartTimer()
	}
	b.StopTimer()
	order := []string{"adopted", "readyz", "status-first-answer", "status-slowest-call", "coord-placement-get-ok"}
	for _, s := range steps {
		order = append(order, s.name)
	}
	reportAll(b, order, series)
	if v := series["stale-containerd-stopped"]; len(v) > 0 {
		b.Logf("the new m3sup had to stop the old containerd in %d iteration(s)", len(v))
	}
}
