package readiness

import (
	"fmt"

	"github.com/m3sup/m3sup/supervisor/agent"
)

// Verdict is whether this host serves M3 now.
type Verdict struct {
	Ready bool `json:"ready"`
	// Degraded: M3 was ready on this host and is not now (as opposed to
	// not ready yet).
	Degraded bool `json:"degraded"`
	// Component is the local component that keeps the host from being
	// ready, if one does.
	Component string `json:"component,omitempty"`
	// Reason is one line for people: why not ready, or what ready means.
	Reason string `json:"reason"`
}

// Judge returns the verdict. everReady: M3's cluster set-up finished once;
// setup describes the set-up while it has not (the daemon's phase line);
// comps are the local components' statuses.
func Judge(everReady bool, setup string, comps []agent.Status) Verdict {
	name, problem := firstProblem(comps)
	switch {
	case !everReady && problem != "":
		return Verdict{Component: name, Reason: "M3 never became ready on this host: " + problem}
	case !everReady:
		if setup == "" {
			setup = "starting"
		}
		return Verdict{Reason: "M3 never became ready on this host: " + setup}
	case problem != "":
		return Verdict{Degraded: true, Component: name, Reason: "degraded: M3 was ready, now " + problem}
	}
	return Verdict{Ready: true, Reason: "M3 accepts writes"}
}

// firstProblem names the first component, by status order, that is not
// running and healthy, and says how it is.
func firstProblem(comps []agent.Status) (name, problem string) {
	for _, c := range comps {
		if p := problemOf(c); p != "" {
			return c.Name, c.Name + " " + p
		}
	}
	return "", ""
}

// problemOf says why c does not serve, or "" when it does.
func problemOf(c agent.Status) string {
	if c.State == agent.StateRunning {
		if c.Healthy {
			return ""
		}
		if c.Name == "m3dbnode" {
			return "is running, not bootstrapped yet"
		}
		return "is running, not healthy yet"
	}
	p := string(c.State)
	switch c.State {
	case agent.StateBackoff, agent.StateCrashLoop:
		if c.Message != "" {
			p += ": " + c.Message
		}
		if c.BackoffDelay != "" {
			p += fmt.Sprintf(" (%d restarts, next try in %s)", c.Restarts, c.BackoffDelay)
		}
	case agent.StateStarting:
	default: // waiting, stopping, stopped
		if c.Message != "" {
			p += ": " + c.Message
		}
	}
	return p
}
