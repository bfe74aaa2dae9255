package supervisor

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestControlAPIBeforeEtcd: before etcd is up, every call that needs the
// store says the daemon is still starting; log paths need nothing.
func TestControlAPIBeforeEtcd(t *testing.T) {
	a := &controlAPI{Node: "h1", DataDir: "/d", Roles: []string{config.RoleDBNode, config.RoleCoordinator},
		Store:    func() *store.Store { return nil },
		Agent:    func() *agent.Agent { return nil },
		Running:  func() spec.Cluster { return spec.Cluster{} },
		Renderer: func(spec.Release) (renderFunc, bool) { t.Fatal("rendered before etcd"); return nil, false }}
	ctx := context.Background()
	if _, err := a.Cluster(ctx); !errors.Is(err, errStarting) {
		t.Errorf("Cluster: %v", err)
	}
	if _, err := a.ApplyCluster(ctx, api.ClusterDoc{}, true); !errors.Is(err, errStarting) {
		t.Errorf("ApplyCluster: %v", err)
	}
	if _, err := a.Control(ctx, DBNode, "restart"); !errors.Is(err, errStarting) {
		t.Errorf("Control: %v", err)
	}
	if _, err := a.Control(ctx, "nope", "restart"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Control of no component: %v", err)
	}
	if p, err := a.LogPath(Coordinator); err != nil || p != filepath.Join("/d", "components", Coordinator, "logs", Coordinator+".log") {
		t.Errorf("LogPath: %q, %v", p, err)
	}
}

// TestBackupAPIBeforeEtcd: no backup before etcd is up.
func TestBackupAPIBeforeEtcd(t *testing.T) {
	b := backupAPI{Etcd: func() *store.Etcd { return nil }}
	if err := b.Backup(context.Background(), nil); !errors.Is(err, api.ErrConflict) {
		t.Errorf("Backup: %v, want a conflict", err)
	}
}
