package readiness

import (
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/agent"
)

func TestJudge(t *testing.T) {
	healthyDB := agent.Status{Name: "m3dbnode", State: agent.StateRunning, Healthy: true}
	healthyCo := agent.Status{Name: "m3coordinator", State: agent.StateRunning, Healthy: true}
	crashed := agent.Status{Name: "m3dbnode", State: agent.StateCrashLoop, Restarts: 7, BackoffDelay: "30s",
		Message: "panic: runtime error: index out of range [61] with length 2 in storage.(*dbShardInsertQueue).Insert"}
	for _, tc := range []struct {
		name      string
		everReady bool
		setup     string
		comps     []agent.Status
		want      Verdict
		reason    []string
	}{
		{"fetching", false, "fetching: /x.tar.gz", nil,
			Verdict{}, []string{"never became ready", "fetching: /x.tar.gz"}},
		{"never ready, db starting", false, "bootstrapping", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateStarting}},
			Verdict{Component: "m3dbnode"}, []string{"never became ready", "m3dbnode starting"}},
		{"never ready, db crash-looping", false, "bootstrapping", []agent.Status{healthyCo, crashed},
			Verdict{Component: "m3dbnode"}, []string{"never became ready", "m3dbnode crash-loop: panic: runtime error", "7 restarts, next try in 30s"}},
		{"never ready, every component healthy", false, "bootstrapping: waiting for shards", []agent.Status{healthyCo, healthyDB},
			Verdict{}, []string{"bootstrapping: waiting for shards"}},
		{"ready", true, "ready", []agent.Status{healthyCo, healthyDB},
			Verdict{Ready: true}, []string{"M3 accepts writes"}},
		{"ready with no components (none known yet)", true, "ready", nil, Verdict{Ready: true}, nil},
		{"degraded: crash-loop", true, "ready", []agent.Status{healthyCo, crashed},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"degraded", "m3dbnode crash-loop: panic"}},
		{"degraded: backoff", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateBackoff, Message: "exited with code 137 (killed by SIGKILL)", BackoffDelay: "0s", Restarts: 1}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode backoff: exited with code 137 (killed by SIGKILL) (1 restarts, next try in 0s)"}},
		{"degraded: restarted, not bootstrapped", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateRunning}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode is running, not bootstrapped yet"}},
		{"degraded: coordinator unhealthy", true, "ready", []agent.Status{{Name: "m3coordinator", State: agent.StateRunning}, healthyDB},
			Verdict{Degraded: true, Component: "m3coordinator"}, []string{"m3coordinator is running, not healthy yet"}},
		{"degraded: stopped by the operator", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateStopped, Message: "stopped by the operator"}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode stopped: stopped by the operator"}},
		{"degraded: waiting for a planned restart", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateWaiting, Healthy: true, Message: "planned restart (spec-change) waits for the cluster to afford it"}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode waiting: planned restart"}},
		{"degraded: stopping", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateStopping, Message: "planned restart"}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode stopping: planned restart"}},
		{"degraded: starting", true, "ready", []agent.Status{healthyCo, {Name: "m3dbnode", State: agent.StateStarting}},
			Verdict{Degraded: true, Component: "m3dbnode"}, []string{"m3dbnode starting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Judge(tc.everReady, tc.setup, tc.comps)
			reason := got.Reason
			got.Reason = ""
			if got != tc.want {
				t.Errorf("Judge = %+v; want %+v", got, tc.want)
			}
			for _, w := range tc.reason {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q lacks %q", reason, w)
				}
			}
		})
	}
}

// TestTransitions walks one m3dbnode through a crash and back: ready,
// degraded while it restarts and bootstraps, ready again.
func TestTransitions(t *testing.T) {
	co := agent.Status{Name: "m3coordinator", State: agent.StateRunning, Healthy: true}
	steps := []struct {
		db    agent.Status
		ready bool
	}{
		{agent.Status{Name: "m3dbnode", State: agent.StateRunning, Healthy: true}, true},
		{agent.Status{Name: "m3dbnode", State: agent.StateBackoff, Message: "exited with code 137 (killed by SIGKILL)"}, false},
		{agent.Status{Name: "m3dbnode", State: agent.StateStarting}, false},
		{agent.Status{Name: "m3dbnode", State: agent.StateRunning}, false},
		{agent.Status{Name: "m3dbnode", State: agent.StateRunning, Healthy: true}, true},
	}
	for i, s := range steps {
		v := Judge(true, "ready", []agent.Status{co, s.db})
		if v.Ready != s.ready || v.Degraded == s.ready {
			t.Errorf("step %d (%s healthy=%v): %+v; want ready=%v", i, s.db.State, s.db.Healthy, v, s.ready)
		}
	}
}
