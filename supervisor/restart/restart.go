package restart

import (
	"math/rand/v2"
	"time"
)

// Policy configures a Tracker. The zero value is usable: Defaults fill it.
type Policy struct {
	// Base is the second restart's delay; the first restart is immediate.
	Base time.Duration
	// Max caps the delay.
	Max time.Duration
	// ResetAfter: a run at least this long forgets earlier failures.
	ResetAfter time.Duration
	// CrashLoopAfter consecutive quick failures mark a crash loop.
	CrashLoopAfter int
	// Jitter is the ± fraction applied to delays (0.2 = ±20%).
	Jitter float64
	// Rand returns a value in [0,1); nil uses math/rand/v2.
	Rand func() float64
}

// DefaultPolicy: immediate, then 1s doubling to 30s; reset after 60s up.
func DefaultPolicy() Policy {
	return Policy{Base: time.Second, Max: 30 * time.Second, ResetAfter: time.Minute, CrashLoopAfter: 3, Jitter: 0.2}
}

// Decision is what to do after an exit.
type Decision struct {
	Delay     time.Duration // wait this long before starting again
	Attempt   int           // consecutive failures including this one
	CrashLoop bool          // the component keeps failing
}

// Tracker records one component's runs. Not safe for concurrent use.
type Tracker struct {
	p         Policy
	failures  int
	startedAt time.Time
	restarts  int
}

// NewTracker returns a tracker; zero fields of p take DefaultPolicy values.
func NewTracker(p Policy) *Tracker {
	d := DefaultPolicy()
	if p.Base <= 0 {
		p.Base = d.Base
	}
	if p.Max <= 0 {
		p.Max = d.Max
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = d.ResetAfter
	}
	if p.CrashLoopAfter <= 0 {
		p.CrashLoopAfter = d.CrashLoopAfter
	}
	if p.Jitter < 0 || p.Jitter >= 1 {
		p.Jitter = d.Jitter
	}
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
	return &Tracker{p: p}
}

// Started records that the process started at now.
func (t *Tracker) Started(now time.Time) { t.startedAt = now }

// Exited records an unplanned exit at now and returns the decision.
func (t *Tracker) Exited(now time.Time) Decision {
	if !t.startedAt.IsZero() && now.Sub(t.startedAt) >= t.p.ResetAfter {
		t.failures = 0
	}
	t.failures++
	t.restarts++
	d := Decision{Attempt: t.failures, CrashLoop: t.failures >= t.p.CrashLoopAfter}
	if t.failures == 1 {
		return d // the first restart is immediate
	}
	delay := t.p.Base
	for i := 2; i < t.failures && delay < t.p.Max; i++ {
		delay *= 2
	}
	if delay > t.p.Max {
		delay = t.p.Max
	}
	// ±Jitter, never above Max.
	f := 1 + t.p.Jitter*(2*t.p.Rand()-1)
	delay = time.Duration(float64(delay) * f)
	if delay > t.p.Max {
		delay = t.p.Max
	}
	d.Delay = delay
	return d
}

// Restarts is the number of unplanned restarts so far.
func (t *Tracker) Restarts() int { return t.restarts }

// Failures is the current count of consecutive failures.
func (t *Tracker) Failures() int { return t.failures }
