package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// TestCheckNotRemoved: a host without a tombstone goes on and records
// nothing; with one it refuses (ErrHostLeft, the remover, when, how to
// rejoin) and records it, so that the data dir refuses from then on
// without etcd.
func TestCheckNotRemoved(t *testing.T) {
	e := startTestEtcd(t, "h1")
	cli := e.Client()
	cfg := config.Default()
	cfg.DataDir, cfg.NodeName, cfg.Cluster.Advertise = t.TempDir(), "h4", "127.0.0.5"
	lay := layout{root: cfg.DataDir}
	s := New(Options{Config: cfg, Join: JoinOptions{URL: "https://127.0.0.2:7443"}})
	if err := join.WriteClusterFile(lay.clusterFile(), join.ClusterFile{JoinURL: "https://127.0.0.2:7443", Role: join.RoleClient}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := s.checkNotRemoved(ctx, lay, cli); err != nil {
		t.Fatalf("no tombstone: %v", err)
	}
	if _, err := os.Stat(lay.leftFile()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no tombstone, yet %s: %v", lay.leftFile(), err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := deleteHostKeys(ctx, cli, "h4", &cluster.Removed{Node: "h4", RemovedBy: "h2", At: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.checkNotRemoved(ctx, lay, startTestEtcd(t, "other").Client()); err != nil {
		t.Fatalf("another cluster's etcd, no tombstone: %v", err)
	}
	want := []string{"this host (h4) was removed from the cluster by h2 with `m3sup remove-host` at 2026-01-02T03:04:05Z",
		"To rejoin, move " + lay.root + " aside", "m3sup run --join https://127.0.0.2:7443 --token <T>", "m3sup token create"}
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
	check("tombstone", s.checkNotRemoved(ctx, lay, cli))
	check("left.json", checkNotLeft(lay))
	e.Close() // no etcd needed from now on
	check("left.json without etcd", checkNotLeft(lay))
}

// TestRefuseRemovedUnknown: a voter whose etcd member was removed, and
// that cannot learn by whom, still refuses and says how to rejoin.
func TestRefuseRemovedUnknown(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir, cfg.NodeName = t.TempDir(), "h3"
	lay := layout{root: cfg.DataDir}
	s := New(Options{Config: cfg})
	if err := s.refuseRemoved(lay, cluster.Removed{}); !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), "this host (h3) was removed from the cluster with `m3sup remove-host` on another host (which one, and when, could not be read") ||
		!strings.Contains(err.Error(), "To rejoin") {
		t.Fatalf("refusal: %v", err)
	}
	if err := checkNotLeft(lay); !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), "could not be read") {
		t.Fatalf("left.json: %v", err)
	}
}

// TestMemberRemovedLooksUp: a voter whose etcd member was removed asks
// the other voters (cluster.json's endpoints, its own left out) over
// mutual TLS who removed it: the leaving record while the removal is
// under way, the tombstone once it is done.
func TestMemberRemovedLooksUp(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The other voter: the first host, on 127.0.0.2.
	voter := t.TempDir()
	if err := ca.Save(voter); err != nil {
		t.Fatal(err)
	}
	issue := func(dir string, o pki.IssueOptions, certFile, keyFile string) {
		t.Helper()
		c, k, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{certFile: c, keyFile: k} {
			if err := pki.WriteFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	issue(voter, pki.IssueOptions{CommonName: pki.EtcdPeerCN, IPs: []net.IP{net.ParseIP("127.0.0.2")}, Usage: pki.UsagePeer}, pki.PeerCertFile, pki.PeerKeyFile)
	issue(voter, pki.IssueOptions{CommonName: "m3sup-node:h1", Usage: pki.UsageClient}, pki.ClientCertFile, pki.ClientKeyFile)
	ports := etcdtest.FreePorts(t, "127.0.0.2", 2)
	voterURL := fmt.Sprintf("https://127.0.0.2:%d", ports[0])
	o := store.ClusterOptions{Name: "h1", Dir: filepath.Join(voter, "etcd"), ClientURL: voterURL, PeerURL: fmt.Sprintf("https://127.0.0.2:%d", ports[1]),
		TLS: store.ClusterTLS{CAFile: filepath.Join(voter, pki.CACertFile), CertFile: filepath.Join(voter, pki.PeerCertFile), KeyFile: filepath.Join(voter, pki.PeerKeyFile),
			ClientCertFile: filepath.Join(voter, pki.ClientCertFile), ClientKeyFile: filepath.Join(voter, pki.ClientKeyFile)},
		AllowedPeerCN: pki.EtcdPeerCN, StartTimeout: 30 * time.Second}
	e, err := store.StartClusterEtcd(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli := e.Client()

	// The removed voter h3 (127.0.0.4): its client certificate and
	// cluster.json; its own endpoint is dead.
	cfg := config.Default()
	cfg.DataDir, cfg.NodeName, cfg.Cluster.Advertise = t.TempDir(), "h3", "127.0.0.4"
	lay := layout{root: cfg.DataDir}
	if err := os.MkdirAll(lay.pki(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := pki.CopyFiles(voter, lay.pki(), pki.CACertFile); err != nil {
		t.Fatal(err)
	}
	issue(lay.pki(), pki.IssueOptions{CommonName: "m3sup-node:h3", Usage: pki.UsageClient}, pki.ClientCertFile, pki.ClientKeyFile)
	s := New(Options{Config: cfg, Join: JoinOptions{URL: "https://127.0.0.2:7443"}})
	own, _, err := s.memberOptions().AdvertisedURLs()
	if err != nil {
		t.Fatal(err)
	}
	if err := join.WriteClusterFile(lay.clusterFile(), join.ClusterFile{JoinURL: "https://127.0.0.2:7443", Role: join.RoleVoter, Endpoints: []string{own, voterURL}}); err != nil {
		t.Fatal(err)
	}

	since := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := cluster.MarkRemoved(ctx, cli, "h3", "h2", since, 1<<40); err != nil {
		t.Fatal(err)
	}
	cause := fmt.Errorf("start etcd: %w", store.ErrMemberRemoved)
	for _, tc := range []struct{ what, want string }{
		{"removal under way", "removed from the cluster by h2 with `m3sup remove-host` at 2026-03-04T05:06:07Z"},
		{"tombstone", "removed from the cluster by h2 with `m3sup remove-host` at 2026-03-04T06:00:00Z"},
	} {
		if tc.what == "tombstone" {
			if err := deleteHostKeys(ctx, cli, "h3", &cluster.Removed{Node: "h3", RemovedBy: "h2", At: time.Date(2026, 3, 4, 6, 0, 0, 0, time.UTC)}); err != nil {
				t.Fatal(err)
			}
		}
		err := s.memberRemoved(ctx, lay, cause)
		if !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--join https://127.0.0.2:7443") {
			t.Fatalf("%s: %v\nwant ErrHostLeft saying %q", tc.what, err, tc.want)
		}
		if err := checkNotLeft(lay); !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Fatalf("%s: left.json: %v", tc.what, err)
		}
	}
}
