package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// faults is the shared state of TestFaults' ordered steps.
type faults struct {
	n   *node
	api *api.Client
	// the point readBack checks: the last one writePoint wrote.
	metric string
	ts     time.Time
	value  float64
	// every point writePoint wrote, each read back again after the adoption
	points []faultPoint
	// a cluster doc that an apply has since made stale
	stale api.ClusterDoc
}

type faultPoint struct {
	metric string
	ts     time.Time
	value  float64
}

// TestFaults brings up one real single-node cluster and injects faults
// into it in order: a SIGKILLed m3dbnode, a SIGKILLed managed containerd,
// desired-state changes (coordinator-only, retention-only, stale, invalid,
// a config that makes m3dbnode crash-loop and its fix), operator controls
// and finally a SIGKILLed m3sup whose successor adopts the containers. A
// failed step skips the rest: they rely on the cluster it leaves.
func TestFaults(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	var n *node
	// Registered first, so it runs after the node's own cleanup: a shim
	// whose containerd died with a failed test would outlive everything.
	t.Cleanup(func() {
		if n == nil {
			return
		}
		for _, pid := range shimPIDs(filepath.Dir(n.socket)) {
			t.Logf("killing leftover containerd shim %d", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	n = newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest, numShards: 8})
	started := time.Now()
	n.start()
	n.waitReady(4 * time.Minute)
	t.Logf("cluster ready in %s", time.Since(started).Round(100*time.Millisecond))
	f := &faults{n: n, api: api.NewClient(n.socket)}
	f.status(t) // record the pids for cleanup

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"a_sigkill_dbnode", f.sigkillDBNode},
		{"b_sigkill_containerd", f.sigkillContainerd},
		{"c_apply_coordinator_only", f.applyCoordinatorOnly},
		{"d_apply_retention", f.applyRetention},
		{"e_apply_refused", f.applyRefused},
		{"f_crash_loop", f.crashLoop},
		{"g_controls_and_logs", f.controls},
		{"h_sigkill_m3sup_adopts", f.sigkillM3sup},
		{"i_sigterm_stops_everything", f.sigterm},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			// The node's helpers fail through n.t: make that this subtest.
			n.t = t
			s.fn(t)
		})
		n.t = t
		if !ok {
			t.Fatalf("step %s failed; skipping the rest", s.name)
		}
	}
}

// --- helpers ---------------------------------------------------------------

// writePoint writes a fresh point (5 s old) through the coordinator, reads
// it back, and makes it the one readBack checks.
//
// Each step that restarts m3dbnode writes its own point first: what m3sup
// owes is that a point acknowledged before a stop or a crash survives that
// restart (SIGTERM with time to close the commit log; M3 flushes it every
// second before a SIGKILL). A point that has gone through several restarts
// is M3's business: M3 v1.5 was seen here to lose a point it had recovered
// from the commit log after a crash once a later snapshot and commit-log
// cleanup ran, before the next restart.
func (f *faults) writePoint(t *testing.T, metric string, v float64) {
	t.Helper()
	f.metric, f.ts, f.value = metric, time.Now().Add(-5*time.Second).Truncate(time.Second), v
	writeAndRead(t, f.n.coordURL, f.metric, f.ts, f.value)
	f.points = append(f.points, faultPoint{f.metric, f.ts, f.value})
}

// readBack reads the last written point back; when it cannot, it shows
// what m3dbnode logged about bootstrapping, snapshots and commit logs,
// which is where a lost point would be explained.
func (f *faults) readBack(t *testing.T, when string) {
	t.Helper()
	err := tryReadBack(f.n.coordURL, f.metric, f.ts, f.value, 60*time.Second)
	if err == nil {
		return
	}
	t.Logf("m3dbnode log lines about bootstrap, snapshots and commit logs:\n%s", m3dbnodeLogLines(f.n))
	t.Fatalf("%s: %v", when, err)
}

