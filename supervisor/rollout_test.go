package supervisor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/spec"
)

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

func TestLastGoodRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rollout.json")
	if lg, err := loadLastGood(path); err != nil || lg != nil {
		t.Fatalf("missing file: %+v, %v", lg, err)
	}
	d := dbnodeSpec{Release: spec.Release{Version: "1.5.0", URL: "file:///r.tgz", Checksum: "sha256:00"}, DBNode: spec.Component{LogLevel: "info"}}
	if err := saveLastGood(path, lastGood{Revision: d.revision(), Spec: d, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	lg, err := loadLastGood(path)
	if err != nil || lg == nil || lg.Revision != d.revision() || lg.Spec.Release != d.Release {
		t.Fatalf("loaded %+v, %v", lg, err)
	}
	// A file whose revision does not match its spec is refused.
	if err := os.WriteFile(path, []byte(`{"revision":"abc","spec":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLastGood(path); err == nil {
		t.Fatal("a tampered last good file was accepted")
	}
}

func TestDBNodeRevision(t *testing.T) {
	base := spec.Cluster{Release: spec.Release{Version: "1.5.0", URL: "u", Checksum: "sha256:aa"}, DBNode: spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"}}
	r := dbnodeSpecOf(base).revision()
	coord := base
	coord.Coordinator.LogLevel = "warn"
	if dbnodeSpecOf(coord).revision() != r {
		t.Error("a coordinator-only change changed the dbnode revision")
	}
	for name, mod := range map[string]func(*spec.Cluster){
		"checksum":  func(c *spec.Cluster) { c.Release.Checksum = "sha256:bb" },
		"logLevel":  func(c *spec.Cluster) { c.DBNode.LogLevel = "warn" },
		"config":    func(c *spec.Cluster) { c.DBNode.Config = map[string]any{"db": map[string]any{"x": 1}} },
		"image":     func(c *spec.Cluster) { c.DBNode.Image = "quay.io/m3db/m3dbnode:v1.5.0" },
		"version":   func(c *spec.Cluster) { c.Release.Version = "1.5.1" },
		"insecure":  func(c *spec.Cluster) { c.Release.InsecureSkipChecksum = true },
		"url":       func(c *spec.Cluster) { c.Release.URL = "v" },
		"nothing^1": func(c *spec.Cluster) {},
	} {
		c := base
		mod(&c)
		if got := dbnodeSpecOf(c).revision(); (got == r) != (name == "nothing^1") || len(got) != 12 {
			t.Errorf("%s: revision %s (base %s)", name, got, r)
		}
	}
}

func TestEffectiveSpec(t *testing.T) {
	s := New(Options{})
	good := spec.Cluster{Release: spec.Release{Version: "1.5.0", URL: "u0", Checksum: "sha256:aa"}, DBNode: spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"}}
	bad := good
	bad.Release = spec.Release{Version: "1.5.1", URL: "u1", Checksum: "sha256:bb"}
	bad.Coordinator.LogLevel = "warn"
	ctx := context.Background()

	// No failure: desired as is.
	if got := s.effective(ctx, bad); got.Release != bad.Release {
		t.Fatalf("effective without a failure: %+v", got.Release)
	}
	// Failed, but nothing known to go back to: desired as is.
	badRev := dbnodeSpecOf(bad).revision()
	s.roll.failed[badRev] = cluster.Failure{Revision: badRev, Host: "host2", Reason: "crash-loop"}
	if got := s.effective(ctx, bad); got.Release != bad.Release {
		t.Fatalf("effective without a last good spec: %+v", got.Release)
	}
	// Failed with a last good spec: its release and dbnode settings, the
	// desired coordinator settings.
	s.roll.lastGood = &lastGood{Revision: dbnodeSpecOf(good).revision(), Spec: dbnodeSpecOf(good)}
	got := s.effective(ctx, bad)
	if got.Release != good.Release || got.DBNode.LogLevel != "info" || got.Coordinator.LogLevel != "warn" {
		t.Fatalf("effective when halted: %+v", got)
	}
	if s.roll.halted != badRev || s.roll.desiredRev != badRev {
		t.Fatalf("halted %q desired %q, want %q", s.roll.halted, s.roll.desiredRev, badRev)
	}
	// A newer desired state rolls again.
	newer := bad
	newer.DBNode.LogLevel = "warn"
	if got := s.effective(ctx, newer); got.Release != newer.Release || s.roll.halted != "" {
		t.Fatalf("effective for a newer spec: %+v, halted %q", got.Release, s.roll.halted)
	}
}

func TestCoordinatorWritable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		body   string
		wantOK bool
	}{
		{"every namespace writable", 200, `{"readyReads":[{"id":"default"}],"readyWrites":[{"id":"default"}]}`, true},
		{"session not yet initialised: no namespaces", 200, `{}`, false},
		{"one namespace not writable", 200, `{"readyWrites":[{"id":"a"}],"notReadyWrites":[{"id":"b"}]}`, false},
		{"error", 500, `{"error":"M3DB session not yet initialized"}`, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/ready" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(tc.code)
			_, _ = w.Write([]byte(tc.body))
		}))
		err := coordinatorWritable(context.Background(), srv.URL)
		srv.Close()
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: err %v, want ok %t", tc.name, err, tc.wantOK)
		}
	}
}
