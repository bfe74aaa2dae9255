package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// fakeComponents is an agent whose statuses the test sets.
type fakeComponents struct {
	mu    sync.Mutex
	comps []agent.Status
}

func (f *fakeComponents) set(comps ...agent.Status) {
	f.mu.Lock()
	f.comps = comps
	f.mu.Unlock()
}

func (f *fakeComponents) Statuses() []agent.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agent.Status(nil), f.comps...)
}

func (f *fakeComponents) Status(name string) (agent.Status, bool) {
	for _, c := range f.Statuses() {
		if c.Name == name {
			return c, true
		}
	}
	return agent.Status{}, false
}

// notifySocket points NOTIFY_SOCKET at a datagram socket and returns what
// arrives on it.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return ch
}

// expectNotify waits (bounded) for the next datagram and compares it.
func expectNotify(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("systemd got %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("systemd got nothing, want %q", want)
	}
}

func expectNoNotify(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("systemd got %q, want nothing", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func gauge(t *testing.T, h *hostStatus, name string) float64 {
	t.Helper()
	mfs, err := h.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestHostStatusLifecycle follows one host from start to stop through its
// one status owner: systemd's STATUS= and READY=1, the verdict in status,
// /readyz and the metrics agree at every step.
func TestHostStatusLifecycle(t *testing.T) {
	sd := notifySocket(t)
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	h := newHostStatus("n1", "test", "m3sup", n, zap.New(core))
	ctx := context.Background()

	st := h.Status(ctx)
	if st.Etcd.State != "starting" || st.Containerd.Mode != "starting" || st.M3.Phase != "waiting" || st.Ready {
		t.Fatalf("status before anything is connected: %+v", st)
	}
	if !h.alive() {
		t.Fatal("not alive while starting")
	}

	h.setPhase(PhaseStarting, "m3dbnode and m3coordinator")
	expectNotify(t, sd, "STATUS=starting: m3dbnode and m3coordinator")
	ag := &fakeComponents{}
	h.connectAgent(ag)
	db := agent.Status{Name: DBNode, State: agent.StateRunning, Healthy: true, DesiredActive: true}
	co := agent.Status{Name: Coordinator, State: agent.StateStarting, DesiredActive: true}
	ag.set(db, co)
	h.componentChanged(db)
	expectNoNotify(t, sd) // a component still starts: no READY=1 yet
	co.State, co.Healthy = agent.StateRunning, true
	ag.set(db, co)
	h.componentChanged(co)
	expectNotify(t, sd, "READY=1")
	if v := h.verdict(); v.Ready || v.Degraded || !strings.Contains(v.Reason, "never became ready on this host: starting") {
		t.Fatalf("verdict before set-up: %+v", v)
	}
	if err := h.Ready(ctx); err == nil {
		t.Fatal("ready before set-up")
	}

	h.setPhase(PhaseReady, "M3 accepts writes")
	expectNotify(t, sd, "STATUS=ready: M3 accepts writes")
	expectNoNotify(t, sd) // READY=1 was sent once already
	if !h.isReady() || !h.verdict().Ready || gauge(t, h, "m3sup_cluster_ready") != 1 {
		t.Fatalf("after set-up: ready %t, verdict %+v", h.isReady(), h.verdict())
	}

	db = agent.Status{Name: DBNode, State: agent.StateCrashLoop, Message: "exit 2", Restarts: 3, BackoffDelay: "8s", DesiredActive: true}
	ag.set(db, co)
	h.componentChanged(db)
	want := "degraded: M3 was ready, now m3dbnode crash-loop: exit 2 (3 restarts, next try in 8s)"
	expectNotify(t, sd, "STATUS="+want)
	if st := h.Status(ctx); st.Ready || !st.Readiness.Degraded || st.Readiness.Reason != want || st.Readiness.Component != DBNode {
		t.Fatalf("status while degraded: %+v", st.Readiness)
	}
	if err := h.Ready(ctx); err == nil || err.Error() != want {
		t.Fatalf("Ready while degraded = %v", err)
	}
	if gauge(t, h, "m3sup_degraded") != 1 || gauge(t, h, "m3sup_cluster_ready") != 0 {
		t.Fatal("metrics while degraded")
	}
	if logs.FilterMessageSnippet("M3 is not ready on this host").Len() != 1 {
		t.Fatalf("degradation logged: %v", logs.All())
	}

	// Components stopping with the daemon are no degradation.
	h.markShuttingDown()
	db.State = agent.StateStopping
	ag.set(db, co)
	h.componentChanged(db)
	expectNotify(t, sd, "STATUS=ready: M3 accepts writes")
	if n := logs.FilterMessageSnippet("M3 is ready again").Len(); n != 0 {
		t.Fatalf("a daemon shutting down logged M3 ready again: %v", logs.All())
	}
	h.setPhase(PhaseStopping, "")
	expectNotify(t, sd, "STATUS=stopping")
	expectNotify(t, sd, "STOPPING=1")
}

// TestHostStatusShutdownByContext: once the daemon's run context is done
// (a signal), components stopping are neither a degradation nor, after
// one, a return to ready: nothing is logged, whichever goroutine sees the
// cancellation first.
func TestHostStatusShutdownByContext(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := newHostStatus("n1", "test", "m3sup", nil, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	h.stopsWith(ctx)
	ag := &fakeComponents{}
	h.connectAgent(ag)
	db := agent.Status{Name: DBNode, State: agent.StateRunning, Healthy: true, DesiredActive: true}
	co := agent.Status{Name: Coordinator, State: agent.StateRunning, Healthy: true, DesiredActive: true}
	ag.set(db, co)
	h.setPhase(PhaseReady, "M3 accepts writes")
	cancel()
	db.State, db.Healthy = agent.StateStopping, false
	ag.set(db, co)
	h.componentChanged(db)
	co.State, co.Healthy = agent.StateStopped, false
	ag.set(db, co)
	h.componentChanged(co)
	if n := logs.FilterMessageSnippet("M3 is").Len(); n != 0 {
		t.Fatalf("shutdown logged a readiness change: %v", logs.All())
	}
}

// TestHostStatusAlive: the watchdog accepts a daemon still starting (a
// join waiting its turn included), then wants the node loop's heartbeat.
func TestHostStatusAlive(t *testing.T) {
	h := newHostStatus("n1", "test", "m3sup", nil, zap.NewNop())
	for _, p := range []string{"", PhaseJoining, PhaseStartingEtcd, PhaseStartingRuntime, PhaseFetching} {
		h.setMessage("")
		h.mu.Lock()
		h.phase = p
		h.mu.Unlock()
		h.beat.Store(0)
		if !h.alive() {
			t.Fatalf("phase %q: not alive", p)
		}
	}
	h.setPhase(PhaseStarting, "") // beats
	if !h.alive() {
		t.Fatal("not alive right after a beat")
	}
	h.beat.Store(time.Now().Add(-31 * time.Second).UnixNano())
	if h.alive() {
		t.Fatal("alive 31 s after the last beat")
	}

	// The agent must still watch its components too.
	core, logs := observer.New(zap.InfoLevel)
	h = newHostStatus("n1", "test", "m3sup", nil, zap.New(core))
	obs := &observingComponents{}
	h.connectAgent(obs)
	h.setPhase(PhaseStarting, "")
	if !h.alive() {
		t.Fatal("not alive while the agent observes")
	}
	obs.err.Store(&[]error{errors.New("m3dbnode has not been asked whether it is alive for 41s")}[0])
	if h.alive() || h.alive() {
		t.Fatal("alive while the agent no longer observes m3dbnode")
	}
	if n := logs.FilterMessageSnippet("withholding systemd's watchdog ping: m3dbnode has not been asked").Len(); n != 1 {
		t.Fatalf("withheld ping logged %d times, want once: %v", n, logs.All())
	}
	obs.err.Store(nil)
	if !h.alive() || logs.FilterMessageSnippet("watchdog pings again").Len() != 1 {
		t.Fatalf("not alive again, or not logged: %v", logs.All())
	}
}

// observingComponents is an agent that says whether it still observes.
type observingComponents struct {
	fakeComponents
	err atomic.Pointer[error]
}

func (o *observingComponents) Observing(time.Time, time.Duration) error {
	if e := o.err.Load(); e != nil {
		return *e
	}
	return nil
}
