package join

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestClassify: which join failures are worth another try, and the reason
// the log gives.
func TestClassify(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &url.Error{Op: "Post", URL: "https://10.0.0.1:7443/v1/join",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}}
	}
	status := func(code int, msg string) error {
		return &StatusError{Host: "10.0.0.1:7443", Code: code, Status: fmt.Sprint(code), Message: msg}
	}
	for _, tt := range []struct {
		name      string
		err       error
		transient bool
		reason    string
	}{
		{"another host is joining", status(503, "another host is joining (etcd learner 8e9e05c52164694d (not started) is not promoted yet; etcd admits one at a time); retry in a few seconds"), true, "another host is joining"},
		{"etcd refuses a second learner", status(503, "add etcd learner (another host is joining, perhaps through another voter; retry): etcdserver: too many learner members in cluster"), true, "another host is joining"},
		{"etcd busy", status(503, "list etcd members: context deadline exceeded"), true, "the cluster cannot admit a host right now (etcd busy)"},
		{"token check unavailable", status(503, "cannot check the token now; retry"), true, "the cluster cannot admit a host right now (etcd busy)"},
		{"rate limited", &StatusError{Code: 429, Message: "too many join attempts", RetryAfter: 3 * time.Second}, true, "the join endpoint rate-limits this host"},
		{"bad gateway", status(502, ""), true, "the join endpoint is busy"},
		{"connection refused", opErr(syscall.ECONNREFUSED), true, "the join endpoint is not listening (not started yet?)"},
		{"host unreachable", opErr(syscall.EHOSTUNREACH), true, "the join endpoint is unreachable"},
		{"connection reset", opErr(syscall.ECONNRESET), true, "the join endpoint closed the connection"},
		{"EOF", fmt.Errorf("join 10.0.0.1:7443: %w", &url.Error{Op: "Post", Err: io.EOF}), true, "the join endpoint closed the connection"},
		{"DNS", &url.Error{Op: "Post", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "m3-1", IsNotFound: true}}}, true, "cannot resolve the join endpoint's name"},
		{"attempt timed out", fmt.Errorf("join 10.0.0.1:7443: %w", &url.Error{Op: "Post", Err: context.DeadlineExceeded}), true, "the join endpoint did not answer in time"},
		{"invalid token", fmt.Errorf("join 10.0.0.1:7443: join refused: invalid token: %w", ErrRefused), false, "refused"},
		{"expired or used-up token", fmt.Errorf("join 10.0.0.1:7443: join refused: invalid token: %w", ErrRefused), false, "refused"},
		{"CA hash mismatch", fmt.Errorf("join 10.0.0.1:7443: server's chain does not hold the CA the token pins: %w", ErrRefused), false, "refused"},
		{"plain http", fmt.Errorf("join http://10.0.0.1:7443: plain-HTTP join refused; use https://: %w", ErrRefused), false, "refused"},
		{"advertise mismatch", fmt.Errorf("join 10.0.0.1:7443: advertise 10.0.0.9 is not the source: %w", ErrRefused), false, "refused"},
		{"name in use", status(409, `nodeName "m3-2": an etcd member has that name`), false, "conflict"},
		{"bad request", status(400, "request: unknown field"), false, "bad request"},
		{"internal error", status(500, "issue client certificate"), false, "internal server error"},
		{"not a join endpoint", status(404, "404 page not found"), false, "not found"},
		{"not TLS", &url.Error{Op: "Post", Err: errors.New("tls: first record does not look like a TLS handshake")}, false, "failed"},
		{"certificate", &url.Error{Op: "Post", Err: x509.UnknownAuthorityError{}}, false, "failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.err)
			if got.Transient != tt.transient || got.Reason != tt.reason {
				t.Errorf("Classify(%v) = %+v; want transient %t, reason %q", tt.err, got, tt.transient, tt.reason)
			}
		})
	}
	if got := Classify(&StatusError{Code: 429, RetryAfter: 3 * time.Second}); got.RetryAfter != 3*time.Second {
		t.Errorf("429's Retry-After: %v", got.RetryAfter)
	}
}

