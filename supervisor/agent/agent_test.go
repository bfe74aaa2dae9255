package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/logrotate"
	"github.com/m3sup/m3sup/supervisor/restart"
)

// t0 is the agent's (frozen) clock: StateSince and NextStart become exact,
// and no run is ever long enough to reset the restart record. Timers still
// run on real time, so the policies below use tiny delays.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fastPolicy: immediate, then 5ms doubling to 40ms; a crash loop after 3;
// the jitter factor is exactly 1.
func fastPolicy() restart.Policy {
	return restart.Policy{Base: 5 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Hour,
		CrashLoopAfter: 3, Jitter: 0.2, Rand: func() float64 { return 0.5 }}
}

// slowPolicy: after the immediate first restart, wait an hour.
func slowPolicy() restart.Policy {
	return restart.Policy{Base: time.Hour, Max: time.Hour, ResetAfter: time.Hour,
		CrashLoopAfter: 2, Jitter: 0.2, Rand: func() float64 { return 0.5 }}
}

func comp(name, hash string) Component {
	return Component{
		Name:        name,
		Version:     "1.5.0",
		Hash:        hash,
		StopTimeout: 3 * time.Second,
		Spec: runtime.Spec{
			ID:     "m3sup-" + name,
			Args:   []string{"/bin/" + name},
			Labels: map[string]string{"extra": "kept"},
		},
	}
}

type restartEvent struct{ Name, Reason string }

// harness runs an Agent over a fakeRuntime and records what it reports.
type harness struct {
	t   *testing.T
	sig *signal
	rt  *fakeRuntime
	ag  *Agent

	mu       sync.Mutex
	changes  []Status
	restarts []restartEvent

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	runErr   error
}

func newHarness(t *testing.T, configure func(*Options)) *harness {
	t.Helper()
	sig := newSignal()
	h := &harness{t: t, sig: sig, rt: newFakeRuntime(sig)}
	opts := Options{
		Logger:         zaptest.NewLogger(t),
		Policy:         fastPolicy(),
		Now:            func() time.Time { return t0 },
		HealthInterval: time.Millisecond,
		OnChange: func(s Status) {
			h.mu.Lock()
			h.changes = append(h.changes, s)
			h.mu.Unlock()
			sig.poke()
		},
		OnRestart: func(name, reason string) {
			h.mu.Lock()
			h.restarts = append(h.restarts, restartEvent{name, reason})
			h.mu.Unlock()
			sig.poke()
		},
	}
	if configure != nil {
		configure(&opts)
	}
	h.ag = New(h.rt, opts)
	return h
}

// start runs the agent in a goroutine; the test's cleanup stops it and
// waits for Run to return.
func (h *harness) start(comps ...Component) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() {
		h.done <- h.ag.Run(ctx, comps)
		h.sig.poke()
	}()
	h.t.Cleanup(func() { h.stop() })
}

// stop cancels the agent's context and returns Run's result.
func (h *harness) stop() error {
	h.t.Helper()
	h.stopOnce.Do(func() {
		h.cancel()
		h.runErr = h.wait()
	})
	return h.runErr
}

// wait returns Run's result without cancelling it.
func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // keep it for a later wait
		return err
	case <-time.After(waitLimit):
		h.t.Fatalf("Run did not return within %s", waitLimit)
		return nil
	}
}

func (h *harness) status(name string) Status {
	h.t.Helper()
	s, ok := h.ag.Status(name)
	if !ok {
		h.t.Fatalf("no status for %s", name)
	}
	return s
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	waitFor(h.t, h.sig, what, cond)
}

// reported returns the status OnChange reported last for name. The agent
// sets a status, then reports it from the component's loop, so once a
// state is reported everything the loop did before it has happened.
func (h *harness) reported(name string) Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.changes) - 1; i >= 0; i-- {
		if h.changes[i].Name == name {
			return h.changes[i]
		}
	}
	return Status{}
}

// waitState waits until OnChange reports name in state.
func (h *harness) waitState(name string, state State) Status {
	h.t.Helper()
	var s Status
	h.waitFor(fmt.Sprintf("%s %s", name, state), func() bool {
		s = h.reported(name)
		return s.State == state
	})
	return s
}

// waitRestarts waits until OnRestart was called n times.
func (h *harness) waitRestarts(n int) []restartEvent {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("%d OnRestart calls", n), func() bool { return len(h.restartEvents()) >= n })
	return h.restartEvents()
}

// waitRuns waits until id has been Run n times and the agent has settled
// on the outcome (running, or in backoff after a failure).
func (h *harness) waitRuns(name, id string, n int) Status {
	h.t.Helper()
	var s Status
	h.waitFor(fmt.Sprintf("%d runs of %s", n, id), func() bool {
		// The agent reports starting before each Run: the count read before
		// and after the status says which Run the status follows.
		before := h.rt.count("run", id)
		s = h.reported(name)
		return before == n && h.rt.count("run", id) == n && s.State != StateStarting
	})
	if got := h.rt.count("run", id); got != n {
		h.t.Fatalf("runs of %s = %d, want %d", id, got, n)
	}
	return s
}

