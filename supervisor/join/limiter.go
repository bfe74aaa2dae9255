package join

import (
	"net/netip"
	"time"
)

// Limits bound how hard one source address can push the join endpoint.
// The zero value means DefaultLimits.
type Limits struct {
	// Burst attempts are allowed at once; then one per Every.
	Burst int
	Every time.Duration
	// After FailAfter refusals in a row (bad token, bad request), a source
	// is locked out for FailBackoff, doubling with every further refusal up
	// to MaxBackoff. A successful join resets it.
	FailAfter   int
	FailBackoff time.Duration
	MaxBackoff  time.Duration
	// LogEvery: refusals from one source are logged at most once per
	// LogEvery (the first at once), with the count of those not logged.
	LogEvery time.Duration
	// MaxSources bounds the sources tracked; beyond it, new sources share
	// one bucket until idle ones are forgotten (after Idle).
	MaxSources int
	Idle       time.Duration
}

// DefaultLimits: 10 attempts at once, then one every 2 s per source;
// after 5 refusals in a row, 1 s of lockout doubling to 5 min; one refusal
// log line per source per 10 s; 4096 sources tracked, forgotten after 10
// idle minutes. A host joins once, so an honest source never comes near.
var DefaultLimits = Limits{
	Burst: 10, Every: 2 * time.Second,
	FailAfter: 5, FailBackoff: time.Second, MaxBackoff: 5 * time.Minute,
	LogEvery:   10 * time.Second,
	MaxSources: 4096, Idle: 10 * time.Minute,
}

// limiter is a per-source token bucket with a refusal backoff and a log
// sampler. It is a pure decision over the times it is given; the server
// holds its lock.
type limiter struct {
	Limits
	sources map[netip.Addr]*source
}

type source struct {
	tokens     float64
	last       time.Time // last refill, and last seen
	fails      int
	lockedTill time.Time
	lastLog    time.Time
	unlogged   int
}

// overflow is the shared key of sources beyond MaxSources.
var overflow = netip.IPv6Unspecified()

func newLimiter(l Limits) *limiter {
	if l == (Limits{}) {
		l = DefaultLimits
	}
	return &limiter{Limits: l, sources: map[netip.Addr]*source{}}
}

func (l *limiter) get(a netip.Addr, now time.Time) *source {
	a = a.Unmap()
	if s, ok := l.sources[a]; ok {
		return s
	}
	if len(l.sources) >= l.MaxSources {
		for k, s := range l.sources {
			if now.Sub(s.last) > l.Idle && now.After(s.lockedTill) {
				delete(l.sources, k)
			}
		}
	}
	if len(l.sources) >= l.MaxSources {
		a = overflow
		if s, ok := l.sources[a]; ok {
			return s
		}
	}
	s := &source{tokens: float64(l.Burst), last: now}
	l.sources[a] = s
	return s
}

// allow takes one attempt for a at now; when refused it says how long to
// wait.
func (l *limiter) allow(a netip.Addr, now time.Time) (bool, time.Duration) {
	s := l.get(a, now)
	if now.Before(s.lockedTill) {
		return false, s.lockedTill.Sub(now)
	}
	if el := now.Sub(s.last); el > 0 {
		s.tokens = min(float64(l.Burst), s.tokens+float64(el)/float64(l.Every))
	}
	s.last = now
	if s.tokens < 1 {
		return false, time.Duration((1 - s.tokens) * float64(l.Every))
	}
	s.tokens--
	return true, 0
}

// locked reports whether a is locked out at now (it does not count as an
// attempt).
func (l *limiter) locked(a netip.Addr, now time.Time) bool {
	s, ok := l.sources[a.Unmap()]
	return ok && now.Before(s.lockedTill)
}

// fail records a refusal from a; from the FailAfter-th in a row on, the
// source is locked out for a doubling time.
func (l *limiter) fail(a netip.Addr, now time.Time) {
	s := l.get(a, now)
	s.fails++
	if n := s.fails - l.FailAfter; n >= 0 {
		d := l.MaxBackoff
		if n < 30 {
			d = min(l.FailBackoff<<n, l.MaxBackoff)
		}
		s.lockedTill = now.Add(d)
	}
}

// succeed resets a's refusal count.
func (l *limiter) succeed(a netip.Addr, now time.Time) { l.get(a, now).fails = 0 }

// sampleLog reports whether a refusal from a should be logged now, and how
// many refusals from it went unlogged since the last line.
func (l *limiter) sampleLog(a netip.Addr, now time.Time) (bool, int) {
	s := l.get(a, now)
	if !s.lastLog.IsZero() && now.Sub(s.lastLog) < l.LogEvery {
		s.unlogged++
		return false, 0
	}
	n := s.unlogged
	s.lastLog, s.unlogged = now, 0
	return true, n
}
