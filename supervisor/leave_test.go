package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
)

func TestLeaveRefusedWithoutACluster(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*config.Config)
		join string
		want string
	}{
		{name: "single node", cfg: func(*config.Config) {}, want: "single-node cluster"},
		{name: "CA holder", cfg: func(c *config.Config) {
			c.Cluster.Advertise, c.Cluster.JoinListen = "127.0.0.2", "127.0.0.2:7443"
		}, want: "holds the cluster CA"},
		{name: "joined, not started", cfg: func(c *config.Config) { c.Cluster.Advertise = "127.0.0.3" },
			join: "https://127.0.0.2:7443", want: "still starting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.DataDir = t.TempDir()
			tc.cfg(&cfg)
			s := New(Options{Config: cfg, Join: JoinOptions{URL: tc.join}})
			_, err := s.Leave(context.Background())
			if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Leave = %v, want a conflict saying %q", err, tc.want)
			}
			if s.leave.isRequested() {
				t.Fatal("a refused leave was started")
			}
		})
	}
}

func TestCheckNotLeft(t *testing.T) {
	lay := layout{root: t.TempDir()}
	if err := checkNotLeft(lay); err != nil {
		t.Fatalf("fresh data dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(lay.root, "left.json"), []byte(`{"node":"host4","left":"2026-01-02T03:04:05Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := checkNotLeft(lay)
	if err == nil || !strings.Contains(err.Error(), "host4") || !strings.Contains(err.Error(), "left the cluster at 2026-01-02T03:04:05Z") ||
		!strings.Contains(err.Error(), "To rejoin") || !errors.Is(err, ErrHostLeft) {
		t.Fatalf("data dir that left: %v (want the reason, of kind ErrHostLeft)", err)
	}
}