func (h *harness) update(comps ...Component) {
	h.t.Helper()
	if err := h.ag.Update(comps); err != nil {
		h.t.Fatalf("Update: %v", err)
	}
}

func (h *harness) restartEvents() []restartEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.restarts)
}

func (h *harness) history(name string) []Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Status
	for _, s := range h.changes {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// assertUntouched proves c's loop has handled every Update so far without a
// runtime call since mark m. Once c's mailbox is empty the loop has taken
// the last desired state; a manual restart queued now is handled only after
// that, so the calls for c since m must be exactly the manual restart's.
func (h *harness) assertUntouched(c Component, m int) {
	h.t.Helper()
	h.waitFor(c.Name+"'s mailbox drained", func() bool {
		h.ag.mu.Lock()
		defer h.ag.mu.Unlock()
		return len(h.ag.mailbox[c.Name]) == 0
	})
	id := c.Spec.ID
	runs := h.rt.count("run", id)
	c.RestartGeneration++
	h.update(c)
	h.waitFor("barrier restart of "+c.Name, func() bool {
		return h.rt.count("run", id) == runs+1 && h.reported(c.Name).State == StateRunning && h.rt.count("run", id) == runs+1
	})
	got := ops(h.rt.since(m, id))
	want := []string{"stop " + id, "run " + id, "wait " + id}
	if !slices.Equal(got, want) {
		h.t.Fatalf("calls for %s = %q, want only the barrier restart %q", c.Name, got, want)
	}
}

func TestFreshStart(t *testing.T) {
	h := newHarness(t, nil)
	db, coord := comp("m3dbnode", "h-db"), comp("m3coordinator", "h-coord")
	h.start(db, coord)

	for _, c := range []Component{db, coord} {
		s := h.waitState(c.Name, StateRunning)
		if got := h.rt.count("run", c.Spec.ID); got != 1 {
			t.Errorf("%s: %d runs, want 1", c.Name, got)
		}
		if s.PID == 0 || s.PID != h.rt.pidOf(c.Spec.ID) {
			t.Errorf("%s: PID %d, runtime says %d", c.Name, s.PID, h.rt.pidOf(c.Spec.ID))
		}
		if s.Adopted || !s.Healthy || s.Restarts != 0 || s.SpecHash != c.Hash || s.DesiredHash != c.Hash ||
			!s.DesiredActive || s.Version != "1.5.0" || !s.StartedAt.Equal(t0) || s.LastExit != nil {
			t.Errorf("%s: status %+v", c.Name, s)
		}
		if !h.rt.waiting(c.Spec.ID) {
			t.Errorf("%s: the agent does not wait on the task", c.Name)
		}
		run := h.rt.since(0, c.Spec.ID)[0]
		wantLabels := map[string]string{
			"extra":                "kept",
			runtime.LabelOwner:     runtime.OwnerValue,
			runtime.LabelComponent: c.Name,
			runtime.LabelSpecHash:  c.Hash,
			runtime.LabelVersion:   "1.5.0",
		}
		if run.Op != "run" || fmt.Sprint(run.Labels) != fmt.Sprint(wantLabels) {
			t.Errorf("%s: first call %s with labels %v, want run with %v", c.Name, run, run.Labels, wantLabels)
		}
		var sawRunning bool
		for _, s := range h.history(c.Name) {
			sawRunning = sawRunning || s.State == StateRunning
		}
		if !sawRunning {
			t.Errorf("%s: OnChange never reported running: %+v", c.Name, h.history(c.Name))
		}
	}
	if got := h.rt.count("list", ""); got != 1 {
		t.Errorf("List called %d times, want 1", got)
	}
	if got := h.restartEvents(); len(got) != 0 {
		t.Errorf("OnRestart called: %v", got)
	}
	if st := h.ag.Statuses(); len(st) != 2 || st[0].Name != "m3coordinator" || st[1].Name != "m3dbnode" {
		t.Errorf("Statuses not the two components sorted by name: %+v", st)
	}
}

func TestAdoption(t *testing.T) {
	const id = "m3sup-m3dbnode"
	owned := func(component, hash string) map[string]string {
		return map[string]string{runtime.LabelOwner: runtime.OwnerValue, runtime.LabelComponent: component, runtime.LabelSpecHash: hash}
	}
	tests := []struct {
		name        string
		seed        runtime.Status
		stopped     bool     // the desired component is stopped
		wantStops   []string // ids Stopped while adopting
		wantAdopted bool
		wantLeft    bool // the seeded container still exists afterwards
	}{
		{
			name:        "running with the same hash is adopted",
			seed:        runtime.Status{ID: id, Labels: owned("m3dbnode", "h1"), State: runtime.StateRunning, PID: 4242},
			wantAdopted: true, wantLeft: true,
		},
		{
			name:      "a different hash is replaced",
			seed:      runtime.Status{ID: id, Labels: owned("m3dbnode", "h0"), State: runtime.StateRunning, PID: 4242},
			wantStops: []string{id},
		},
		{
			name:      "a stopped task is replaced",
			seed:      runtime.Status{ID: id, Labels: owned("m3dbnode", "h1"), State: runtime.StateStopped, PID: 4242, ExitCode: 1},
			wantStops: []string{id},
		},
		{
			name:      "an unknown component is removed",
			seed:      runtime.Status{ID: "m3sup-m3query", Labels: owned("m3query", "h1"), State: runtime.StateRunning, PID: 4242},
			wantStops: []string{"m3sup-m3query"},
		},
		{
			name:      "an unexpected id is removed",
			seed:      runtime.Status{ID: "m3sup-m3dbnode-old", Labels: owned("m3dbnode", "h1"), State: runtime.StateRunning, PID: 4242},
			wantStops: []string{"m3sup-m3dbnode-old"},
		},
		{
			name:      "a component stopped in the desired state is stopped",
			seed:      runtime.Status{ID: id, Labels: owned("m3dbnode", "h1"), State: runtime.StateRunning, PID: 4242},
			stopped:   true,
			wantStops: []string{id},
		},
		{
			name:     "a container not created by m3sup is left alone",
			seed:     runtime.Status{ID: "someone-else", Labels: map[string]string{runtime.LabelComponent: "m3dbnode"}, State: runtime.StateRunning, PID: 4242},
			wantLeft: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.rt.seed(tt.seed)
			db := comp("m3dbnode", "h1")
			db.Stopped = tt.stopped
			h.start(db)

			want := StateRunning
			if tt.stopped {
				want = StateStopped
			}
			s := h.waitState("m3dbnode", want)
			if !tt.stopped {
				h.waitFor("the agent watches "+id, func() bool { return h.rt.waiting(id) })
			}

			var stops []string
			for _, c := range h.rt.since(0, "") {
				if c.Op == "stop" {
					stops = append(stops, c.ID)
				}
				if c.Op == "remove" {
					t.Errorf("unexpected %s", c)
				}
			}
			if !slices.Equal(stops, tt.wantStops) {
				t.Errorf("stopped %q, want %q", stops, tt.wantStops)
			}
			wantRuns := 1
			if tt.wantAdopted || tt.stopped {
				wantRuns = 0
			}
			if got := h.rt.count("run", id); got != wantRuns {
				t.Errorf("%d runs of %s, want %d", got, id, wantRuns)
			}
			if s.Adopted != tt.wantAdopted {
				t.Errorf("Adopted = %v, want %v", s.Adopted, tt.wantAdopted)
			}
			if tt.wantAdopted {
				if s.PID != 4242 || !s.Healthy || s.SpecHash != "h1" || !s.StartedAt.Equal(t0) {
					t.Errorf("adopted status %+v, want PID 4242, healthy, hash h1", s)
				}
			}
			st, ok := h.rt.container(tt.seed.ID)
			if left := ok && st.PID == tt.seed.PID; left != tt.wantLeft {
				t.Errorf("seeded container still exists = %v, want %v", left, tt.wantLeft)
			}
		})
	}
}