// shimPIDs lists the containerd shims serving a containerd whose socket is
// under dir (their command line names its -address).
func shimPIDs(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) {
			continue
		}
		if bytes.Contains(b, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (f *faults) tryStatus() (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.api.Status(ctx)
	if err == nil {
		for _, c := range st.Components {
			if c.PID > 0 {
				f.n.pids[c.Name] = c.PID
			}
		}
		if st.Containerd.PID > 0 {
			f.n.pids["containerd"] = uint32(st.Containerd.PID)
		}
	}
	return st, err
}

func (f *faults) status(t *testing.T) api.Status {
	t.Helper()
	st, err := f.tryStatus()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func compOf(st api.Status, name string) agent.Status {
	for _, c := range st.Components {
		if c.Name == name {
			return c
		}
	}
	return agent.Status{Name: name, State: "absent"}
}

func compLine(c agent.Status) string {
	s := fmt.Sprintf("%s state=%s pid=%d healthy=%t restarts=%d reason=%q backoff=%q adopted=%t msg=%q",
		c.Name, c.State, c.PID, c.Healthy, c.Restarts, c.LastReason, c.BackoffDelay, c.Adopted, c.Message)
	if c.LastExit != nil {
		s += fmt.Sprintf(" lastExit=%d", c.LastExit.Code)
	}
	return s
}

// pollUntil calls cond every interval until it reports true, failing after
// timeout (or when m3sup exits) with cond's last description. It returns
// how long it took.
func (f *faults) pollUntil(t *testing.T, timeout, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		ok, desc := cond()
		if ok {
			return time.Since(start)
		}
		last = desc
		select {
		case <-f.n.done:
			t.Fatalf("%s: m3sup exited (%v); last: %s", what, f.n.exitErr, last)
		default:
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(interval)
	}
}

// waitComp polls the status until cond holds for component name.
func (f *faults) waitComp(t *testing.T, name string, timeout time.Duration, what string, cond func(c agent.Status) bool) (agent.Status, time.Duration) {
	t.Helper()
	var got agent.Status
	took := f.pollUntil(t, timeout, 50*time.Millisecond, what, func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		got = compOf(st, name)
		return cond(got), compLine(got)
	})
	return got, took
}

// cli runs `m3sup ARGS --socket SOCKET` and returns its
// combined output and exit status.
func (f *faults) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runCLI(t, f.n.socket, args...)
}

func (f *faults) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, code := f.cli(t, args...)
	if code != 0 {
		t.Fatalf("m3sup %s: exit %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// getCluster is `m3sup get cluster -o json`, decoded.
func (f *faults) getCluster(t *testing.T) api.ClusterDoc {
	t.Helper()
	out := f.mustCLI(t, "get", "cluster", "-o", "json")
	var doc api.ClusterDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("get cluster -o json is not a cluster doc: %v\n%s", err, out)
	}
	if doc.Revision == 0 {
		t.Fatalf("get cluster printed no revision:\n%s", out)
	}
	return doc
}

// writeDoc writes v as JSON to a fresh file for `apply -f`.
func writeDoc(t testing.TB, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// section returns the indented lines under a "title:" line of apply's table.
func section(out, title string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, title+":"):
			in = true
		case in && strings.HasPrefix(l, "  "):
			lines = append(lines, strings.TrimSpace(l))
		default:
			in = false
		}
	}
	return lines
}

func anyContains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func (f *faults) pids(t *testing.T) (db, co agent.Status) {
	t.Helper()
	st := f.status(t)
	db, co = compOf(st, "m3dbnode"), compOf(st, "m3coordinator")
	for _, c := range []agent.Status{db, co} {
		if c.State != agent.StateRunning || c.PID == 0 || !processAlive(c.PID, c.Name) {
			t.Fatalf("expected a running process: %s", compLine(c))
		}
	}
	return db, co
}

// unchanged fails unless both components still run as the given processes
// with the given restart counts.
func (f *faults) unchanged(t *testing.T, why string, db, co agent.Status) {
	t.Helper()
	st := f.status(t)
	for _, want := range []agent.Status{db, co} {
		got := compOf(st, want.Name)
		if got.PID != want.PID || got.Restarts != want.Restarts || got.State != agent.StateRunning || !processAlive(want.PID, want.Name) {
			t.Fatalf("%s: %s changed: was %s, now %s", why, want.Name, compLine(want), compLine(got))
		}
	}
}

// --- steps -----------------------------------------------------------------

