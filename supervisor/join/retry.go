package join

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Joins that wait their turn. Several hosts started at once (`m3sup run
// --join` on a fleet) reach the join endpoint together; etcd admits one
// learner at a time, so all but one hear "another host is joining" (503)
// until the admitted one has started its member and been promoted. Such a
// refusal, and an endpoint that is not up yet, rate limits, or does not
// answer, is transient: the Joiner tries again with a jittered backoff
// until cluster.joinTimeout. A refusal that another try cannot change (a
// bad, expired or used-up token, a CA that is not the pinned one, a name
// in use, a bad request) is permanent and returned at once.

// Defaults of the Joiner's retries.
const (
	// DefaultJoinWait is how long a Joiner keeps trying (cluster.joinTimeout).
	DefaultJoinWait = 10 * time.Minute
	// DefaultAttemptTimeout bounds one join request.
	DefaultAttemptTimeout = 2 * time.Minute
)

// DefaultBackoff: 1 s doubling to 15 s, with equal jitter.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 15 * time.Second}

// Backoff is an exponential backoff with equal jitter: after failed
// attempt n (1-based) the ceiling is Initial·2^(n-1), capped at Max, and
// the wait is uniform in [ceiling/2, ceiling). Half the ceiling keeps
// hosts from hammering; the random half spreads hosts that failed together.
type Backoff struct {
	Initial, Max time.Duration
}

// Delay is the wait after failed attempt n, given r uniform in [0, 1).
// It is pure: the caller supplies the randomness.
func (b Backoff) Delay(attempt int, r float64) time.Duration {
	if b.Initial <= 0 || b.Max <= 0 {
		b = DefaultBackoff
	}
	ceil := b.Initial
	for i := 1; i < attempt && ceil < b.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.Max)
	r = min(max(r, 0), 1)
	return ceil/2 + time.Duration(r*float64(ceil/2))
}

// Refusal is what a failed join attempt means for the next one.
type Refusal struct {
	// Transient: another attempt may succeed (the cluster is admitting
	// another host, the endpoint is busy, unreachable or rate limiting).
	Transient bool
	// Reason is a short phrase for the log: "another host is joining".
	Reason string
	// RetryAfter is the earliest next attempt the endpoint asked for.
	RetryAfter time.Duration
}

// Classify says whether err, from Join, is worth another try, and why in
// words a person can act on. Refusals of the token or the pinned CA
// (ErrRefused), 4xx answers other than 429, and errors of no known
// transient kind (a server that speaks no TLS, an undecodable answer) are
// permanent.
func Classify(err error) Refusal {
	var se *StatusError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case err == nil:
		return Refusal{}
	case errors.Is(err, ErrRefused):
		return Refusal{Reason: "refused"}
	case errors.As(err, &se):
		switch se.Code {
		case http.StatusTooManyRequests:
			return Refusal{Transient: true, Reason: "the join endpoint rate-limits this host", RetryAfter: se.RetryAfter}
		case http.StatusServiceUnavailable:
			if strings.Contains(se.Message, "another host is joining") || strings.Contains(se.Message, "learner") {
				return Refusal{Transient: true, Reason: "another host is joining", RetryAfter: se.RetryAfter}
			}
			return Refusal{Transient: true, Reason: "the cluster cannot admit a host right now (etcd busy)", RetryAfter: se.RetryAfter}
		case http.StatusBadGateway, http.StatusGatewayTimeout:
			return Refusal{Transient: true, Reason: "the join endpoint is busy", RetryAfter: se.RetryAfter}
		}
		return Refusal{Reason: strings.ToLower(http.StatusText(se.Code))}
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refusal{Transient: true, Reason: "the join endpoint is not listening (not started yet?)"}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ETIMEDOUT):
		return Refusal{Transient: true, Reason: "the join endpoint is unreachable"}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Refusal{Transient: true, Reason: "the join endpoint closed the connection"}
	case errors.As(err, &dns):
		// A host may boot before its resolver works; a misspelt name
		// keeps failing until the deadline, saying so at every attempt.
		return Refusal{Transient: true, Reason: "cannot resolve the join endpoint's name"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Refusal{Transient: true, Reason: "the join endpoint did not answer in time"}
	}
	return Refusal{Reason: "failed"}
}

// retryStep is what the Joiner does after a failed attempt.
type retryStep struct {
	Retry bool
	Wait  time.Duration
	Why   Refusal
}

// nextStep decides, purely, what follows failed attempt n (1-based) with
// err at now: a permanent refusal stops; a transient one waits the
// backoff's delay (at least the endpoint's Retry-After), unless the next
// attempt would start after deadline.
func nextStep(b Backoff, attempt int, err error, now, deadline time.Time, r float64) retryStep {
	why := Classify(err)
	if !why.Transient {
		return retryStep{Why: why}
	}
	wait := max(b.Delay(attempt, r), why.RetryAfter)
	if !now.Add(wait).Before(deadline) {
		return retryStep{Why: why, Wait: wait}
	}
	return retryStep{Retry: true, Wait: wait, Why: why}
}

// retryLine is the log line of a transient refusal.
func retryLine(s retryStep, attempt int, deadline time.Time) string {
	return fmt.Sprintf("join refused: %s; retrying in %s (attempt %d, gives up at %s)",
		s.Why.Reason, s.Wait.Round(100*time.Millisecond), attempt, deadline.Format(time.TimeOnly))
}
