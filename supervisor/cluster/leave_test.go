package cluster

import (
	"errors"
	"testing"
	"time"
)

// TestMarkLeaving: the record is idempotent, listed, cleared; a mark made
// on a stale view of the leaving hosts is refused (two concurrent leaves
// cannot both pass CheckLeave against each other's absence).
func TestMarkLeaving(t *testing.T) {
	e := startEtcd(t)
	cli := e.Client()
	ctx := testCtx(t)

	_, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if err := MarkLeaving(ctx, cli, "h3", t0, seen); err != nil {
		t.Fatal(err)
	}
	// h4 decided on the view from before h3 was marked: refused.
	if err := MarkLeaving(ctx, cli, "h4", t0, seen); !errors.Is(err, ErrLeaveRace) {
		t.Fatalf("mark on a stale view = %v, want ErrLeaveRace", err)
	}
	// Marking h3 again keeps its first record.
	if err := MarkLeaving(ctx, cli, "h3", t0.Add(time.Hour), 0); err != nil {
		t.Fatalf("second mark: %v", err)
	}
	lv, seen, err := LeavingHostsAt(ctx, cli)
	if err != nil || len(lv) != 1 || !lv["h3"].Since.Equal(t0) {
		t.Fatalf("leaving hosts: %v, %v (want h3 since %s)", lv, err, t0)
	}
	if err := MarkLeaving(ctx, cli, "h4", t0, seen); err != nil {
		t.Fatalf("mark on a fresh view: %v", err)
	}
	if err := ClearLeaving(ctx, cli, "h3"); err != nil {
		t.Fatal(err)
	}
	if lv, err := LeavingHosts(ctx, cli); err != nil || len(lv) != 1 || lv["h4"].Name != "h4" {
		t.Fatalf("after clearing h3: %v, %v", lv, err)
	}
}