// a: SIGKILL m3dbnode → restarted at once (reason crash, exit 137), healthy
// again, and a point written ≥2 s before the kill is still there.
func (f *faults) sigkillDBNode(t *testing.T) {
	n := f.n
	f.writePoint(t, "m3sup_faults_before_sigkill", 4242)
	// Not an event we can observe: M3 flushes its commit log every second.
	time.Sleep(2500 * time.Millisecond)

	db, co := f.pids(t)
	if err := syscall.Kill(int(db.PID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got, took := f.waitComp(t, "m3dbnode", time.Minute, "m3dbnode running again after SIGKILL", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != db.PID
	})
	t.Logf("m3dbnode SIGKILLed (pid %d) → running as pid %d after %s: %s", db.PID, got.PID, took.Round(time.Millisecond), compLine(got))
	if got.Restarts != db.Restarts+1 {
		t.Errorf("restarts %d → %d, want +1", db.Restarts, got.Restarts)
	}
	if got.LastReason != agent.ReasonCrash {
		t.Errorf("last restart reason %q, want %q", got.LastReason, agent.ReasonCrash)
	}
	if got.LastExit == nil {
		t.Errorf("no last exit recorded")
	} else {
		t.Logf("last exit code reported: %d", got.LastExit.Code)
		if got.LastExit.Code != 137 && got.LastExit.Code != 9 {
			t.Errorf("last exit code %d, want 137 (128+SIGKILL) or 9", got.LastExit.Code)
		}
	}
	if processAlive(db.PID, "m3dbnode") {
		t.Errorf("old m3dbnode pid %d still alive", db.PID)
	}
	if !processAlive(got.PID, "m3dbnode") {
		t.Errorf("new m3dbnode pid %d is not an m3dbnode process", got.PID)
	}
	_, took = f.waitComp(t, "m3dbnode", 3*time.Minute, "m3dbnode healthy (bootstrapped) again", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.Healthy && c.PID == got.PID
	})
	t.Logf("m3dbnode bootstrapped %s after it ran again", took.Round(100*time.Millisecond))
	n.waitReady(3 * time.Minute)
	f.readBack(t, "after the m3dbnode SIGKILL")
	if c := compOf(f.status(t), "m3coordinator"); c.PID != co.PID {
		t.Errorf("m3coordinator changed with the m3dbnode crash: %s → %s", compLine(co), compLine(c))
	}
}

