package agent

import "time"

// liveness is one running process's record of answers to its liveness
// probe (Component.Alive), and the pure decision it feeds: the loop owns
// it and acts on the verdict.
//
//	           answer                     no answer for UnhealthyAfter
//	starting ────────► answering ◄──────► failing ──────────────────────► dead
//	(no answer yet:    (answered last)    (since the first missed answer)  (restart:
//	 never dead)                                                           "unhealthy")
//
// A process that never answered is still starting, however long it takes:
// the rollout deadline judges starts, and a bootstrap that runs for hours
// answers /health all along. Only a process that answered and then went
// quiet (stopped, deadlocked, livelocked) is declared dead.
type liveness struct {
	answered     bool      // it answered once since it started
	failingSince time.Time // zero while it answers
}

// livenessVerdict is what one probe means.
type livenessVerdict int

const (
	liveAnswering livenessVerdict = iota // answered, or still starting
	liveFailing                          // missed answers, not for long enough yet
	liveDead                             // missed answers for at least UnhealthyAfter
)

// observe records one probe at now (err: it did not answer) and returns
// the verdict, given how long a process may stay quiet (after; zero: never
// dead).
func (l *liveness) observe(now time.Time, err error, after time.Duration) livenessVerdict {
	if err == nil {
		l.answered, l.failingSince = true, time.Time{}
		return liveAnswering
	}
	if !l.answered {
		return liveAnswering
	}
	if l.failingSince.IsZero() {
		l.failingSince = now
	}
	if after > 0 && now.Sub(l.failingSince) >= after {
		return liveDead
	}
	return liveFailing
}

// quietFor is how long the process has not answered (zero while it does).
func (l *liveness) quietFor(now time.Time) time.Duration {
	if l.failingSince.IsZero() {
		return 0
	}
	return now.Sub(l.failingSince)
}
