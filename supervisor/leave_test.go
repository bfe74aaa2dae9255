package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/store"
)

func TestLeaveRefusedWithoutACluster(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*config.Config)
		join string
		want string
	}{
		{name: "single node", cfg: func(*config.Config) {}, want: "single-node cluster"},
		// The first host may leave once another voter holds the CA
		// (TestCheckCAHolders); before etcd is up it cannot tell.
		{name: "first host, not started", cfg: func(c *config.Config) {
			c.Cluster.Advertise, c.Cluster.JoinListen = "127.0.0.2", "127.0.0.2:7443"
		}, want: "still starting"},
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

func TestCheckCAHolders(t *testing.T) {
	voters := []store.Member{{ID: 1, Name: "host1"}, {ID: 2, Name: "host2"}, {ID: 3, Name: "host3"}}
	ca := func(name string) cluster.Host { return cluster.Host{Name: name, HoldsCA: true} }
	plain := func(name string) cluster.Host { return cluster.Host{Name: name} }
	for _, tc := range []struct {
		name    string
		hosts   []cluster.Host
		members []store.Member
		leaving []string
		ok      bool
	}{
		{name: "another voter holds the CA", hosts: []cluster.Host{ca("host1"), ca("host2"), plain("host3")}, members: voters, ok: true},
		{name: "only this host holds it", hosts: []cluster.Host{ca("host1"), plain("host2"), plain("host3")}, members: voters},
		{name: "the other holder is leaving", hosts: []cluster.Host{ca("host1"), ca("host2"), plain("host3")}, members: voters, leaving: []string{"host2"}},
		{name: "the other holder is no voter", hosts: []cluster.Host{ca("host1"), ca("host4")}, members: voters},
		{name: "the other holder is a learner", hosts: []cluster.Host{ca("host1"), ca("host2")},
			members: []store.Member{{ID: 1, Name: "host1"}, {ID: 2, Name: "host2", IsLearner: true}}},
		{name: "the other holder is not registered", hosts: []cluster.Host{ca("host1")}, members: voters},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lv := map[string]cluster.Leaving{}
			for _, n := range tc.leaving {
				lv[n] = cluster.Leaving{}
			}
			err := checkCAHolders("host1", tc.hosts, tc.members, lv)
			if tc.ok != (err == nil) {
				t.Fatalf("checkCAHolders = %v, want ok %t", err, tc.ok)
			}
			if err != nil && (!strings.Contains(err.Error(), "last host that holds the cluster CA") || !strings.Contains(err.Error(), "cluster.joinListen")) {
				t.Fatalf("refusal does not say why and what to do: %v", err)
			}
		})
	}
}
