package restart

import (
	"testing"
	"time"
)

func TestBackoffSequence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := NewTracker(Policy{Base: time.Second, Max: 8 * time.Second, ResetAfter: time.Minute, CrashLoopAfter: 3, Jitter: 0.2, Rand: func() float64 { return 0.5 }})
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	now := t0
	for i, w := range want {
		tr.Started(now)
		now = now.Add(time.Second)
		d := tr.Exited(now)
		if d.Delay != w {
			t.Fatalf("exit %d: delay %s, want %s", i+1, d.Delay, w)
		}
		if got, wantLoop := d.CrashLoop, i+1 >= 3; got != wantLoop {
			t.Fatalf("exit %d: crashloop %v, want %v", i+1, got, wantLoop)
		}
	}
	if tr.Restarts() != len(want) {
		t.Fatalf("restarts %d", tr.Restarts())
	}
}

func TestResetAfterStableRun(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := NewTracker(Policy{Rand: func() float64 { return 0.5 }})
	for range 4 {
		tr.Started(now)
		now = now.Add(time.Second)
		tr.Exited(now)
	}
	tr.Started(now)
	now = now.Add(2 * time.Minute)
	d := tr.Exited(now)
	if d.Delay != 0 || d.Attempt != 1 || d.CrashLoop {
		t.Fatalf("after a stable run: %+v, want immediate first attempt", d)
	}
}

func TestJitterBounds(t *testing.T) {
	for _, r := range []float64{0, 0.999} {
		tr := NewTracker(Policy{Base: time.Second, Max: 30 * time.Second, Jitter: 0.2, Rand: func() float64 { return r }})
		now := time.Unix(0, 0)
		tr.Started(now)
		tr.Exited(now)
		d := tr.Exited(now)
		if d.Delay < 800*time.Millisecond || d.Delay > 1200*time.Millisecond {
			t.Fatalf("rand %v: delay %s outside ±20%% of 1s", r, d.Delay)
		}
	}
}