// b: SIGKILL the managed containerd → the coordinator never stops serving,
// containerd comes back with a new pid, the M3 processes are the same, and
// exits are still observed through the new daemon.
func (f *faults) sigkillContainerd(t *testing.T) {
	n := f.n
	st := f.status(t)
	old := st.Containerd.PID
	if st.Containerd.Mode != "managed" || old == 0 || !st.Containerd.Connected {
		t.Fatalf("containerd: %+v, want managed, connected, with a pid", st.Containerd)
	}
	db, co := f.pids(t)

	type pollResult struct {
		total, failed int
		firstErr      string
	}
	firstOK := make(chan struct{})
	done := make(chan pollResult, 1)
	go func() {
		hc := &http.Client{Timeout: time.Second}
		var r pollResult
		end := time.Now().Add(5 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for time.Now().Before(end) {
			r.total++
			resp, err := hc.Get(n.coordURL + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
			if err != nil {
				r.failed++
				if r.firstErr == "" {
					r.firstErr = err.Error()
				}
			}
			if r.total == 1 {
				close(firstOK)
			}
			<-tick.C
		}
		done <- r
	}()
	<-firstOK
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var back api.Status
	took := f.pollUntil(t, 30*time.Second, 20*time.Millisecond, "containerd restarted and connected", func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		back = st
		return st.Containerd.PID != 0 && st.Containerd.PID != old && st.Containerd.Connected, fmt.Sprintf("%+v", st.Containerd)
	})
	t.Logf("containerd SIGKILLed (pid %d) → pid %d connected after %s", old, back.Containerd.PID, took.Round(time.Millisecond))
	if processAlive(uint32(old), "containerd") {
		t.Errorf("old containerd pid %d still alive", old)
	}
	r := <-done
	t.Logf("coordinator /health during the outage: %d polls, %d failed", r.total, r.failed)
	if r.failed > 0 || r.total < 50 {
		t.Errorf("coordinator /health: %d of %d polls failed (first: %s)", r.failed, r.total, r.firstErr)
	}
	f.unchanged(t, "after the containerd restart", db, co)
	if n := strings.Count(f.n.log(), "managed containerd restarted"); n < 1 {
		t.Errorf("m3sup did not log the containerd restart")
	}

	// The agent's exit watch must have followed containerd's restart: a
	// crash now is still seen and restarted.
	if err := syscall.Kill(int(co.PID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got, took := f.waitComp(t, "m3coordinator", 30*time.Second, "m3coordinator restarted after a SIGKILL through the new containerd", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID && c.Healthy
	})
	t.Logf("m3coordinator crash after the containerd restart seen and restarted (healthy) in %s: %s", took.Round(time.Millisecond), compLine(got))
	if got.LastReason != agent.ReasonCrash {
		t.Errorf("reason %q, want crash", got.LastReason)
	}
	n.waitReady(time.Minute)
}

// c: a coordinator-only change restarts only the coordinator; its dry run
// names it and writes nothing.
func (f *faults) applyCoordinatorOnly(t *testing.T) {
	doc := f.getCluster(t)
	f.stale = doc
	next := doc
	level := "warn"
	if doc.Spec.Coordinator.LogLevel == level {
		level = "info"
	}
	next.Spec.Coordinator.LogLevel = level
	file := writeDoc(t, next)

	out := f.mustCLI(t, "apply", "--dry-run", "-f", file)
	t.Logf("apply --dry-run:\n%s", out)
	restarts := section(out, "restarts")
	if !strings.Contains(out, "dry run: nothing written") || !anyContains(restarts, "m3coordinator") || anyContains(restarts, "m3dbnode") {
		t.Fatalf("dry run should list only m3coordinator under restarts:\n%s", out)
	}
	if !anyContains(section(out, "changes"), "coordinator.logLevel") {
		t.Errorf("dry run does not list the coordinator.logLevel change:\n%s", out)
	}
	if after := f.getCluster(t); after.Revision != doc.Revision || !reflect.DeepEqual(after.Spec, doc.Spec) {
		t.Fatalf("dry run wrote: revision %d → %d", doc.Revision, after.Revision)
	}

	db, co := f.pids(t)
	out = f.mustCLI(t, "apply", "-f", file)
	applied := time.Now()
	t.Logf("apply:\n%s", out)
	if !strings.Contains(out, "applied at revision") {
		t.Fatalf("apply output:\n%s", out)
	}
	got, took := f.waitComp(t, "m3coordinator", time.Minute, "m3coordinator restarted for the spec change", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID
	})
	t.Logf("m3coordinator restarted %s after apply: %s", took.Round(time.Millisecond), compLine(got))
	if got.LastReason != agent.ReasonSpec || got.Restarts != co.Restarts+1 {
		t.Errorf("m3coordinator: reason %q restarts %d, want %q and %d", got.LastReason, got.Restarts, agent.ReasonSpec, co.Restarts+1)
	}
	f.waitComp(t, "m3coordinator", time.Minute, "m3coordinator healthy", func(c agent.Status) bool { return c.Healthy })
	t.Logf("m3coordinator healthy %s after apply", time.Since(applied).Round(time.Millisecond))
	cfg, err := os.ReadFile(filepath.Join(f.n.dir, "components", "m3coordinator", "config", "m3coordinator.yml"))
	if err != nil || !strings.Contains(string(cfg), level) {
		t.Errorf("rendered coordinator config does not carry level %q (%v):\n%s", level, err, cfg)
	}
	co.PID, co.Restarts = got.PID, got.Restarts
	f.unchanged(t, "after a coordinator-only apply", db, co)
	f.n.waitReady(time.Minute)
}

// d: a retention change goes through M3's API: no process restarts.
func (f *faults) applyRetention(t *testing.T) {
	doc := f.getCluster(t)
	if len(doc.Spec.M3.Namespaces) == 0 || doc.Spec.M3.Namespaces[0].Retention.D() != 48*time.Hour {
		t.Fatalf("expected namespace default with 48h retention: %+v", doc.Spec.M3.Namespaces)
	}
	next := doc
	next.Spec.M3.Namespaces = append([]spec.Namespace(nil), doc.Spec.M3.Namespaces...)
	next.Spec.M3.Namespaces[0].Retention = spec.Duration(72 * time.Hour)
	db, co := f.pids(t)
	out := f.mustCLI(t, "apply", "-f", writeDoc(t, next))
	t.Logf("apply:\n%s", out)
	if !strings.Contains(out, "restarts: none") || !anyContains(section(out, "applied by M3 without a restart"), "retention") {
		t.Errorf("apply should report the retention as in place and no restarts:\n%s", out)
	}
	c := &m3.Client{BaseURL: f.n.coordURL, Env: doc.Spec.M3.Env, Zone: doc.Spec.M3.Zone}
	took := f.pollUntil(t, time.Minute, 100*time.Millisecond, "M3 namespace retention 72h", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nss, err := c.Namespaces(ctx)
		if err != nil {
			return false, err.Error()
		}
		return nss["default"].Retention == 72*time.Hour, fmt.Sprintf("%+v", nss["default"])
	})
	t.Logf("M3 namespace retention is 72h %s after apply", took.Round(time.Millisecond))
	// Nothing to await for "no restart": watch for a couple of seconds.
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		f.unchanged(t, "after a retention-only apply", db, co)
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(f.n.log(), "namespace retention updated") {
		t.Errorf("m3sup did not log the retention update")
	}
}

