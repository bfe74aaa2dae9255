package cluster

import (
	"strings"
	"testing"
	"time"

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

func TestRevertClock(t *testing.T) {
	const deadline = time.Minute
	t0 := time.Unix(1700000000, 0)
	st := func(state agent.State, healthy bool, run, want string) agent.Status {
		return agent.Status{State: state, Healthy: healthy, SpecHash: run, DesiredHash: want, DesiredActive: true}
	}
	type step struct {
		at   time.Duration
		obs  rolloutObs
		want rolloutVerdict
	}
	rolling := func(db agent.Status) rolloutObs {
		return rolloutObs{DB: db, Desired: "r2", LastGood: "r1", ShardsOK: true}
	}
	crash := st(agent.StateCrashLoop, false, "h2", "h2")
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"healthy within the deadline", []step{
			{0, rolling(st(agent.StateStopping, false, "h1", "h2")), verdictPending},
			{30 * time.Second, rolling(st(agent.StateRunning, false, "h2", "h2")), verdictPending},
			{59 * time.Second, rolling(st(agent.StateRunning, true, "h2", "h2")), verdictSettled},
			{10 * time.Minute, rolling(st(agent.StateRunning, true, "h2", "h2")), verdictSettled},
		}},
		{"crash loop past the deadline", []step{
			{0, rolling(st(agent.StateStarting, false, "h1", "h2")), verdictPending},
			{59 * time.Second, rolling(crash), verdictPending},
			{60 * time.Second, rolling(crash), verdictFailed},
		}},
		{"waiting for the permit does not count", []step{
			{0, rolling(st(agent.StateWaiting, true, "h1", "h2")), verdictPending},
			{10 * time.Minute, rolling(st(agent.StateWaiting, true, "h1", "h2")), verdictPending},
			{11 * time.Minute, rolling(crash), verdictPending},
			{11*time.Minute + 59*time.Second, rolling(crash), verdictPending},
			{12 * time.Minute, rolling(crash), verdictFailed},
		}},
		{"bootstrapped but shards not AVAILABLE past the deadline", []step{
			{0, rolloutObs{DB: st(agent.StateRunning, true, "h2", "h2"), Desired: "r2", LastGood: "r1"}, verdictPending},
			{deadline, rolloutObs{DB: st(agent.StateRunning, true, "h2", "h2"), Desired: "r2", LastGood: "r1"}, verdictFailed},
		}},
		{"no last good spec: nothing to revert to", []step{
			{0, rolloutObs{DB: crash, Desired: "r2"}, verdictPending},
			{time.Hour, rolloutObs{DB: crash, Desired: "r2"}, verdictPending},
		}},
		{"already known failed", []step{
			{0, rolloutObs{DB: crash, Desired: "r2", LastGood: "r1", Failed: true}, verdictPending},
			{time.Hour, rolloutObs{DB: crash, Desired: "r2", LastGood: "r1", Failed: true}, verdictPending},
		}},
		{"crash loop on the last good spec is not a rollout", []step{
			{0, rolloutObs{DB: crash, Desired: "r1", LastGood: "r1"}, verdictPending},
			{time.Hour, rolloutObs{DB: crash, Desired: "r1", LastGood: "r1"}, verdictPending},
		}},
		{"a newer revision restarts the clock", []step{
			{0, rolling(crash), verdictPending},
			{50 * time.Second, rolloutObs{DB: crash, Desired: "r3", LastGood: "r1"}, verdictPending},
			{100 * time.Second, rolloutObs{DB: crash, Desired: "r3", LastGood: "r1"}, verdictPending},
			{110 * time.Second, rolloutObs{DB: crash, Desired: "r3", LastGood: "r1"}, verdictFailed},
		}},
		{"stopped by the operator", []step{
			{0, rolloutObs{DB: agent.Status{State: agent.StateStopped}, Desired: "r2", LastGood: "r1"}, verdictPending},
			{time.Hour, rolloutObs{DB: agent.Status{State: agent.StateStopped}, Desired: "r2", LastGood: "r1"}, verdictPending},
		}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			var c revertClock
			for i, s := range tc.steps {
				s.obs.Now = t0.Add(s.at)
				if got := c.observe(s.obs, deadline); got != s.want {
					t.Fatalf("step %d (+%s, %s): verdict %d, want %d", i, s.at, s.obs.DB.State, got, s.want)
				}
			}
		})
	}
}

func TestNotHealthyReason(t *testing.T) {
	db := agent.Status{State: agent.StateCrashLoop, LastExit: &agent.Exit{Code: 1},
		LogTail: []string{"first", `{"level":"fatal","msg":"could not load config","error":"field noSuchKey not found"}`}}
	got := notHealthyReason(db, "1.5.1", 5*time.Minute, false)
	want := `m3dbnode 1.5.1 not healthy within 5m0s: crash-loop (last exit code 1): {"level":"fatal","msg":"could not load config","error":"field noSuchKey not found"}`
	if got != want {
		t.Errorf("reason\n got %s\nwant %s", got, want)
	}
	// A Go crash's reason stands alone: the log's last line is the end of
	// a goroutine dump.
	crashed := agent.Status{State: agent.StateBackoff, LastExit: &agent.Exit{Code: 2,
		Reason: "panic: runtime error: index out of range [61] with length 2 in storage.(*dbShardInsertQueue).Insert"},
		LogTail: []string{"\tgithub.com/uber/tchannel-go@v1.20.1/inbound.go:125 +0xd6e"}}
	want = "m3dbnode 1.5.1 not healthy within 5m0s: backoff (panic: runtime error: index out of range [61] with length 2 in storage.(*dbShardInsertQueue).Insert)"
	if got := notHealthyReason(crashed, "1.5.1", 5*time.Minute, false); got != want {
		t.Errorf("reason\n got %s\nwant %s", got, want)
	}
	plain := agent.Status{State: agent.StateBackoff, LastExit: &agent.Exit{Code: 1, Reason: "exited with code 1"}, LogTail: []string{"bad config"}}
	if got := notHealthyReason(plain, "1.5.1", time.Minute, false); !strings.HasSuffix(got, "backoff (exited with code 1): bad config") {
		t.Errorf("reason %q", got)
	}
	if got := notHealthyReason(agent.Status{State: agent.StateRunning}, "1.5.1", time.Minute, false); !strings.HasSuffix(got, "running, not bootstrapped") {
		t.Errorf("reason %q", got)
	}
	if got := notHealthyReason(agent.Status{State: agent.StateRunning, Healthy: true}, "1.5.1", time.Minute, false); !strings.Contains(got, "not every shard is AVAILABLE") {
		t.Errorf("reason %q", got)
	}
}

// TestSettleClock: the permit goes back only after the host has stayed
// settled for the whole grace; any unsettled look starts the wait again.
func TestSettleClock(t *testing.T) {
	var c settleClock
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := 8 * time.Second
	for _, step := range []struct {
		at      time.Duration
		settled bool
		want    bool
	}{
		{0, true, false},
		{7 * time.Second, true, false},
		{8 * time.Second, true, true},
		{9 * time.Second, false, false}, // restarted again, or the permit went back
		{10 * time.Second, true, false},
		{17 * time.Second, true, false},
		{18 * time.Second, true, true},
	} {
		if got := c.due(t0.Add(step.at), step.settled, grace); got != step.want {
			t.Fatalf("at %s settled=%v: due %v, want %v", step.at, step.settled, got, step.want)
		}
	}
	var z settleClock
	if !z.due(t0, true, 0) {
		t.Fatal("zero grace: not due at once")
	}
}