// TestBackoffDelay: 1 s doubling to 15 s, equal jitter: the wait is in
// [ceiling/2, ceiling) and r picks the place.
func TestBackoffDelay(t *testing.T) {
	b := DefaultBackoff
	for _, tt := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 0.5, 750 * time.Millisecond},
		{1, 0.999, 999500 * time.Microsecond},
		{2, 0, time.Second},
		{2, 0.5, 1500 * time.Millisecond},
		{3, 0.6, 3200 * time.Millisecond},
		{4, 0, 4 * time.Second},
		{5, 0, 7500 * time.Millisecond}, // 16 s capped at 15 s
		{5, 1, 15 * time.Second},
		{6, 0.5, 11250 * time.Millisecond},
		{1000, 0.5, 11250 * time.Millisecond}, // no overflow
		{0, 0, 500 * time.Millisecond},        // attempt 0 is the first
		{2, -1, time.Second},                  // r out of [0,1) is clamped
		{2, 7, 2 * time.Second},
	} {
		if got := b.Delay(tt.attempt, tt.r); got != tt.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tt.attempt, tt.r, got, tt.want)
		}
	}
	if got := (Backoff{}).Delay(2, 0); got != time.Second {
		t.Errorf("zero Backoff: %v, want the default's 1s", got)
	}
	custom := Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}
	for attempt, want := range []time.Duration{0, 50, 100, 150, 150} {
		if attempt == 0 {
			continue
		}
		if got := custom.Delay(attempt, 0); got != want*time.Millisecond {
			t.Errorf("custom Delay(%d, 0) = %v, want %v", attempt, got, want*time.Millisecond)
		}
	}
}

// TestNextStep walks a join refused for now, step by step on a fake clock,
// until it gives up at the deadline; a permanent refusal stops at once.
func TestNextStep(t *testing.T) {
	busy := &StatusError{Code: 503, Message: "another host is joining"}
	t0 := time.Date(2026, 12, 4, 10, 32, 1, 0, time.UTC)
	deadline := t0.Add(time.Minute)
	now := t0
	var waits []time.Duration
	for attempt := 1; ; attempt++ {
		s := nextStep(DefaultBackoff, attempt, busy, now, deadline, 0.5)
		if !s.Why.Transient || s.Why.Reason != "another host is joining" {
			t.Fatalf("attempt %d: %+v", attempt, s)
		}
		if !s.Retry {
			if now.Add(s.Wait).Before(deadline) {
				t.Fatalf("gave up at %v with %v left", now, deadline.Sub(now))
			}
			break
		}
		waits = append(waits, s.Wait)
		now = now.Add(s.Wait)
	}
	want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 6 * time.Second,
		11250 * time.Millisecond, 11250 * time.Millisecond, 11250 * time.Millisecond, 11250 * time.Millisecond}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	// Eight waits, 56.25 s in all; a ninth would end after the deadline.
	if line := retryLine(nextStep(DefaultBackoff, 3, busy, t0, deadline, 0.2), 3, deadline); line !=
		"join refused: another host is joining; retrying in 2.4s (attempt 3, gives up at 10:33:01)" {
		t.Errorf("log line %q", line)
	}

	// The endpoint's Retry-After wins over a shorter backoff.
	limited := &StatusError{Code: 429, RetryAfter: 5 * time.Second}
	if s := nextStep(DefaultBackoff, 1, limited, t0, deadline, 0); !s.Retry || s.Wait != 5*time.Second {
		t.Errorf("429 with Retry-After 5: %+v", s)
	}
	// Permanent: no retry, no wait.
	if s := nextStep(DefaultBackoff, 1, fmt.Errorf("invalid token: %w", ErrRefused), t0, deadline, 0); s.Retry || s.Wait != 0 || s.Why.Transient {
		t.Errorf("permanent: %+v", s)
	}
}
