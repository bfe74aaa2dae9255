package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// TestE2EGuardsAndReadiness runs a real, unpatched M3 v1.5.0 single node on
// this machine, whatever its CPU reports:
//
//	a. m3sup decides the CPU-core guard from its probe; m3dbnode takes
//	   2,000+ new series over 30+ s through the coordinator with no restart,
//	   and every series reads back;
//	b. SIGKILL of m3dbnode turns /readyz, status READY, m3sup_cluster_ready
//	   and systemd's STATUS= false within 2 s, naming m3dbnode, and true
//	   again once it has bootstrapped;
//	d. a hung (SIGSTOPped) m3dbnode is reported not ready at its first
//	   missed liveness probe, then killed and restarted with reason
//	   "unhealthy" once quiet for dbnode.unhealthyAfter (5s here), and the
//	   host is ready again; so is a hung m3coordinator (its default 10s).
//	   The same 5s never restarts m3dbnode while it bootstraps (from its
//	   first start to ready, 12-26 s here) or takes a (a): it answers
//	   /health all along; the test measures how fast it answers;
//	c. with the guard off on a host the probe distrusts, the first write of
//	   a new series kills m3dbnode (M3's defect), and status says so with
//	   the crash's own line (skipped where the probe trusts the CPU).
func TestE2EGuardsAndReadiness(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest})
	n.notify = listenNotify(t, filepath.Dir(n.dir))
	probe := cpucore.Probe()
	want := cpucore.Decide(cpucore.ModeAuto, probe)
	t.Logf("CPU-core probe on this machine: %s (probe %+v)", want, probe)
	setConfig(t, n.configFile, "  stopTimeout: 30s\n", "  stopTimeout: 30s\n  unhealthyAfter: 5s\n")
	health := watchNodeHealth(t, n.configFile)

	n.start()
	n.waitReady(4 * time.Minute)
	st := statusCLI(t, n.socket)
	g := st.CPUCoreGuard
	if g == nil || g.Guard != want.Guard || g.Mode != cpucore.ModeAuto {
		t.Fatalf("status cpuCoreGuard = %+v; the probe here decides %s", g, want)
	}
	dbPID := componentPID(t, st, "m3dbnode")
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/cpuinfo", dbPID)); err != nil {
		t.Fatalf("read m3dbnode's /proc/cpuinfo: %v", err)
	} else if n := cpucore.CountProcessors(b); want.Guard != (n == 1) {
		t.Fatalf("m3dbnode sees %d processors with the guard %v", n, want.Guard)
	}

	t.Run("a_new_series", func(t *testing.T) {
		const perSecond, seconds = 70, 31
		written := writeNewSeries(t, n.coordURL, "m3sup_e2e_series", perSecond, seconds)
		if written < 2000 {
			t.Fatalf("only %d new series written", written)
		}
		missing := unreadSeries(t, n.coordURL, "m3sup_e2e_series", written)
		if len(missing) > 0 {
			t.Fatalf("%d of %d series did not read back, e.g. %v", len(missing), written, missing[:min(5, len(missing))])
		}
		st := statusCLI(t, n.socket)
		db := componentOf(t, st, "m3dbnode")
		if db.Restarts != 0 || db.PID != dbPID || !st.Ready {
			t.Fatalf("m3dbnode after %d new series: restarts %d, pid %d (was %d), ready %v; last exit %+v", written, db.Restarts, db.PID, dbPID, st.Ready, db.LastExit)
		}
		t.Logf("%d new series over %d s, every one read back, m3dbnode never restarted", written, seconds)
		t.Log(health.stop()) // bootstrap and (a)'s load; (b) kills m3dbnode
	})

	t.Run("b_readiness_follows_m3dbnode", func(t *testing.T) {
		sent := len(n.notify.messages())
		if err := syscall.Kill(int(dbPID), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Within 2 s every view says not ready, naming m3dbnode.
		waitUntil(t, 2*time.Second, "/readyz 503, status degraded naming m3dbnode, m3sup_cluster_ready 0, STATUS=degraded", func() string {
			code, body := socketGet(n.socket, "/readyz")
			st, err := api.NewClient(n.socket).Status(context.Background())
			metrics := socketMetric(n.socket, "m3sup_cluster_ready")
			status := notifiedSince(n.notify, sent, "STATUS=degraded")
			if code == http.StatusServiceUnavailable && err == nil && !st.Ready && st.Readiness.Degraded &&
				st.Readiness.Component == "m3dbnode" && metrics == "0" && status != "" {
				t.Logf("not ready after %s: /readyz %q; %s", time.Since(killed).Round(time.Millisecond), strings.TrimSpace(body), status)
				return ""
			}
			return fmt.Sprintf("/readyz %d %q; status ready=%v %+v (%v); metric %q; notify %q", code, body, st.Ready, st.Readiness, err, metrics, status)
		})
		// Ready again once the new m3dbnode has bootstrapped.
		waitUntil(t, 3*time.Minute, "ready again", func() string {
			code, body := socketGet(n.socket, "/readyz")
			st, err := api.NewClient(n.socket).Status(context.Background())
			if code == http.StatusOK && err == nil && st.Ready && socketMetric(n.socket, "m3sup_cluster_ready") == "1" {
				db := componentOf(t, st, "m3dbnode")
				if !db.Healthy || db.PID == dbPID {
					t.Fatalf("ready while m3dbnode is %+v", db)
				}
				return ""
			}
			return fmt.Sprintf("/readyz %d %q; ready %v %+v", code, body, st.Ready, st.Readiness)
		})
		if notifiedSince(n.notify, sent, "STATUS=ready") == "" {
			t.Errorf("systemd STATUS= never went back to ready: %q", n.notify.messages()[sent:])
		}
		t.Logf("ready again %s after the kill", time.Since(killed).Round(time.Millisecond))
	})

	t.Run("d_hung_components_restarted", func(t *testing.T) {
		st := statusCLI(t, n.socket)
		if db := componentOf(t, st, "m3dbnode"); db.Restarts != 1 || db.LastReason != agent.ReasonCrash {
			t.Fatalf("m3dbnode restarted other than for the SIGKILL in (b) (a bootstrap or a write load judged unhealthy?): %+v", db)
		}
		for _, c := range []struct {
			name  string
			after time.Duration // unhealthyAfter
		}{{"m3dbnode", 5 * time.Second}, {"m3coordinator", 10 * time.Second}} {
			st := statusCLI(t, n.socket)
			comp := componentOf(t, st, c.name)
			pid := comp.PID
			if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			// Not ready at the first missed probe (every 2 s, 2 s each).
			waitUntil(t, 6*time.Second, c.name+" reported unhealthy, host not ready", func() string {
				code, _ := socketGet(n.socket, "/readyz")
				st, err := api.NewClient(n.socket).Status(context.Background())
				if err != nil {
					return err.Error()
				}
				cs, _ := findComponent(st, c.name)
				if code == http.StatusServiceUnavailable && !st.Ready && !cs.Healthy {
					return ""
				}
				return fmt.Sprintf("/readyz %d, ready %v, %s %+v", code, st.Ready, c.name, cs)
			})
			notReady := time.Since(stopped)
			var got agent.Status
			waitUntil(t, c.after+30*time.Second, c.name+" restarted with reason unhealthy", func() string {
				st, err := api.NewClient(n.socket).Status(context.Background())
				if err != nil {
					return err.Error()
				}
				got, _ = findComponent(st, c.name)
				if got.LastReason == agent.ReasonUnhealthy && got.Restarts == comp.Restarts+1 && got.PID != 0 && got.PID != pid {
					return ""
				}
				return fmt.Sprintf("%s %+v", c.name, got)
			})
			restarted := time.Since(stopped)
			if got.LastExit == nil || !strings.Contains(got.LastExit.Reason, "no answer to its health check") {
				t.Fatalf("%s's last exit %+v; want the unhealthy reason", c.name, got.LastExit)
			}
			if !strings.Contains(n.log(), c.name+" unhealthy: no answer to its health check") {
				t.Fatalf("no ERROR line for the unhealthy %s in m3sup's log", c.name)
			}
			n.waitReady(3 * time.Minute)
			t.Logf("%s SIGSTOPped: not ready after %s, restarted (unhealthy, quiet for %s) after %s, ready again after %s",
				c.name, notReady.Round(100*time.Millisecond), c.after, restarted.Round(100*time.Millisecond), time.Since(stopped).Round(100*time.Millisecond))
		}
	})

	t.Run("c_guard_off_crash_reason", func(t *testing.T) {
		if !want.Guard {
			t.Skipf("the probe trusts this CPU (%s): M3's per-core path is safe here, nothing to crash", want.Why)
		}
		if code := n.stop(90 * time.Second); code != 0 {
			t.Fatalf("m3sup exited %d", code)
		}
		b, err := os.ReadFile(n.configFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(string(b), "  stopTimeout: 30s\n", "  stopTimeout: 30s\n  cpuCoreGuard: \"off\"\n", 1)
		if err := os.WriteFile(n.configFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		// Unguarded, m3dbnode dies as soon as it inserts a series it has
		// not seen: replaying its commit log at bootstrap already does.
		n.start()
		c := &m3.Client{BaseURL: n.coordURL}
		var reason string
		waitUntil(t, 4*time.Minute, "m3dbnode crashed with a readable reason", func() string {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.WriteJSON(ctx, "m3sup_e2e_unguarded", map[string]string{"s": strconv.FormatInt(time.Now().UnixNano(), 10)}, time.Now(), 1)
			cancel()
			st, err := api.NewClient(n.socket).Status(context.Background())
			if err != nil {
				return err.Error()
			}
			if g := st.CPUCoreGuard; g == nil || g.Guard || g.Mode != cpucore.ModeOff {
				return fmt.Sprintf("cpuCoreGuard %+v; want off", g)
			}
			db, ok := findComponent(st, "m3dbnode")
			if !ok || db.LastExit == nil {
				return "no exit yet"
			}
			reason = db.LastExit.Reason
			if st.Ready || st.Readiness.Component != "m3dbnode" && db.State != agent.StateRunning {
				return fmt.Sprintf("m3dbnode exited (%s) but readiness says %+v", reason, st.Readiness)
			}
			if len(db.LastExit.LogTail) == 0 {
				return "no log tail in lastExit"
			}
			return ""
		})
		if !strings.Contains(reason, "panic: runtime error: index out of range") && !strings.HasPrefix(reason, "SIGILL") {
			t.Fatalf("m3dbnode's exit reason %q; want M3's per-core panic or SIGILL with its frame", reason)
		}
		if !strings.Contains(reason, " in ") {
			t.Fatalf("reason %q names no frame", reason)
		}
		if !strings.Contains(n.log(), "m3dbnode crashed: "+reason) {
			t.Fatalf("no ERROR line with the reason in m3sup's log:\n%s", n.log())
		}
		out, _ := runCLI(t, n.socket, "status")
		if !strings.Contains(out, reason) {
			t.Fatalf("status table lacks %q:\n%s", reason, out)
		}
		t.Logf("unguarded m3dbnode on this machine: %s", reason)
	})
}

func componentOf(t testing.TB, st api.Status, name string) agent.Status {
	t.Helper()
	c, ok := findComponent(st, name)
	if !ok {
		t.Fatalf("no component %s in %+v", name, st.Components)
	}
	return c
}

func findComponent(st api.Status, name string) (agent.Status, bool) {
	for _, c := range st.Components {
		if c.Name == name {
			return c, true
		}
	}
	return agent.Status{}, false
}

func componentPID(t testing.TB, st api.Status, name string) uint32 {
	t.Helper()
	pid := componentOf(t, st, name).PID
	if pid == 0 {
		t.Fatalf("%s has no pid: %+v", name, st.Components)
	}
	return pid
}

// waitUntil polls check every 50 ms until it returns "" or limit passes,
// then fails with check's last answer.
func waitUntil(t testing.TB, limit time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ""
	for {
		if last = check(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s; last: %s", limit, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// socketGet GETs path from the daemon's unix socket.
func socketGet(socket, path string) (int, string) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	resp, err := hc.Get("http://m3sup" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b)
}

// socketMetric is one unlabelled metric's value from the daemon's /metrics.
func socketMetric(socket, name string) string {
	_, body := socketGet(socket, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// notifiedSince is the first sd_notify message from index from on that
// starts with prefix.
func notifiedSince(ns *notifySocket, from int, prefix string) string {
	msgs := ns.messages()
	for _, m := range msgs[min(from, len(msgs)):] {
		if strings.HasPrefix(m, prefix) {
			return m
		}
	}
	return ""
}

// writeNewSeries writes perSecond new series (metric{series="i"}) every
// second for seconds, through the coordinator, and fails on any write error.
func writeNewSeries(t testing.TB, coordURL, metric string, perSecond, seconds int) int {
	t.Helper()
	c := &m3.Client{BaseURL: coordURL}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	next := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for s := 0; s < seconds; s++ {
		batch := make([]int, perSecond)
		for i := range batch {
			batch[i] = next
			next++
		}
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(part []int) {
				defer wg.Done()
				for _, i := range part {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := c.WriteJSON(ctx, metric, map[string]string{"series": strconv.Itoa(i)}, time.Now(), float64(i))
					cancel()
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("series %d: %w", i, err))
						mu.Unlock()
					}
				}
			}(batch[w*len(batch)/4 : (w+1)*len(batch)/4])
		}
		<-tick.C
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d writes failed, first: %v", len(errs), next, errs[0])
	}
	return next
}

// unreadSeries returns the series of 0..n-1 that a query does not return
// with their value, retrying for a minute.
func unreadSeries(t testing.TB, coordURL, metric string, n int) []int {
	t.Helper()
	c := &m3.Client{BaseURL: coordURL}
	var missing []int
	for deadline := time.Now().Add(time.Minute); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := c.QueryRange(ctx, metric, time.Now().Add(-5*time.Minute), time.Now(), 10*time.Second)
		cancel()
		missing = missing[:0]
		if err == nil {
			seen := make(map[int]bool, len(res.Series))
			for _, s := range res.Series {
				i, err := strconv.Atoi(s.Metric["series"])
				if err == nil && hasValue(m3.QueryResult{Series: []m3.Series{s}}, float64(i)) {
					seen[i] = true
				}
			}
			for i := 0; i < n; i++ {
				if !seen[i] {
					missing = append(missing, i)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("query %s: %v", metric, err)
			}
			return missing
		}
		time.Sleep(time.Second)
	}
}

// setConfig replaces old with new in a node's config file.
func setConfig(t testing.TB, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", file, old)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// healthWatch asks a node's m3dbnode /health every 250 ms, as m3sup's
// liveness probe does, and keeps how fast it answered: what
// dbnode.unhealthyAfter's default is chosen from.
type healthWatch struct {
	stopCh chan struct{}
	done   chan string
}

// watchNodeHealth starts a healthWatch on the node whose config is file.
func watchNodeHealth(t testing.TB, file string) *healthWatch {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var url string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "httpNodeListenAddress: "); ok {
			url = "http://" + v
		}
	}
	if url == "" {
		t.Fatalf("no httpNodeListenAddress in %s", file)
	}
	w := &healthWatch{stopCh: make(chan struct{}), done: make(chan string, 1)}
	go func() {
		var (
			answers, misses, bootstrapping int
			slowest, longestGap            time.Duration
			lastAnswer                     time.Time
		)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stopCh:
				w.done <- fmt.Sprintf("m3dbnode /health asked every 250ms from its first answer on: %d answers (%d while bootstrapping), %d misses, slowest answer %s, longest gap between answers %s",
					answers, bootstrapping, misses, slowest.Round(time.Millisecond), longestGap.Round(time.Millisecond))
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			start := time.Now()
			h, err := m3.NodeHealth(ctx, nil, url)
			took := time.Since(start)
			cancel()
			if err != nil {
				if !lastAnswer.IsZero() {
					misses++
				}
				continue
			}
			if !lastAnswer.IsZero() {
				longestGap = max(longestGap, time.Since(lastAnswer))
			}
			lastAnswer = time.Now()
			answers++
			if !h.Bootstrapped {
				bootstrapping++
			}
			slowest = max(slowest, took)
		}
	}()
	t.Cleanup(func() { _ = w.stop() })
	return w
}

// stop ends the watch and returns what it measured (once).
func (w *healthWatch) stop() string {
	select {
	case <-w.stopCh:
		return ""
	default:
	}
	close(w.stopCh)
	return <-w.done
}
