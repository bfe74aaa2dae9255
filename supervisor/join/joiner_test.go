package join_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/join"
)

// TestResume: a host with cluster.json is a joined host even without
// --join; a cluster.json without a join URL is an error, none is nothing.
func TestResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.json")
	if u, err := join.Resume(path, zap.NewNop()); err != nil || u != "" {
		t.Fatalf("no cluster.json: %v, join %q", err, u)
	}
	if err := os.WriteFile(path, []byte(`{"joinURL":"https://10.0.0.1:7443","role":"voter"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := join.Resume(path, zap.NewNop()); err != nil || u != "https://10.0.0.1:7443" {
		t.Fatalf("cluster.json: %v, join %q", err, u)
	}
	if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := join.Resume(path, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "no join URL") {
		t.Fatalf("cluster.json without a URL: %v", err)
	}
}

// TestClusterFileRoundTrip: what WriteClusterFile writes (0600) reads back
// the same; a missing file is os.ErrNotExist.
func TestClusterFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.json")
	if _, err := join.ReadClusterFile(path); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
	cf := join.ClusterFile{JoinURL: "https://10.0.0.1:7443", Role: join.RoleVoter, MemberID: 1 << 63,
		InitialCluster: "a=https://10.0.0.1:2380", Endpoints: []string{"https://10.0.0.1:2379"}}
	if err := join.WriteClusterFile(path, cf); err != nil {
		t.Fatal(err)
	}
	got, err := join.ReadClusterFile(path)
	if err != nil || got.JoinURL != cf.JoinURL || got.Role != cf.Role || got.MemberID != cf.MemberID ||
		got.InitialCluster != cf.InitialCluster || len(got.Endpoints) != 1 || got.Endpoints[0] != cf.Endpoints[0] {
		t.Fatalf("read back %+v, %v; wrote %+v", got, err, cf)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
}