// An adopted container is watched like a started one: its crash restarts it.
func TestAdoptedCrashIsRestarted(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, nil)
	h.rt.seed(runtime.Status{ID: id, State: runtime.StateRunning, PID: 4242, Labels: map[string]string{
		runtime.LabelOwner: runtime.OwnerValue, runtime.LabelComponent: "m3dbnode", runtime.LabelSpecHash: "h1"}})
	h.start(comp("m3dbnode", "h1"))
	h.waitState("m3dbnode", StateRunning)
	h.waitFor("the agent watches "+id, func() bool { return h.rt.waiting(id) })

	h.rt.crash(t, id, 1)
	s := h.waitRuns("m3dbnode", id, 1)
	if s.State != StateRunning || s.Adopted || s.PID == 4242 || s.Restarts != 1 || s.LastExit == nil || s.LastExit.Code != 1 {
		t.Errorf("after the crash: %+v", s)
	}
}

func TestListFails(t *testing.T) {
	h := newHarness(t, nil)
	h.rt.listErr = errBoom
	h.start(comp("m3dbnode", "h1"))
	err := h.wait()
	if err == nil || !strings.Contains(err.Error(), "list containers") {
		t.Fatalf("Run = %v, want a list error", err)
	}
	if n := h.rt.count("run", ""); n != 0 {
		t.Errorf("%d runs after a failed List", n)
	}
}

