package member

import (
	"context"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestFollowVoters: in multi-host mode M3 is pointed at the etcd voters of
// now, over its certificate under ContainerPKI, and a joined host's
// cluster.json records them for its next start; a first host (no
// cluster.json) writes none. A single node's answer is the one of its
// start.
func TestFollowVoters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t, "host1")
	voter := e.Client().Endpoints()[0]
	u, err := url.Parse(voter)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.json")
	m := &Member{o: Options{MultiHost: true, Paths: Paths{ClusterFile: path}, Logger: zap.NewNop()}, etcd: e}

	me, err := m.FollowVoters(ctx) // the first host: no cluster.json
	if err != nil || !slices.Equal(me.Voters, []string{u.Host}) || me.TLS == nil || me.TLS.CertPath != ContainerPKI+"/"+pki.ClientCertFile {
		t.Fatalf("first host: %+v, %v", me, err)
	}
	if _, err := join.ReadClusterFile(path); err == nil {
		t.Fatal("a first host wrote cluster.json")
	}

	if err := join.WriteClusterFile(path, join.ClusterFile{JoinURL: "https://10.0.0.1:7443", Role: join.RoleVoter, Endpoints: []string{"https://10.0.0.9:2379"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.FollowVoters(ctx); err != nil {
		t.Fatal(err)
	}
	cf, err := join.ReadClusterFile(path)
	if err != nil || !slices.Equal(cf.Endpoints, []string{voter}) || cf.JoinURL != "https://10.0.0.1:7443" {
		t.Fatalf("cluster.json after following the voters: %+v, %v", cf, err)
	}

	single := &Member{o: Options{Logger: zap.NewNop()}, etcd: e, m3: M3Etcd{TLS: m3TLS()}}
	if me, err := single.FollowVoters(ctx); err != nil || me.Voters != nil || me.TLS == nil {
		t.Fatalf("single node: %+v, %v", me, err)
	}
}
