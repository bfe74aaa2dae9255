package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// The behaviour of leave, remove-host and the tombstones is tested in
// package cluster; these tests check the daemon's wiring of it.

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
			_, err := s.leave.Leave(context.Background())
			if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Leave = %v, want a conflict saying %q", err, tc.want)
			}
			if l, _ := s.leave.parts(); l != nil {
				t.Fatal("a refused leave was started")
			}
		})
	}
}

// TestRemoveHostRefusedWithoutACluster: a bad name or this host's own is
// refused first, then a single-node m3sup, then one still starting.
func TestRemoveHostRefusedWithoutACluster(t *testing.T) {
	single := config.Default()
	single.DataDir, single.NodeName = t.TempDir(), "h1"
	multi := single
	multi.Cluster.Advertise, multi.Cluster.JoinListen = "127.0.0.2", "127.0.0.2:7443"
	for _, tc := range []struct {
		what, name string
		cfg        config.Config
		kind, want string
	}{
		{"bad name, single node", "a/b", single, "invalid", "without slashes"},
		{"this host, single node", "h1", single, "conflict", "it is this host; run `m3sup leave`"},
		{"single node", "h4", single, "conflict", "single-node cluster"},
		{"not started", "h4", multi, "conflict", "still starting"},
	} {
		s := New(Options{Config: tc.cfg})
		_, err := s.leave.RemoveHost(context.Background(), tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) || kindOf(err) != tc.kind {
			t.Errorf("%s: RemoveHost(%s) = %v (kind %q), want %s saying %q", tc.what, tc.name, err, kindOf(err), tc.kind, tc.want)
		}
	}
}

// TestLeaveWiring: once etcd and M3 are connected, the daemon's API reaches
// the cluster Leaver and HostRemover (and store, through etcdAdmin);
// status lists a host being removed, and no longer once it
// is forgotten.
func TestLeaveWiring(t *testing.T) {
	e := etcdtest.Start(t, "h1")
	cli := e.Client()
	srv := httptest.NewServer(http.NotFoundHandler()) // no placement yet
	t.Cleanup(srv.Close)
	cfg := config.Default()
	cfg.DataDir, cfg.NodeName, cfg.Cluster.Advertise = t.TempDir(), "h1", "127.0.0.2"
	s := New(Options{Config: cfg, Join: JoinOptions{URL: "https://127.0.0.9:7443"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.connectLeave(cluster.Local{Node: cfg.NodeName, DataDir: cfg.DataDir, Etcd: cli, M3: &m3.Client{BaseURL: srv.URL},
		Admin: etcdAdmin{cli: cli}, Logger: s.log}, nil, e, false)

	if _, err := s.leave.RemoveHost(ctx, "h9"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("RemoveHost(h9) = %v, want not found", err)
	}
	if err := cluster.MarkRemoved(ctx, cli, "h4", "h2", time.Now(), 1<<40); err != nil {
		t.Fatal(err)
	}
	if st := clusterStatus(ctx, cli); !strings.Contains(fmt.Sprint(st.Hosts), "h4") {
		t.Errorf("status hosts while h4 is removed: %+v", st.Hosts)
	}
	if err := s.leave.RemoveHostDone(ctx, "h4"); err != nil {
		t.Fatalf("RemoveHostDone(h4): %v", err)
	}
	if st := clusterStatus(ctx, cli); strings.Contains(fmt.Sprint(st.Hosts), "h4") {
		t.Errorf("status hosts after h4 was removed: %+v", st.Hosts)
	}
	if r, ok, err := cluster.RemovedHost(ctx, cli, "h4"); err != nil || !ok || r.RemovedBy != "h2" {
		t.Fatalf("h4's tombstone: %+v, %t, %v (want removed by h2)", r, ok, err)
	}
	// The only etcd voter may not leave: store's quorum guard, through the
	// wiring, refuses it.
	if _, err := s.leave.Leave(ctx); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "it is the last voter: quorum at risk") {
		t.Fatalf("Leave of the last voter = %v, want a conflict: the last voter", err)
	}
	if lv, err := cluster.LeavingHosts(ctx, cli); err != nil || len(lv) != 0 {
		t.Fatalf("leaving after a refused Leave: %v, %v (want none)", lv, err)
	}
}

// forgetWith forgets host name as removed by by at at, as a remove-host
// that finished writes it.
func forgetWith(ctx context.Context, cli *clientv3.Client, name, by string, at time.Time) error {
	cmp, put, err := cluster.Tombstone(cluster.Removed{Node: name, RemovedBy: by, At: at})
	if err != nil {
		return err
	}
	ops := append([]clientv3.Op{clientv3.OpDelete(store.HostKeysPrefix(name), clientv3.WithPrefix())}, cluster.ForgetOps(name)...)
	_, err = cli.Txn(ctx).If(cmp).Then(append(ops, put)...).Else(ops...).Commit()
	return err
}

func kindOf(err error) string {
	for _, k := range []error{api.ErrInvalid, api.ErrConflict, api.ErrNotFound} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return ""
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
			if err := atomicfile.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
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
	dirs := layout{root: cfg.DataDir}
	if err := os.MkdirAll(dirs.pki(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := pki.CopyFiles(voter, dirs.pki(), pki.CACertFile); err != nil {
		t.Fatal(err)
	}
	issue(dirs.pki(), pki.IssueOptions{CommonName: "m3sup-node:h3", Usage: pki.UsageClient}, pki.ClientCertFile, pki.ClientKeyFile)
	s := New(Options{Config: cfg, Join: JoinOptions{URL: "https://127.0.0.2:7443"}})
	own, _, err := s.memberOptions().AdvertisedURLs()
	if err != nil {
		t.Fatal(err)
	}
	if err := join.WriteClusterFile(dirs.clusterFile(), join.ClusterFile{JoinURL: "https://127.0.0.2:7443", Role: join.RoleVoter, Endpoints: []string{own, voterURL}}); err != nil {
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
			if err := forgetWith(ctx, cli, "h3", "h2", time.Date(2026, 3, 4, 6, 0, 0, 0, time.UTC)); err != nil {
				t.Fatal(err)
			}
		}
		err := s.memberOptions().Removed(ctx, s.leftRecord(), cause)
		if !errors.Is(err, ErrHostLeft) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--join https://127.0.0.2:7443") {
			t.Fatalf("%s: %v\nwant ErrHostLeft saying %q", tc.what, err, tc.want)
		}
		if err := cluster.CheckNotLeft(dirs.root); !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Fatalf("%s: left.json: %v", tc.what, err)
		}
	}
}
