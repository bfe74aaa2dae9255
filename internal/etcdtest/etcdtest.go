package etcdtest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/e2etest"
	"github.com/m3sup/m3sup/supervisor/store"
)

// Start starts a one-member embedded etcd named name on free loopback
// ports, with its data under t.TempDir(); it is closed when the test ends.
func Start(t testing.TB, name string) *store.Etcd {
	t.Helper()
	ports := FreePorts(t, "127.0.0.1", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEtcd(ctx, store.EtcdOptions{
		Name:         name,
		Dir:          filepath.Join(t.TempDir(), "etcd"),
		ClientURL:    fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		PeerURL:      fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		StartTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatalf("StartEtcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// FreePorts returns n distinct ports free on ip (all listeners are held
// until every port is picked, so they differ).
func FreePorts(t testing.TB, ip string, n int) []int {
	t.Helper()
	return e2etest.FreePorts(t, ip, n)
}