// e: a stale revision is a conflict (exit 3); invalid specs exit 2 naming
// the field; etcd keeps the spec.
func (f *faults) applyRefused(t *testing.T) {
	before := f.getCluster(t)
	if f.stale.Revision == 0 || f.stale.Revision == before.Revision {
		t.Fatalf("no stale doc (stale %d, now %d)", f.stale.Revision, before.Revision)
	}
	stale := f.stale
	stale.Spec.DBNode.LogLevel = "debug"
	out, code := f.cli(t, "apply", "-f", writeDoc(t, stale))
	t.Logf("stale apply (revision %d, current %d): exit %d: %s", stale.Revision, before.Revision, code, strings.TrimSpace(out))
	if code != 3 || !strings.Contains(out, "conflict") {
		t.Errorf("stale apply: exit %d, want 3 with \"conflict\":\n%s", code, out)
	}

	zero := before
	zero.Spec.M3.NumShards = 0
	out, code = f.cli(t, "apply", "-f", writeDoc(t, zero))
	t.Logf("numShards 0: exit %d: %s", code, strings.TrimSpace(out))
	if code != 2 || !strings.Contains(out, "m3.numShards") {
		t.Errorf("numShards 0: exit %d, want 2 naming m3.numShards:\n%s", code, out)
	}

	changed := before
	changed.Spec.M3.NumShards = before.Spec.M3.NumShards * 2
	out, code = f.cli(t, "apply", "-f", writeDoc(t, changed))
	t.Logf("numShards changed after placement: exit %d: %s", code, strings.TrimSpace(out))
	if code != 2 || !strings.Contains(out, "m3.numShards") {
		t.Errorf("numShards change: exit %d, want 2 naming m3.numShards:\n%s", code, out)
	}

	var raw map[string]any
	b, _ := json.Marshal(before)
	_ = json.Unmarshal(b, &raw)
	raw["spec"].(map[string]any)["m3"].(map[string]any)["noSuchKey"] = 1
	out, code = f.cli(t, "apply", "-f", writeDoc(t, raw))
	t.Logf("unknown key: exit %d: %s", code, strings.TrimSpace(out))
	if code != 2 || !strings.Contains(out, "m3.noSuchKey") {
		t.Errorf("unknown key: exit %d, want 2 naming m3.noSuchKey:\n%s", code, out)
	}

	// The CLI validates before sending: check the daemon refuses too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.api.ApplyCluster(ctx, zero, false)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "m3.numShards") {
		t.Errorf("daemon-side numShards 0: %v, want ErrInvalid naming m3.numShards", err)
	}
	_, err = f.api.ApplyCluster(ctx, stale, false)
	if !errors.Is(err, api.ErrConflict) {
		t.Errorf("daemon-side stale apply: %v, want ErrConflict", err)
	}

	after := f.getCluster(t)
	if after.Revision != before.Revision || !reflect.DeepEqual(after.Spec, before.Spec) {
		t.Errorf("a refused apply changed etcd: revision %d → %d", before.Revision, after.Revision)
	}
}

