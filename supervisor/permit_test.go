package supervisor

import (
	"testing"

	"github.com/m3sup/m3sup/supervisor/agent"
)

func TestDBNodeSettled(t *testing.T) {
	run := func(st agent.State, healthy bool, spec, desired string) agent.Status {
		return agent.Status{State: st, Healthy: healthy, SpecHash: spec, DesiredHash: desired, DesiredActive: true}
	}
	stopped := run(agent.StateStopped, false, "new", "new")
	stopped.DesiredActive = false
	for _, tc := range []struct {
		name string
		st   agent.Status
		want bool
	}{
		{"restarted on the new spec and bootstrapped", run(agent.StateRunning, true, "new", "new"), true},
		{"restarted, still bootstrapping", run(agent.StateRunning, false, "new", "new"), false},
		{"waiting on the gate", run(agent.StateWaiting, true, "old", "new"), false},
		{"manual restart waiting on the gate (same spec)", run(agent.StateWaiting, true, "same", "same"), false},
		{"stopping for the restart", run(agent.StateStopping, false, "old", "new"), false},
		{"starting", run(agent.StateStarting, false, "new", "new"), false},
		{"crashed after the restart", run(agent.StateBackoff, false, "new", "new"), false},
		{"crash-looping", run(agent.StateCrashLoop, false, "new", "new"), false},
		{"restart called off: back to running the old spec, which is desired again", run(agent.StateRunning, true, "old", "old"), true},
		{"a newer spec arrived, not yet picked up", run(agent.StateRunning, true, "old", "newer"), false},
		{"stopped by the operator", stopped, false},
	} {
		if got := dbnodeSettled(tc.st); got != tc.want {
			t.Errorf("%s: dbnodeSettled = %v, want %v", tc.name, got, tc.want)
		}
	}
}