func TestCrashRestartsAtOnce(t *testing.T) {
	const id = "m3sup-m3dbnode"
	logPath := filepath.Join(t.TempDir(), "m3dbnode.log")
	var lines []string
	for i := 1; i <= 25; i++ {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	if err := os.WriteFile(logPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil)
	db := comp("m3dbnode", "h1")
	db.Spec.LogPath = logPath
	h.start(db, comp("m3coordinator", "h2"))
	first := h.waitState("m3dbnode", StateRunning)
	h.waitState("m3coordinator", StateRunning)

	m := h.rt.mark()
	h.rt.crash(t, id, 137)
	s := h.waitRuns("m3dbnode", id, 2)

	if got, want := ops(h.rt.since(m, "")), []string{"remove " + id, "run " + id, "wait " + id}; !slices.Equal(got, want) {
		t.Errorf("calls after the crash = %q, want %q", got, want)
	}
	if s.State != StateRunning || s.PID == first.PID || s.PID != h.rt.pidOf(id) {
		t.Errorf("state %s PID %d (first %d)", s.State, s.PID, first.PID)
	}
	if s.Restarts != 1 || s.LastReason != ReasonCrash || s.LastExit == nil || s.LastExit.Code != 137 {
		t.Errorf("Restarts %d, LastReason %q, LastExit %+v; want 1, crash, 137", s.Restarts, s.LastReason, s.LastExit)
	}
	if !slices.Equal(s.LogTail, lines[5:]) {
		t.Errorf("LogTail = %q, want the last 20 lines", s.LogTail)
	}
	var sawBackoff bool
	for _, c := range h.history("m3dbnode") {
		if c.State == StateBackoff {
			sawBackoff = true
			if c.BackoffDelay != "0s" || !c.NextStart.Equal(t0) || c.PID != 0 || c.Healthy {
				t.Errorf("backoff status %+v, want an immediate restart", c)
			}
		}
	}
	if !sawBackoff {
		t.Error("OnChange never reported the backoff")
	}
	if got, want := h.restartEvents(), []restartEvent{{"m3dbnode", ReasonCrash}}; !slices.Equal(got, want) {
		t.Errorf("OnRestart calls %v, want %v", got, want)
	}
	if n := len(h.rt.since(0, "m3sup-m3coordinator")); n != 2 {
		t.Errorf("m3coordinator got %d calls, want run and wait only", n)
	}
}

func TestCrashLoopBackoffGrows(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, nil)
	h.start(comp("m3dbnode", "h1"))

	const crashes = 6
	for i := 1; i <= crashes; i++ {
		s := h.waitRuns("m3dbnode", id, i)
		if s.State != StateRunning {
			t.Fatalf("run %d: state %s", i, s.State)
		}
		h.rt.crash(t, id, 2)
	}
	s := h.waitRuns("m3dbnode", id, crashes+1)
	if s.State != StateRunning || s.Restarts != crashes {
		t.Errorf("after %d crashes: state %s, %d restarts", crashes, s.State, s.Restarts)
	}

	// One backoff status per crash, told apart by its restart count.
	type step struct {
		State State
		Delay time.Duration
	}
	got := map[int]step{}
	for _, c := range h.history("m3dbnode") {
		if c.State == StateBackoff || c.State == StateCrashLoop {
			if c.BackoffDelay == "" {
				t.Errorf("backoff status without a delay: %+v", c)
			}
			got[c.Restarts] = step{c.State, c.NextStart.Sub(c.StateSince)}
		}
	}
	ms := time.Millisecond
	want := map[int]step{
		1: {StateBackoff, 0},
		2: {StateBackoff, 5 * ms},
		3: {StateCrashLoop, 10 * ms},
		4: {StateCrashLoop, 20 * ms},
		5: {StateCrashLoop, 40 * ms},
		6: {StateCrashLoop, 40 * ms}, // capped at Max
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("backoff by restart = %v, want %v", got, want)
	}
	events := h.restartEvents()
	if len(events) != crashes {
		t.Errorf("OnRestart called %d times, want %d", len(events), crashes)
	}
	for _, e := range events {
		if e != (restartEvent{"m3dbnode", ReasonCrash}) {
			t.Errorf("OnRestart(%v), want m3dbnode crash", e)
		}
	}
}

func TestRunFailsThenSucceeds(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, nil)
	h.rt.failRun(id, errBoom, errBoom)
	h.start(comp("m3dbnode", "h1"))

	s := h.waitRuns("m3dbnode", id, 3)
	if s.State != StateRunning || s.PID == 0 || s.Restarts != 2 || s.LastReason != ReasonCrash || s.Message != "" || s.LastExit != nil {
		t.Errorf("after two failed starts: %+v", s)
	}
	// Run, Remove (of whatever the failed Run left), twice; then Run and Wait.
	want := []string{"run " + id, "remove " + id, "run " + id, "remove " + id, "run " + id, "wait " + id}
	if got := ops(h.rt.since(0, id)); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	var delays []string
	for _, c := range h.history("m3dbnode") {
		if c.State == StateBackoff {
			delays = append(delays, c.BackoffDelay)
			if !strings.Contains(c.Message, "start failed") || !strings.Contains(c.Message, errBoom.Error()) {
				t.Errorf("backoff message %q does not tell the start failed", c.Message)
			}
		}
	}
	if want := []string{"0s", "5ms"}; !slices.Equal(slices.Compact(delays), want) {
		t.Errorf("backoff delays %q, want %q", delays, want)
	}
}

// gate is a planned-restart gate the test opens.
type gate struct {
	sig     *signal
	calls   atomic.Int32
	release chan struct{}
}

func newGate(sig *signal) *gate { return &gate{sig: sig, release: make(chan struct{})} }

