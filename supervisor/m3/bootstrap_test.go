package m3

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const testPoll = time.Millisecond

func testDesired() Desired {
	return Desired{
		NumShards:         8,
		ReplicationFactor: 3,
		Instances: []Instance{
			{ID: "n1", IsolationGroup: "g1", Endpoint: "127.0.0.2:9000", Hostname: "127.0.0.2", Port: 9000},
			{ID: "n2", IsolationGroup: "g2", Endpoint: "127.0.0.3:9000", Hostname: "127.0.0.3", Port: 9000},
			{ID: "n3", IsolationGroup: "g3", Endpoint: "127.0.0.4:9000", Hostname: "127.0.0.4", Port: 9000},
		},
		Namespaces: []Namespace{
			{Name: "default", Retention: 48 * time.Hour, IndexEnabled: true},
			{Name: "long", Retention: 720 * time.Hour, BlockSize: 12 * time.Hour, IndexEnabled: true, Resolution: time.Minute},
		},
	}
}

// phases returns the distinct phases in report order.
func phases(reports []Progress) []Phase {
	var out []Phase
	for _, r := range reports {
		if len(out) == 0 || out[len(out)-1] != r.Phase {
			out = append(out, r.Phase)
		}
	}
	return out
}

func TestBootstrapFromScratchThenIdempotent(t *testing.T) {
	f := newFakeCoordinator(t, "m3sup_test", 3)
	f.healthFailures = 2
	f.readyFailures = 3
	c := f.client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var reports []Progress
	pr, err := Bootstrap(ctx, c, testDesired(), f.nodeURLs(), testPoll, func(p Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	f.checkHeaders()
	want := []Phase{PhaseWaitingCoordinator, PhasePlacement, PhaseNamespaces, PhaseBootstrapping, PhaseMarkingReady, PhaseReady}
	if got := phases(reports); !slices.Equal(got, want) {
		t.Errorf("phases = %v, want %v", got, want)
	}
	if pr.Phase != PhaseReady || !pr.PlacementCreated || !slices.Equal(pr.NamespacesCreated, []string{"default", "long"}) {
		t.Errorf("progress = %+v", pr)
	}
	if pr.ShardStates[ShardAvailable] != 8*3 || len(pr.ShardStates) != 1 {
		t.Errorf("shard states = %v", pr.ShardStates)
	}
	if !pr.Namespaces["default"] || !pr.Namespaces["long"] {
		t.Errorf("namespaces = %v", pr.Namespaces)
	}
	// Saw INITIALIZING shards while bootstrapping.
	sawInit := false
	for _, r := range reports {
		if r.Phase == PhaseBootstrapping && r.ShardStates[ShardInitializing] > 0 {
			sawInit = true
		}
	}
	if !sawInit {
		t.Error("never reported INITIALIZING shards")
	}
	if f.readyCalls < 2+3 {
		t.Errorf("ready called %d times, want ≥ 5 (500s retried)", f.readyCalls)
	}
	ns := f.namespaces["long"]
	if ns.retention != 720*time.Hour || ns.blockSize != 12*time.Hour || ns.indexBlockSize != 12*time.Hour ||
		ns.bufferPast != 10*time.Minute || !ns.indexEnabled {
		t.Errorf("namespace long created as %+v", ns)
	}
	for _, k := range []string{"bootstrapEnabled", "flushEnabled", "writesToCommitLog", "cleanupEnabled", "snapshotEnabled", "coldWritesEnabled"} {
		if ns.raw[k] != true {
			t.Errorf("namespace option %s = %v, want true", k, ns.raw[k])
		}
	}
	ro := ns.raw["retentionOptions"].(map[string]any)
	if ro["blockDataExpiryAfterNotAccessPeriodDuration"] != "5m0s" || ro["blockDataExpiry"] != true {
		t.Errorf("retention options = %v", ro)
	}
	aggJSON := func(ns string) string {
		b, _ := json.Marshal(f.namespaces[ns].raw["aggregationOptions"])
		return string(b)
	}
	if got := aggJSON("default"); got != `{"aggregations":[{"aggregated":false}]}` {
		t.Errorf("default aggregation options = %s", got)
	}
	if got := aggJSON("long"); got != `{"aggregations":[{"aggregated":true,"attributes":{"downsampleOptions":{"all":true},"resolutionDuration":"1m0s"}}]}` {
		t.Errorf("long aggregation options = %s", got)
	}

	// Second run: reads only.
	before := f.mutationCount()
	pr, err = Bootstrap(ctx, c, testDesired(), f.nodeURLs(), testPoll, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.mutationCount() - before; n != 0 {
		t.Errorf("second bootstrap made %d mutating requests: %v", n, f.mutations[before:])
	}
	if pr.Phase != PhaseReady || pr.PlacementCreated || len(pr.NamespacesCreated) != 0 {
		t.Errorf("second progress = %+v", pr)
	}
	f.checkHeaders()

	obs, err := c.Observe(ctx, f.nodeURLs())
	if err != nil || obs.Phase != PhaseReady {
		t.Errorf("observe = %+v, %v", obs, err)
	}
}

func TestBootstrapLeavesExistingPlacementAlone(t *testing.T) {
	f := newFakeCoordinator(t, "", 1)
	f.seedPlacement(4, 1, "other")
	d := testDesired()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := Bootstrap(ctx, f.client(), d, f.nodeURLs(), testPoll, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pr.PlacementCreated {
		t.Error("placement re-created")
	}
	for _, m := range f.mutations {
		if strings.Contains(m, "placement") {
			t.Errorf("placement mutated: %s", m)
		}
	}
	if _, ok := f.placement.instances["other"]; !ok || len(f.placement.instances) != 1 {
		t.Errorf("placement changed: %v", f.placement.instances)
	}
	f.checkHeaders()
}

func TestBootstrapAddsOnlyMissingNamespaces(t *testing.T) {
	f := newFakeCoordinator(t, "", 1)
	f.seedPlacement(4, 1, "n1")
	f.namespaces["default"] = &fakeNamespace{retention: time.Hour, blockSize: time.Hour, status: StagingReady}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := Bootstrap(ctx, f.client(), testDesired(), f.nodeURLs(), testPoll, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pr.NamespacesCreated, []string{"long"}) {
		t.Errorf("created %v, want [long]", pr.NamespacesCreated)
	}
	if f.namespaces["default"].retention != time.Hour {
		t.Error("existing namespace changed")
	}
}

func TestBootstrapCancelWhileBootstrapping(t *testing.T) {
	f := newFakeCoordinator(t, "", 2)
	f.freezeShards = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last Progress
	_, err := Bootstrap(ctx, f.client(), testDesired(), f.nodeURLs(), testPoll, func(p Progress) {
		last = p
		if p.Phase == PhaseBootstrapping && p.ShardStates[ShardInitializing] > 0 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !strings.HasPrefix(err.Error(), "bootstrap: bootstrapping: ") {
		t.Errorf("err = %q", err)
	}
	if last.Phase != PhaseBootstrapping || last.Nodes[f.nodeURLs()[0]] {
		t.Errorf("last progress = %+v", last)
	}
}

func TestBootstrapDeadlineWaitingForCoordinator(t *testing.T) {
	f := newFakeCoordinator(t, "", 0)
	f.healthFailures = 1 << 30
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	pr, err := Bootstrap(ctx, f.client(), testDesired(), nil, testPoll, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if pr.Phase != PhaseWaitingCoordinator || !strings.Contains(pr.Message, "503") {
		t.Errorf("progress = %+v", pr)
	}
}

func TestBootstrapPermanentErrorStops(t *testing.T) {
	f := newFakeCoordinator(t, "", 0)
	f.initStatus = 400
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Bootstrap(ctx, f.client(), testDesired(), nil, testPoll, nil)
	want := `bootstrap: placement: POST /api/v1/services/m3db/placement/init: 400 Bad Request: {"status":"error","error":"unable to build initial placement: not enough isolation groups"}`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Errorf("not an APIError with 400: %#v", err)
	}
}

func TestBootstrapRetriesTransientErrors(t *testing.T) {
	f := newFakeCoordinator(t, "", 1)
	f.placementErrors = 3
	var msgs []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Bootstrap(ctx, f.client(), testDesired(), f.nodeURLs(), testPoll, func(p Progress) { msgs = append(msgs, p.Message) })
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range msgs {
		if strings.HasPrefix(m, "retrying: GET /api/v1/services/m3db/placement: 503 Service Unavailable") {
			found = true
		}
	}
	if !found {
		t.Errorf("no retry message in %q", msgs)
	}
}

func TestBootstrapValidatesDesired(t *testing.T) {
	d := testDesired()
	d.Namespaces = nil
	if _, err := Bootstrap(context.Background(), &Client{}, d, nil, 0, nil); err == nil {
		t.Error("no error for desired without namespaces")
	}
	d = testDesired()
	d.Instances = d.Instances[:2]
	if _, err := Bootstrap(context.Background(), &Client{}, d, nil, 0, nil); err == nil {
		t.Error("no error for 2 instances with RF 3")
	}
	d = testDesired()
	d.Namespaces[0].Retention = time.Minute
	if _, err := Bootstrap(context.Background(), &Client{}, d, nil, 0, nil); err == nil {
		t.Error("no error for retention shorter than block size")
	}
}

func TestObservePhases(t *testing.T) {
	f := newFakeCoordinator(t, "", 1)
	c := f.client()
	ctx := context.Background()
	pr, err := c.Observe(ctx, f.nodeURLs())
	if err != nil || pr.Phase != PhasePlacement {
		t.Fatalf("empty cluster: %+v %v", pr, err)
	}
	f.seedPlacement(2, 1, "n1")
	f.freezeShards = true
	if pr, _ = c.Observe(ctx, f.nodeURLs()); pr.Phase != PhaseNamespaces {
		t.Errorf("no namespaces: %+v", pr)
	}
	f.namespaces["default"] = &fakeNamespace{status: StagingUnknown}
	if pr, _ = c.Observe(ctx, f.nodeURLs()); pr.Phase != PhaseBootstrapping || pr.ShardStates[ShardInitializing] != 2 {
		t.Errorf("initializing: %+v", pr)
	}
	f.freezeShards = false
	for range 3 {
		pr, _ = c.Observe(ctx, f.nodeURLs())
	}
	if pr.Phase != PhaseMarkingReady || pr.Namespaces["default"] {
		t.Errorf("not ready: %+v", pr)
	}
	f.namespaces["default"].status = StagingReady
	if pr, _ = c.Observe(ctx, f.nodeURLs()); pr.Phase != PhaseReady {
		t.Errorf("ready: %+v", pr)
	}
	// A node that does not answer is not bootstrapped, and not an error.
	pr, err = c.Observe(ctx, append(f.nodeURLs(), "http://127.0.0.1:1"))
	if err != nil || pr.Phase != PhaseBootstrapping || pr.Nodes["http://127.0.0.1:1"] {
		t.Errorf("down node: %+v %v", pr, err)
	}
	f.srv.Close()
	if pr, err = c.Observe(ctx, nil); err == nil || pr.Phase != PhaseWaitingCoordinator {
		t.Errorf("coordinator down: %+v %v", pr, err)
	}
}
