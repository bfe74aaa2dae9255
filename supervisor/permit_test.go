package supervisor

import (
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
)

func TestDBNodeSettled(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		st   agent.Status
		want bool
	}{
		{"restarted and bootstrapped", agent.Status{State: agent.StateRunning, Healthy: true, StartedAt: since.Add(time.Second)}, true},
		{"still the old process", agent.Status{State: agent.StateRunning, Healthy: true, StartedAt: since.Add(-time.Second)}, false},
		{"restarted, bootstrapping", agent.Status{State: agent.StateRunning, StartedAt: since.Add(time.Second)}, false},
		{"waiting on the gate", agent.Status{State: agent.StateWaiting, Healthy: true, StartedAt: since.Add(-time.Second)}, false},
		{"crashed after restart", agent.Status{State: agent.StateBackoff, Healthy: false, StartedAt: since.Add(time.Second)}, false},
	} {
		if got := dbnodeSettled(tc.st, since); got != tc.want {
			t.Errorf("%s: dbnodeSettled = %v, want %v", tc.name, got, tc.want)
		}
	}
}
