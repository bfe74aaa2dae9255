package cluster

import (
	"errors"
	"testing"
	"time"
)

func TestRolloutFailureFirstRecordWins(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	cli := e.Client()

	if err := NotFailed(cli, "r2")(ctx); err != nil {
		t.Fatalf("gate before any failure: %v", err)
	}
	if _, failed, err := RolloutFailed(ctx, cli, "r2"); err != nil || failed {
		t.Fatalf("RolloutFailed before any record: %t, %v", failed, err)
	}
	at := time.Unix(1700000000, 0).UTC()
	if err := RecordFailure(ctx, cli, Failure{Revision: "r2", Version: "1.5.1", Host: "host2", Reason: "crash-loop", At: at}); err != nil {
		t.Fatal(err)
	}
	if err := RecordFailure(ctx, cli, Failure{Revision: "r2", Host: "host3", Reason: "later"}); err != nil {
		t.Fatal(err)
	}
	f, failed, err := RolloutFailed(ctx, cli, "r2")
	if err != nil || !failed || f.Host != "host2" || f.Reason != "crash-loop" || !f.At.Equal(at) {
		t.Fatalf("RolloutFailed = %+v, %t, %v; want host2's record", f, failed, err)
	}
	err = NotFailed(cli, "r2")(ctx)
	if !errors.Is(err, ErrRolloutHalted) {
		t.Fatalf("gate on a failed revision: %v, want ErrRolloutHalted", err)
	}
	if err := NotFailed(cli, "r3")(ctx); err != nil {
		t.Fatalf("gate on another revision: %v", err)
	}
	if err := RecordFailure(ctx, cli, Failure{Host: "x"}); err == nil {
		t.Fatal("a failure without a revision was recorded")
	}
	if n := keys(t, cli, RolloutFailedPrefix); n != 1 {
		t.Fatalf("%d failure records, want r2's alone", n)
	}
}

func TestHostStatesRoundTrip(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	cli := e.Client()
	h := HostState{Host: "host1", DBNode: RunningSpec{Revision: "r1", Version: "1.5.0", Digest: "sha256:ab"},
		Components: []ComponentState{{Name: "m3dbnode", State: "running", Healthy: true}}}
	if err := PublishHostState(ctx, cli, h); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, RolloutHostsPrefix+"bogus", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, RolloutHostsPrefix+"liar", `{"host":"other"}`); err != nil {
		t.Fatal(err)
	}
	got, err := HostStates(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["host1"].DBNode.Revision != "r1" || len(got["host1"].Components) != 1 {
		t.Fatalf("HostStates = %+v", got)
	}
}