func (g *gate) check(ctx context.Context) error {
	g.calls.Add(1)
	g.sig.poke()
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestPlannedRestart(t *testing.T) {
	const id = "m3sup-m3dbnode"
	tests := []struct {
		name   string
		change func(*Component)
		reason string
	}{
		{"spec change", func(c *Component) { c.Hash = "h2" }, ReasonSpec},
		{"manual restart", func(c *Component) { c.RestartGeneration++ }, ReasonManual},
		{"spec change and manual restart", func(c *Component) { c.Hash = "h2"; c.RestartGeneration++ }, ReasonSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			g := newGate(h.sig)
			db, coord := comp("m3dbnode", "h1"), comp("m3coordinator", "hc")
			db.Gate = g.check
			h.start(db, coord)
			old := h.waitState("m3dbnode", StateRunning)
			h.waitState("m3coordinator", StateRunning)
			if n := g.calls.Load(); n != 0 {
				t.Fatalf("gate called %d times for a fresh start", n)
			}

			m := h.rt.mark()
			next := db
			tt.change(&next)
			next.Version = "v-next"
			h.update(next, coord)

			s := h.waitState("m3dbnode", StateWaiting)
			h.waitFor("the gate", func() bool { return g.calls.Load() > 0 })
			if s.PID != old.PID || !strings.Contains(s.Message, tt.reason) {
				t.Errorf("waiting status %+v", s)
			}
			if calls := h.rt.since(m, id); len(calls) != 0 {
				t.Fatalf("calls while the gate is closed: %q", ops(calls))
			}

			close(g.release)
			s = h.waitRuns("m3dbnode", id, 2)
			if got, want := ops(h.rt.since(m, id)), []string{"stop " + id, "run " + id, "wait " + id}; !slices.Equal(got, want) {
				t.Errorf("calls = %q, want %q", got, want)
			}
			if c := h.rt.since(m, id)[0]; c.Timeout != db.StopTimeout {
				t.Errorf("stop timeout %s, want %s", c.Timeout, db.StopTimeout)
			}
			if run := h.rt.since(m, id)[1]; run.Labels[runtime.LabelSpecHash] != next.Hash {
				t.Errorf("ran hash %q, want %q", run.Labels[runtime.LabelSpecHash], next.Hash)
			}
			if s.State != StateRunning || s.PID == old.PID || s.SpecHash != next.Hash || s.Restarts != 1 || s.Version != "v-next" ||
				s.LastReason != tt.reason || s.Message != "restarted: "+tt.reason {
				t.Errorf("after the restart: %+v", s)
			}
			if got, want := h.waitRestarts(1), []restartEvent{{"m3dbnode", tt.reason}}; !slices.Equal(got, want) {
				t.Errorf("OnRestart calls %v, want %v", got, want)
			}
			h.assertUntouched(coord, m)
			if n := g.calls.Load(); n != 1 {
				t.Errorf("gate called %d times, want 1", n)
			}
		})
	}
}

func TestIdenticalUpdateDoesNothing(t *testing.T) {
	h := newHarness(t, nil)
	g := newGate(h.sig)
	db, coord := comp("m3dbnode", "h1"), comp("m3coordinator", "hc")
	db.Gate = g.check
	h.start(db, coord)
	h.waitState("m3dbnode", StateRunning)
	h.waitState("m3coordinator", StateRunning)
	changes := len(h.history("m3dbnode"))

	m := h.rt.mark()
	h.update(db, coord)
	h.update(db, coord)
	// The barrier restart of m3dbnode would pass its gate.
	close(g.release)
	h.assertUntouched(db, m)
	h.assertUntouched(coord, m)
	if n := g.calls.Load(); n != 1 {
		t.Errorf("gate called %d times, want once (for the barrier)", n)
	}
	// Nothing between the identical updates and the barrier restart.
	if next := h.history("m3dbnode")[changes]; next.State != StateWaiting {
		t.Errorf("first status change after the identical updates: %+v, want the barrier's", next)
	}
}

func TestStopAndStartAgain(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, nil)
	db := comp("m3dbnode", "h1")
	h.start(db, comp("m3coordinator", "hc"))
	h.waitState("m3dbnode", StateRunning)
	h.waitState("m3coordinator", StateRunning)

	m := h.rt.mark()
	stopped := db
	stopped.Stopped = true
	h.update(stopped)
	s := h.waitState("m3dbnode", StateStopped)
	if got, want := ops(h.rt.since(m, "")), []string{"stop " + id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if s.PID != 0 || s.Healthy || s.DesiredActive || s.Restarts != 0 {
		t.Errorf("stopped status %+v", s)
	}

	h.update(db)
	s = h.waitRuns("m3dbnode", id, 2)
	if s.State != StateRunning || s.PID == 0 || !s.DesiredActive || s.Restarts != 0 {
		t.Errorf("started again: %+v", s)
	}
	if got := h.restartEvents(); len(got) != 0 {
		t.Errorf("OnRestart called: %v", got)
	}
}

// A component stopped while it waits out a backoff stays stopped.
func TestStopDuringBackoff(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, func(o *Options) { o.Policy = slowPolicy() })
	db := comp("m3dbnode", "h1")
	h.start(db)
	h.waitRuns("m3dbnode", id, 1)
	h.rt.crash(t, id, 1)
	h.waitRuns("m3dbnode", id, 2)
	h.rt.crash(t, id, 1)
	s := h.waitState("m3dbnode", StateCrashLoop)
	if s.BackoffDelay != "1h0m0s" {
		t.Fatalf("backoff %q, want an hour", s.BackoffDelay)
	}

	stopped := db
	stopped.Stopped = true
	h.update(stopped)
	s = h.waitState("m3dbnode", StateStopped)
	if !s.NextStart.IsZero() {
		t.Errorf("a stopped component has a next start: %+v", s)
	}
	h.update(db)
	s = h.waitRuns("m3dbnode", id, 3)
	if s.State != StateRunning {
		t.Errorf("started again: %+v", s)
	}
}

