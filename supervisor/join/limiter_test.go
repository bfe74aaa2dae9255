package join

import (
	"net/netip"
	"testing"
	"time"
)

// TestLimiter steps the per-source limiter with a fake clock: the bucket
// refills at its rate; refusals lock out with a doubling backoff capped at
// MaxBackoff; a success resets the count; beyond MaxSources new sources
// share one bucket until idle ones are forgotten.
func TestLimiter(t *testing.T) {
	l := newLimiter(Limits{Burst: 2, Every: time.Second, FailAfter: 2, FailBackoff: time.Second, MaxBackoff: 4 * time.Second,
		LogEvery: time.Second, MaxSources: 2, Idle: time.Minute})
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("::ffff:10.0.0.3")
	now := time.Unix(1_000_000, 0)
	step := func(d time.Duration) { now = now.Add(d) }
	allow := func(x netip.Addr) bool { ok, _ := l.allow(x, now); return ok }

	if !allow(a) || !allow(a) || allow(a) {
		t.Fatal("burst of 2 not enforced")
	}
	if _, wait := l.allow(a, now); wait != time.Second {
		t.Fatalf("wait %s, want 1s", wait)
	}
	step(500 * time.Millisecond)
	if allow(a) {
		t.Fatal("half a token allowed an attempt")
	}
	step(time.Second)
	if !allow(a) {
		t.Fatal("no refill after 1.5 s")
	}

	// Refusals: the 2nd in a row locks b out for 1 s, the 3rd for 2 s,
	// then 4 s (the cap), and stays at the cap.
	for i, want := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		l.fail(b, now)
		_, wait := l.allow(b, now)
		if want > 0 && wait != want {
			t.Fatalf("refusal %d: locked for %s, want %s", i+1, wait, want)
		}
		step(want)
	}
	l.succeed(b, now)
	step(10 * time.Second)
	l.fail(b, now)
	if !allow(b) {
		t.Fatal("one refusal after a success locked the source out")
	}

	// A third source beyond MaxSources shares the overflow bucket; once a
	// and b have been idle for a minute, it gets its own.
	if !allow(c) || l.sources[overflow] == nil {
		t.Fatal("third source not in the overflow bucket")
	}
	step(2 * time.Minute)
	if !allow(c) || l.sources[c.Unmap()] == nil || len(l.sources) > 2 {
		t.Fatalf("after idle sources were forgotten: %d sources, c tracked %t", len(l.sources), l.sources[c.Unmap()] != nil)
	}

	// Log sampling: first line at once, then one per LogEvery with the count.
	if ok, n := l.sampleLog(a, now); !ok || n != 0 {
		t.Fatal("first refusal not logged")
	}
	for range 3 {
		if ok, _ := l.sampleLog(a, now); ok {
			t.Fatal("refusal within LogEvery logged")
		}
	}
	step(time.Second)
	if ok, n := l.sampleLog(a, now); !ok || n != 3 {
		t.Fatalf("after LogEvery: logged %t with %d unlogged, want true and 3", ok, n)
	}
}
