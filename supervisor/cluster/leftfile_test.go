package cluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
)

func TestCheckNotLeft(t *testing.T) {
	dir := t.TempDir()
	if err := CheckNotLeft(dir); err != nil {
		t.Fatalf("fresh data dir: %v", err)
	}
	if err := os.WriteFile(LeftFile(dir), []byte(`{"node":"host4","left":"2026-01-02T03:04:05Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := CheckNotLeft(dir)
	if err == nil || !strings.Contains(err.Error(), "host4") || !strings.Contains(err.Error(), "left the cluster at 2026-01-02T03:04:05Z") ||
		!strings.Contains(err.Error(), "To rejoin") || !errors.Is(err, ErrHostLeft) {
		t.Fatalf("data dir that left: %v (want the reason, of kind ErrHostLeft)", err)
	}
}

// TestCheckNotRemoved: a host without a tombstone goes on and records
// nothing; with one it refuses (ErrHostLeft, the remover, when, how to
// rejoin) and records it, so that the data dir refuses from then on
// without etcd.
func TestCheckNotRemoved(t *testing.T) {
	e := etcdtest.Start(t, "h1")
	cli := e.Client()
	rec := LeftRecord{DataDir: t.TempDir(), Node: "h4", JoinURL: "https://127.0.0.2:7443"}
	local := testLocal(t, "h1", cli, newFakeM3(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := rec.CheckNotRemoved(ctx, cli); err != nil {
		t.Fatalf("no tombstone: %v", err)
	}
	if _, err := os.Stat(LeftFile(rec.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no tombstone, yet %s: %v", LeftFile(rec.DataDir), err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := local.deleteHostKeys(ctx, "h4", &Removed{Node: "h4", RemovedBy: "h2", At: at}); err != nil {
		t.Fatal(err)
	}
	if err := rec.CheckNotRemoved(ctx, etcdtest.Start(t, "other").Client()); err != nil {
		t.Fatalf("another cluster's etcd, no tombstone: %v", err)
	}
	want := []string{"this host (h4) was removed from the cluster by h2 with `m3sup remove-host` at 2026-01-02T03:04:05Z",
		"To rejoin, move " + rec.DataDir + " aside", "m3sup run --join https://127.0.0.2:7443 --token <T>", "m3sup token create"}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrHostLeft) {
			t.Fatalf("%s: %v, want ErrHostLeft", what, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %v\nwant it to say %q", what, err, w)
			}
		}
	}
	check("tombstone", rec.CheckNotRemoved(ctx, cli))
	check("left.json", CheckNotLeft(rec.DataDir))
	e.Close() // no etcd needed from now on
	check("left.json without etcd", CheckNotLeft(rec.DataDir))
}

// TestRefuseRemovedUnknown: a voter whose etcd member was removed, and
// that cannot learn by whom, still refuses and says how to rejoin.
func TestRefuseRemovedUnknown(t *testing.T) {
	rec := LeftRecord{DataDir: t.TempDir(), Node: "h3"}
	if err := rec.refuseRemoved(Removed{}); !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), "this host (h3) was removed from the cluster with `m3sup remove-host` on another host (which one, and when, could not be read") ||
		!strings.Contains(err.Error(), "To rejoin") {
		t.Fatalf("refusal: %v", err)
	}
	if err := CheckNotLeft(rec.DataDir); !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), "could not be read") {
		t.Fatalf("left.json: %v", err)
	}
}