// A component in a long backoff whose spec changes starts at once.
func TestNewSpecEndsBackoff(t *testing.T) {
	const id = "m3sup-m3dbnode"
	// Each brings the component into a one-hour backoff (slowPolicy).
	tests := []struct {
		name      string
		failedRun int // Runs that fail
		crashes   int // started processes that crash
	}{
		{name: "crash loop", crashes: 2},
		{name: "start keeps failing", failedRun: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.Policy = slowPolicy() })
			for range tt.failedRun {
				h.rt.failRun(id, errBoom)
			}
			db := comp("m3dbnode", "h1")
			h.start(db)
			for i := 1; i <= tt.crashes; i++ {
				h.waitRuns("m3dbnode", id, i)
				h.rt.crash(t, id, 1)
			}
			s := h.waitState("m3dbnode", StateCrashLoop)
			if s.BackoffDelay != "1h0m0s" || !s.NextStart.Equal(t0.Add(time.Hour)) {
				t.Fatalf("backoff %q next start %s, want an hour", s.BackoffDelay, s.NextStart)
			}

			next := db
			next.Hash = "h2"
			h.update(next)
			s = h.waitRuns("m3dbnode", id, 3)
			if s.State != StateRunning || s.SpecHash != "h2" || !s.NextStart.IsZero() || s.BackoffDelay != "" {
				t.Errorf("after the new spec: %+v", s)
			}
			// The new spec starts with a clean record: its first crash restarts at once.
			h.rt.crash(t, id, 1)
			s = h.waitRuns("m3dbnode", id, 4)
			if s.State != StateRunning {
				t.Errorf("after the new spec's first crash: %+v", s)
			}
		})
	}
}

// A newer desired state that arrives while the gate is closed decides what
// happens once it opens.
func TestGateSupersededByNewerUpdate(t *testing.T) {
	const id = "m3sup-m3dbnode"
	tests := []struct {
		name      string
		newer     func(*Component)
		wantCalls []string
		wantState State
		wantHash  string
	}{
		{"stopped meanwhile", func(c *Component) { c.Stopped = true }, []string{"stop " + id}, StateStopped, "h1"},
		{"reverted meanwhile", func(c *Component) {}, nil, StateRunning, "h1"},
		{"changed again meanwhile", func(c *Component) { c.Hash = "h3" }, []string{"stop " + id, "run " + id, "wait " + id}, StateRunning, "h3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			g := newGate(h.sig)
			db := comp("m3dbnode", "h1")
			db.Gate = g.check
			h.start(db)
			h.waitState("m3dbnode", StateRunning)

			m := h.rt.mark()
			next := db
			next.Hash = "h2"
			h.update(next)
			h.waitState("m3dbnode", StateWaiting)
			newer := db
			tt.newer(&newer)
			h.update(newer)
			close(g.release)

			h.assertSettled(t, "m3dbnode", m, tt.wantCalls, tt.wantState)
			s := h.status("m3dbnode")
			if s.SpecHash != tt.wantHash {
				t.Errorf("running hash %q, want %q", s.SpecHash, tt.wantHash)
			}
			// The restart permit's holder relies on this: once the
			// loop has settled on a running process, the status says it
			// runs the desired spec and is healthy again.
			if tt.wantState == StateRunning && (!s.Healthy || s.SpecHash != s.DesiredHash || !s.DesiredActive) {
				t.Errorf("settled running status is not healthy on the desired spec: %+v", s)
			}
		})
	}
}

// assertSettled waits until name's loop has taken every Update and reached
// state, then checks the calls for its container since m.
func (h *harness) assertSettled(t *testing.T, name string, m int, wantCalls []string, state State) {
	t.Helper()
	id := "m3sup-" + name
	h.waitFor(fmt.Sprintf("%s %s after %q", name, state, wantCalls), func() bool {
		h.ag.mu.Lock()
		drained := len(h.ag.mailbox[name]) == 0
		h.ag.mu.Unlock()
		return drained && h.reported(name).State == state && len(h.rt.since(m, id)) >= len(wantCalls)
	})
	if got := ops(h.rt.since(m, id)); !slices.Equal(got, wantCalls) {
		t.Errorf("calls = %q, want %q", got, wantCalls)
	}
}