// f: a dbnode config override M3 refuses makes it crash-loop with growing
// backoff and a log tail that says why; the fixed spec brings it back
// without restarting m3sup.
func (f *faults) crashLoop(t *testing.T) {
	n := f.n
	m3supPID := n.cmd.Process.Pid
	f.writePoint(t, "m3sup_faults_before_crash_loop", 4343)
	doc := f.getCluster(t)
	bad := doc
	bad.Spec.DBNode.Config = map[string]any{"db": map[string]any{"noSuchKey": 1}}
	file := writeDoc(t, bad)
	out := f.mustCLI(t, "apply", "--dry-run", "-f", file)
	if !anyContains(section(out, "restarts"), "m3dbnode") || anyContains(section(out, "restarts"), "m3coordinator") {
		t.Errorf("dry run should restart only m3dbnode:\n%s", out)
	}
	db, co := f.pids(t)
	f.mustCLI(t, "apply", "-f", file)
	applied := time.Now()

	loop, took := f.waitComp(t, "m3dbnode", time.Minute, "m3dbnode in crash-loop", func(c agent.Status) bool {
		return c.State == agent.StateCrashLoop
	})
	t.Logf("m3dbnode crash-loop %s after apply: %s", took.Round(time.Millisecond), compLine(loop))
	if took > 15*time.Second {
		t.Errorf("crash-loop took %s to show (want ~10 s)", took)
	}
	if processAlive(db.PID, "m3dbnode") {
		t.Errorf("the old m3dbnode (pid %d) still runs", db.PID)
	}

	// Backoff grows: record the delay announced after each failure.
	delays := map[int]time.Duration{}
	var order []int
	var last agent.Status
	f.pollUntil(t, 90*time.Second, 50*time.Millisecond, "three backoff delays observed", func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		c := compOf(st, "m3dbnode")
		if c.State == agent.StateCrashLoop || c.State == agent.StateBackoff {
			last = c
			if _, seen := delays[c.Restarts]; !seen {
				d, err := time.ParseDuration(c.BackoffDelay)
				if err == nil && d > 0 {
					delays[c.Restarts] = d
					order = append(order, c.Restarts)
				}
			}
		}
		return len(order) >= 3, fmt.Sprintf("delays %v; %s", delays, compLine(c))
	})
	var seq []string
	for i, r := range order {
		seq = append(seq, fmt.Sprintf("restarts=%d delay=%s", r, delays[r]))
		if i > 0 && (r <= order[i-1] || delays[r] <= delays[order[i-1]]) {
			t.Errorf("backoff did not grow: %v", seq)
		}
	}
	t.Logf("backoff observed: %s", strings.Join(seq, ", "))
	if last.LastReason != agent.ReasonCrash || last.LastExit == nil || last.LastExit.Code == 0 {
		t.Errorf("crash-loop status: %s", compLine(last))
	} else {
		t.Logf("crash-loop last exit code %d", last.LastExit.Code)
	}
	tail := strings.Join(last.LogTail, "\n")
	t.Logf("log tail (%d lines):\n%s", len(last.LogTail), tail)
	if len(last.LogTail) == 0 || !strings.Contains(tail, "noSuchKey") {
		t.Errorf("log tail does not name the bad key noSuchKey:\n%s", tail)
	}
	table := f.mustCLI(t, "status")
	var row string
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, "m3dbnode") {
			row = l
		}
	}
	t.Logf("status table row: %s", row)
	if !strings.Contains(row, "crash-loop") && !strings.Contains(row, "starting") && !strings.Contains(row, "running") {
		t.Errorf("status table does not show the crash loop:\n%s", table)
	} else if !strings.Contains(row, "crash-loop") {
		// It may catch the short start between two exits; ask again.
		f.pollUntil(t, 30*time.Second, 100*time.Millisecond, "status table shows crash-loop", func() (bool, string) {
			out, _ := f.cli(t, "status")
			return strings.Contains(out, "crash-loop"), out
		})
	}
	if c := compOf(f.status(t), "m3coordinator"); c.PID != co.PID {
		t.Errorf("m3coordinator restarted during the dbnode crash loop: %s", compLine(c))
	}

	// Fix: the spec without the override.
	fix := f.getCluster(t)
	fix.Spec.DBNode.Config = nil
	pending := compOf(f.status(t), "m3dbnode")
	out = f.mustCLI(t, "apply", "-f", writeDoc(t, fix))
	fixed := time.Now()
	t.Logf("fix applied %s after the bad one (dbnode then: %s); apply said:\n%s", fixed.Sub(applied).Round(time.Millisecond), compLine(pending), out)
	got, took := f.waitComp(t, "m3dbnode", 3*time.Minute, "m3dbnode running on the fixed spec", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && processAlive(c.PID, "m3dbnode")
	})
	t.Logf("m3dbnode running %s after the fix (pending backoff then was %q)", took.Round(time.Millisecond), pending.BackoffDelay)
	got, _ = f.waitComp(t, "m3dbnode", 3*time.Minute, "m3dbnode stays up and bootstraps on the fixed spec", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.Healthy && c.PID == got.PID
	})
	t.Logf("m3dbnode healthy %s after the fix: %s", time.Since(fixed).Round(100*time.Millisecond), compLine(got))
	n.waitReady(3 * time.Minute)
	if n.cmd.Process.Pid != m3supPID {
		t.Errorf("m3sup restarted")
	}
	f.readBack(t, "after the crash loop was fixed")
	writeAndRead(t, n.coordURL, "m3sup_faults_after_crashloop", time.Now().Add(-2*time.Second).Truncate(time.Second), 7)
}

