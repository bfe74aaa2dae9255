package agent

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLiveness: a process that never answered is never dead; one that
// answered and then stays quiet is dead after exactly UnhealthyAfter; an
// answer in between starts the count again; zero UnhealthyAfter never
// kills.
func TestLiveness(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	quiet := errors.New("no answer")
	const after = 30 * time.Second
	for _, tc := range []struct {
		name  string
		after time.Duration
		steps []struct {
			at   time.Duration
			err  error
			want livenessVerdict
		}
	}{
		{"still starting: never dead", after, []struct {
			at   time.Duration
			err  error
			want livenessVerdict
		}{{0, quiet, liveAnswering}, {10 * time.Minute, quiet, liveAnswering}, {3 * time.Hour, quiet, liveAnswering}}},
		{"answered, then quiet", after, []struct {
			at   time.Duration
			err  error
			want livenessVerdict
		}{{0, nil, liveAnswering}, {5 * time.Second, quiet, liveFailing}, {34 * time.Second, quiet, liveFailing}, {35 * time.Second, quiet, liveDead}}},
		{"an answer starts the count again", after, []struct {
			at   time.Duration
			err  error
			want livenessVerdict
		}{{0, nil, liveAnswering}, {5 * time.Second, quiet, liveFailing}, {30 * time.Second, nil, liveAnswering}, {35 * time.Second, quiet, liveFailing}, {64 * time.Second, quiet, liveFailing}, {65 * time.Second, quiet, liveDead}}},
		{"zero UnhealthyAfter never kills", 0, []struct {
			at   time.Duration
			err  error
			want livenessVerdict
		}{{0, nil, liveAnswering}, {time.Second, quiet, liveFailing}, {time.Hour, quiet, liveFailing}}},
	} {
		var l liveness
		for i, s := range tc.steps {
			if got := l.observe(t0.Add(s.at), s.err, tc.after); got != s.want {
				t.Fatalf("%s: step %d at %s: verdict %d, want %d", tc.name, i, s.at, got, s.want)
			}
		}
	}
	var l liveness
	l.observe(t0, nil, after)
	l.observe(t0.Add(time.Second), quiet, after)
	if q := l.quietFor(t0.Add(11 * time.Second)); q != 10*time.Second {
		t.Fatalf("quietFor = %s, want 10s", q)
	}
}

// liveClock is a test clock that each liveness probe moves forward.
type liveClock struct{ ns atomic.Int64 }

func (c *liveClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *liveClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestUnhealthyRestart: a process that answered its liveness probe and
// then stays quiet for UnhealthyAfter is reported unhealthy at its first
// missed answer, killed after UnhealthyAfter (SIGKILL after at most
// unhealthyStopTimeout) and started again with reason "unhealthy"; the new
// process answers and is healthy.
func TestUnhealthyRestart(t *testing.T) {
	var clock liveClock
	clock.ns.Store(t0.UnixNano())
	var hung atomic.Bool
	var probes atomic.Int32
	h := newHarness(t, func(o *Options) {
		o.Now, o.LiveInterval = clock.now, time.Millisecond
	})
	db := comp("m3dbnode", "h1")
	db.StopTimeout, db.UnhealthyAfter = 30*time.Second, 30*time.Second
	db.Alive = func(ctx context.Context) error {
		probes.Add(1)
		clock.advance(10 * time.Second)
		h.sig.poke()
		if hung.Load() {
			return errBoom
		}
		return nil
	}
	h.start(db)
	h.waitFor("three answers", func() bool { return probes.Load() >= 3 })
	if err := h.ag.Observing(clock.now(), time.Minute); err != nil {
		t.Fatalf("Observing while probes run: %v", err)
	}
	hung.Store(true)
	h.waitFor("m3dbnode reported unhealthy", func() bool {
		s := h.reported("m3dbnode")
		return s.State == StateRunning && !s.Healthy && strings.Contains(s.Message, "not answering")
	})
	ev := h.waitRestarts(1)
	if ev[0] != (restartEvent{"m3dbnode", ReasonUnhealthy}) {
		t.Fatalf("restart events %v, want m3dbnode unhealthy", ev)
	}
	var stop call
	for _, c := range h.rt.since(0, db.Spec.ID) {
		if c.Op == "stop" {
			stop = c
		}
	}
	if stop.Timeout != unhealthyStopTimeout {
		t.Fatalf("stop timeout %s, want %s", stop.Timeout, unhealthyStopTimeout)
	}
	hung.Store(false)
	s := h.waitRuns("m3dbnode", db.Spec.ID, 2)
	if s.LastReason != ReasonUnhealthy || s.Restarts != 1 || s.LastExit == nil || !strings.Contains(s.LastExit.Reason, "no answer to its health check for 30s") {
		t.Fatalf("after the unhealthy restart: %+v (last exit %+v)", s, s.LastExit)
	}
	h.waitFor("the new process healthy", func() bool { s := h.reported("m3dbnode"); return s.State == StateRunning && s.Healthy })
}

// TestNeverAnsweredIsLeftAlone: a process that never answered is starting
// (a bootstrap can take hours): however long it stays quiet, it is not
// restarted.
func TestNeverAnsweredIsLeftAlone(t *testing.T) {
	var clock liveClock
	clock.ns.Store(t0.UnixNano())
	var probes atomic.Int32
	h := newHarness(t, func(o *Options) { o.Now, o.LiveInterval = clock.now, time.Millisecond })
	db := comp("m3dbnode", "h1")
	db.UnhealthyAfter = 30 * time.Second
	db.Alive = func(ctx context.Context) error {
		probes.Add(1)
		clock.advance(time.Minute)
		h.sig.poke()
		return errBoom
	}
	h.start(db)
	h.waitFor("100 unanswered probes (100 minutes)", func() bool { return probes.Load() >= 100 })
	if n := h.rt.count("run", db.Spec.ID); n != 1 || len(h.restartEvents()) != 0 {
		t.Fatalf("a process still starting was restarted: %d runs, events %v", n, h.restartEvents())
	}
}

// TestObservingStale: the watchdog's view: a running component whose loop
// stopped probing is named; one that is not running, or just started, is
// not counted.
func TestObservingStale(t *testing.T) {
	a := New(nil, Options{})
	now := t0.Add(time.Hour)
	a.status["m3dbnode"] = &Status{Name: "m3dbnode", State: StateRunning, StateSince: t0}
	a.status["m3coordinator"] = &Status{Name: "m3coordinator", State: StateBackoff, StateSince: t0}
	a.probed["m3dbnode"], a.probed["m3coordinator"] = now.Add(-10*time.Second), t0
	if err := a.Observing(now, 30*time.Second); err != nil {
		t.Fatalf("fresh probe: %v", err)
	}
	a.probed["m3dbnode"] = now.Add(-45 * time.Second)
	if err := a.Observing(now, 30*time.Second); err == nil || !strings.Contains(err.Error(), "m3dbnode has not been asked whether it is alive for 45s") {
		t.Fatalf("stale probe: %v", err)
	}
	a.status["m3dbnode"].StateSince = now.Add(-5 * time.Second) // restarted just now
	if err := a.Observing(now, 30*time.Second); err != nil {
		t.Fatalf("just started: %v", err)
	}
}