func TestHealthy(t *testing.T) {
	var healthy atomic.Bool
	var checks atomic.Int32
	h := newHarness(t, nil)
	db := comp("m3dbnode", "h1")
	db.Healthy = func(ctx context.Context) error {
		checks.Add(1)
		h.sig.poke()
		if healthy.Load() {
			return nil
		}
		return errBoom
	}
	h.start(db, comp("m3coordinator", "hc"))
	h.waitFor("two failed health checks", func() bool { return checks.Load() >= 2 })
	if s := h.status("m3dbnode"); s.State != StateRunning || s.Healthy {
		t.Errorf("before the health check passes: %+v", s)
	}
	if s := h.waitState("m3coordinator", StateRunning); !s.Healthy {
		t.Errorf("a component without a health check is not healthy: %+v", s)
	}

	healthy.Store(true)
	h.waitFor("m3dbnode healthy", func() bool { return h.reported("m3dbnode").Healthy })

	// A crash makes it unhealthy until the restarted process passes again.
	m3 := checks.Load()
	h.rt.crash(t, "m3sup-m3dbnode", 1)
	h.waitRuns("m3dbnode", "m3sup-m3dbnode", 2)
	h.waitFor("m3dbnode healthy again", func() bool { return checks.Load() > m3 && h.reported("m3dbnode").Healthy })
	var sawUnhealthy bool
	for _, s := range h.history("m3dbnode")[1:] {
		sawUnhealthy = sawUnhealthy || (s.State == StateBackoff && !s.Healthy)
	}
	if !sawUnhealthy {
		t.Error("the crash did not make m3dbnode unhealthy")
	}
}

func TestShutdown(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("KeepRunning=%v", keep), func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.KeepRunning = keep })
			stopped := comp("m3query", "hq")
			stopped.Stopped = true
			h.start(comp("m3dbnode", "h1"), comp("m3coordinator", "hc"), stopped)
			h.waitState("m3dbnode", StateRunning)
			h.waitState("m3coordinator", StateRunning)
			h.waitState("m3query", StateStopped)

			m := h.rt.mark()
			if err := h.stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			var stops []string
			for _, c := range h.rt.since(m, "") {
				if c.Op != "stop" {
					t.Errorf("unexpected %s during shutdown", c)
				}
				stops = append(stops, c.ID)
			}
			slices.Sort(stops)
			want := []string{"m3sup-m3coordinator", "m3sup-m3dbnode"}
			if keep {
				want = nil
			}
			if !slices.Equal(stops, want) {
				t.Errorf("stopped %q, want %q", stops, want)
			}
			for _, s := range h.ag.Statuses() {
				if s.State != StateStopped {
					t.Errorf("%s: %s after shutdown", s.Name, s.State)
				}
			}
			for _, id := range []string{"m3sup-m3coordinator", "m3sup-m3dbnode"} {
				if h.rt.exists(id) != keep {
					t.Errorf("%s exists = %v after shutdown, want %v", id, h.rt.exists(id), keep)
				}
			}
		})
	}
}

func TestPortInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()

	tests := []struct {
		name    string
		adopt   bool // a running container of the component exists (it holds the port)
		stopped bool
		wantErr bool
	}{
		{name: "fresh start", wantErr: true},
		{name: "adopted", adopt: true},
		{name: "stopped", stopped: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			db := comp("m3dbnode", "h1")
			db.Listen = []string{addr}
			db.Stopped = tt.stopped
			if tt.adopt {
				h.rt.seed(runtime.Status{ID: db.Spec.ID, State: runtime.StateRunning, PID: 4242, Labels: map[string]string{
					runtime.LabelOwner: runtime.OwnerValue, runtime.LabelComponent: db.Name, runtime.LabelSpecHash: db.Hash}})
			}
			h.start(db, comp("m3coordinator", "hc"))
			if !tt.wantErr {
				h.waitState("m3coordinator", StateRunning)
				want := StateRunning
				if tt.stopped {
					want = StateStopped
				}
				if s := h.waitState("m3dbnode", want); s.Adopted != tt.adopt {
					t.Errorf("m3dbnode: %+v", s)
				}
				return
			}
			err := h.wait()
			if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "m3dbnode") {
				t.Fatalf("Run = %v, want an error naming m3dbnode and %s", err, addr)
			}
			if n := h.rt.count("run", ""); n != 0 {
				t.Errorf("%d containers started", n)
			}
		})
	}
}

func TestUpdateUnknownComponent(t *testing.T) {
	h := newHarness(t, nil)
	db := comp("m3dbnode", "h1")
	h.start(db)
	h.waitState("m3dbnode", StateRunning)

	db.RestartGeneration++
	err := h.ag.Update([]Component{comp("m3query", "hq"), db})
	if err == nil || !strings.Contains(err.Error(), "m3query") {
		t.Fatalf("Update = %v, want an error naming m3query", err)
	}
	// The known component still gets its update.
	s := h.waitRuns("m3dbnode", "m3sup-m3dbnode", 2)
	if s.LastReason != ReasonManual {
		t.Errorf("after the manual restart: %+v", s)
	}
	if _, ok := h.ag.Status("m3query"); ok {
		t.Error("the unknown component got a status")
	}
}