// g: stop/start/restart controls and logs --tail.
func (f *faults) controls(t *testing.T) {
	db, co := f.pids(t)
	out := f.mustCLI(t, "stop", "m3coordinator")
	t.Logf("stop: %s", strings.TrimSpace(out))
	_, took := f.waitComp(t, "m3coordinator", time.Minute, "m3coordinator stopped", func(c agent.Status) bool {
		return c.State == agent.StateStopped && c.PID == 0
	})
	t.Logf("m3coordinator stopped %s after the command", took.Round(time.Millisecond))
	f.pollUntil(t, 10*time.Second, 20*time.Millisecond, "old coordinator process gone", func() (bool, string) {
		return !processAlive(co.PID, "m3coordinator"), fmt.Sprintf("pid %d alive", co.PID)
	})
	f.mustCLI(t, "start", "m3coordinator")
	got, took := f.waitComp(t, "m3coordinator", time.Minute, "m3coordinator started again", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID && c.Healthy
	})
	t.Logf("m3coordinator running and healthy %s after start: %s", took.Round(time.Millisecond), compLine(got))

	out = f.mustCLI(t, "logs", "m3dbnode", "--tail", "5")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	logFile, _ := os.ReadFile(filepath.Join(f.n.dir, "components", "m3dbnode", "logs", "m3dbnode.log"))
	fileLines := strings.Count(string(logFile), "\n")
	t.Logf("logs m3dbnode --tail 5 printed %d lines (file has %d)", len(lines), fileLines)
	if len(lines) > 5 || (fileLines >= 5 && len(lines) != 5) || strings.TrimSpace(out) == "" {
		t.Errorf("logs --tail 5 printed %d lines:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(string(logFile), l) {
			t.Errorf("logs printed a line not in the log file: %q", l)
		}
	}

	f.writePoint(t, "m3sup_faults_before_manual_restart", 4444)
	out = f.mustCLI(t, "restart", "m3dbnode")
	t.Logf("restart: %s", strings.TrimSpace(out))
	dbGot, took := f.waitComp(t, "m3dbnode", 2*time.Minute, "m3dbnode restarted manually", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != db.PID
	})
	t.Logf("m3dbnode restarted %s after the command: %s", took.Round(time.Millisecond), compLine(dbGot))
	if dbGot.LastReason != agent.ReasonManual {
		t.Errorf("reason %q, want manual", dbGot.LastReason)
	}
	f.waitComp(t, "m3dbnode", 3*time.Minute, "m3dbnode healthy after the manual restart", func(c agent.Status) bool {
		return c.Healthy && c.PID == dbGot.PID
	})
	f.n.waitReady(3 * time.Minute)
	f.readBack(t, "after the manual m3dbnode restart")
}