// A gate that refuses (the rollout was halted elsewhere) and a desired
// state that meanwhile goes back to what runs: the component is running
// again, never left showing waiting, and nothing restarted.
func TestGateRefusedThenReverted(t *testing.T) {
	const id = "m3sup-m3dbnode"
	h := newHarness(t, nil)
	var refused atomic.Int32
	db := comp("m3dbnode", "h1")
	db.Gate = func(context.Context) error {
		refused.Add(1)
		h.sig.poke()
		return errors.New("rollout halted")
	}
	h.start(db)
	h.waitState("m3dbnode", StateRunning)

	m := h.rt.mark()
	next := db
	next.Hash = "h2"
	h.update(next)
	h.waitFor("the gate to refuse", func() bool { return refused.Load() > 0 })
	h.update(db)
	h.assertSettled(t, "m3dbnode", m, nil, StateRunning)
	if s := h.status("m3dbnode"); s.SpecHash != "h1" || s.DesiredHash != "h1" || s.Message != "" {
		t.Errorf("after the revert: %+v", s)
	}
}

// TestCrashReason: the reason of an exit comes from this run's output only
// (a crash of an earlier run in the same log file is not this one's), is
// the status message and LastExit.Reason, and keeps the log tail; a plain
// exit keeps its code and names the signal of a kill.
func TestCrashReason(t *testing.T) {
	const id = "m3sup-m3dbnode"
	logPath := filepath.Join(t.TempDir(), "m3dbnode.log")
	oldCrash := "panic: an earlier run's crash\n\ngoroutine 1 [running]:\nmain.old()\n"
	if err := os.WriteFile(logPath, []byte(oldCrash), 0o600); err != nil {
		t.Fatal(err)
	}
	var seen [][]byte
	var mu sync.Mutex
	h := newHarness(t, func(o *Options) {
		o.CrashReason = func(out []byte) (string, bool) {
			mu.Lock()
			seen = append(seen, append([]byte(nil), out...))
			mu.Unlock()
			if i := strings.Index(string(out), "panic: "); i >= 0 {
				line, _, _ := strings.Cut(string(out[i:]), "\n")
				return line, true
			}
			return "", false
		}
	})
	db := comp("m3dbnode", "h1")
	db.Spec.LogPath = logPath
	h.start(db)
	h.waitState("m3dbnode", StateRunning)

	// This run's output: a few lines, then a Go crash.
	appendLog := func(s string) {
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	appendLog("starting\npanic: runtime error: index out of range [61] with length 2\n\ngoroutine 7 [running]:\n")
	h.rt.crash(t, id, 2)
	s := h.waitRuns("m3dbnode", id, 2)
	want := "panic: runtime error: index out of range [61] with length 2"
	if s.LastExit == nil || s.LastExit.Reason != want || s.LastExit.Code != 2 || len(s.LastExit.LogTail) == 0 {
		t.Fatalf("LastExit = %+v; want reason %q with the log tail", s.LastExit, want)
	}
	mu.Lock()
	if len(seen) != 1 || strings.Contains(string(seen[0]), "earlier run") || !strings.HasPrefix(string(seen[0]), "starting\n") {
		t.Errorf("CrashReason saw %q; want this run's output only", seen)
	}
	mu.Unlock()
	var sawMsg bool
	for _, c := range h.history("m3dbnode") {
		sawMsg = sawMsg || (c.State == StateBackoff && c.Message == want)
	}
	if !sawMsg {
		t.Error("the backoff status never carried the crash reason")
	}

	// The next run is killed: no Go crash in its output.
	appendLog("second run\n")
	h.rt.crash(t, id, 137)
	s = h.waitRuns("m3dbnode", id, 3)
	if s.LastExit == nil || s.LastExit.Reason != "exited with code 137 (killed by SIGKILL)" {
		t.Errorf("LastExit = %+v; want the kill named", s.LastExit)
	}
}

// TestCrashReasonAcrossRotation: a run whose log was rotated (copied to
// .1 and truncated) while it ran still hands CrashReason its whole output:
// the part in .1 since it started, then the live file.
func TestCrashReasonAcrossRotation(t *testing.T) {
	const id = "m3sup-m3dbnode"
	logPath := filepath.Join(t.TempDir(), "m3dbnode.log")
	if err := os.WriteFile(logPath, []byte("panic: an earlier run's crash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	h := newHarness(t, func(o *Options) {
		o.CrashReason = func(out []byte) (string, bool) {
			seen <- string(out)
			return "", false
		}
	})
	db := comp("m3dbnode", "h1")
	db.Spec.LogPath = logPath
	h.start(db)
	h.waitState("m3dbnode", StateRunning)
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0) // as the shim holds it
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("starting\n" + strings.Repeat("busy\n", 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := logrotate.Rotate(logPath, logrotate.Policy{MaxSize: 4096, MaxFiles: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("panic: after the rotation\n"); err != nil {
		t.Fatal(err)
	}
	h.rt.crash(t, id, 2)
	select {
	case out := <-seen:
		if !strings.HasPrefix(out, "starting\n") || !strings.HasSuffix(out, "busy\npanic: after the rotation\n") {
			t.Fatalf("CrashReason saw %d bytes starting %q; want this run's output from both files", len(out), out[:min(len(out), 40)])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CrashReason was not called within 10 s")
	}
	if s := h.waitRuns("m3dbnode", id, 2); s.LastExit == nil || len(s.LastExit.LogTail) != 20 || s.LastExit.LogTail[19] != "panic: after the rotation" {
		t.Fatalf("LastExit = %+v; want a 20-line tail reaching into the rotated file", s.LastExit)
	}
}