// h: SIGKILL m3sup; the next m3sup adopts both containers (same pids, no
// duplicates) and the cluster keeps its data.
func (f *faults) sigkillM3sup(t *testing.T) {
	n := f.n
	db, co := f.pids(t)
	oldCtd := f.status(t).Containerd.PID
	logOff := len(n.log())
	if err := n.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		t.Fatal("m3sup did not die on SIGKILL")
	}
	for _, c := range []agent.Status{db, co} {
		if !processAlive(c.PID, c.Name) {
			t.Fatalf("%s (pid %d) died with m3sup", c.Name, c.PID)
		}
	}
	restarted := time.Now()
	n.start()
	var adopted api.Status
	took := f.pollUntil(t, 2*time.Minute, 10*time.Millisecond, "both components adopted", func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		adopted = st
		a, b := compOf(st, "m3dbnode"), compOf(st, "m3coordinator")
		return a.Adopted && b.Adopted && a.PID == db.PID && b.PID == co.PID, compLine(a) + "; " + compLine(b)
	})
	t.Logf("new m3sup shows both components adopted %s after its start", took.Round(time.Millisecond))
	st := n.waitReady(3 * time.Minute)
	t.Logf("new m3sup ready %s after its start", time.Since(restarted).Round(time.Millisecond))
	if len(st.Components) != 2 {
		t.Errorf("%d components in status, want 2: %+v", len(st.Components), st.Components)
	}
	for _, want := range []agent.Status{db, co} {
		got := compOf(st, want.Name)
		if got.PID != want.PID || !got.Adopted || got.State != agent.StateRunning || got.Restarts != 0 {
			t.Errorf("%s not adopted as is: was %s, now %s", want.Name, compLine(want), compLine(got))
		}
	}
	newLog := n.log()[logOff:]
	if c := strings.Count(newLog, "adopted running container"); c != 2 {
		t.Errorf("log says \"adopted running container\" %d times, want 2", c)
	}
	if processAlive(uint32(oldCtd), "containerd") && st.Containerd.PID != oldCtd {
		t.Errorf("the old containerd (pid %d) still runs beside the new one (pid %d)", oldCtd, st.Containerd.PID)
	}
	t.Logf("containerd: pid %d before, %d now", oldCtd, adopted.Containerd.PID)

	// No duplicates in containerd itself.
	for _, what := range []string{"containers", "tasks"} {
		cmd := exec.Command("ctr", "--address", st.Containerd.Address, "--namespace", st.Containerd.Namespace, what, "ls", "-q")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("ctr %s ls: %v: %s", what, err, b)
			continue
		}
		ids := strings.Fields(string(b))
		t.Logf("ctr --namespace %s %s ls: %v", st.Containerd.Namespace, what, ids)
		if len(ids) != 2 {
			t.Errorf("containerd has %d %s, want 2: %v", len(ids), what, ids)
		}
	}
	f.readBack(t, "after the adoption")
	// Every point survives every restart after it, not only the next one:
	// the first went through a SIGKILL, a crash loop, a manual restart and
	// snapshots plus commit-log cleanups in between.
	for _, p := range f.points {
		if err := tryReadBack(f.n.coordURL, p.metric, p.ts, p.value, 60*time.Second); err != nil {
			t.Logf("m3dbnode log lines about bootstrap, snapshots and commit logs:\n%s", m3dbnodeLogLines(f.n))
			t.Fatalf("point %s=%v written before earlier restarts, after the adoption: %v", p.metric, p.value, err)
		}
	}
}

// i: SIGTERM stops everything and m3sup exits 0.
func (f *faults) sigterm(t *testing.T) {
	st := f.status(t)
	procs := map[uint32]string{}
	for _, c := range st.Components {
		procs[c.PID] = c.Name
	}
	procs[uint32(st.Containerd.PID)] = "containerd"
	if code := f.n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited %d after SIGTERM", code)
	}
	for pid, name := range procs {
		if processAlive(pid, name) {
			t.Errorf("%s (pid %d) still runs after m3sup exited", name, pid)
		}
	}
	// m3sup has exited, so not pollUntil (it fails on that).
	deadline := time.Now().Add(10 * time.Second)
	for left := shimPIDs(filepath.Dir(f.n.socket)); len(left) > 0; left = shimPIDs(filepath.Dir(f.n.socket)) {
		if time.Now().After(deadline) {
			t.Fatalf("containerd shims %v still run 10 s after m3sup exited", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
