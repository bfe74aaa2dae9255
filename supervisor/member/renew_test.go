package member

import (
	"context"
	"fmt"
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
	"go.uber.org/zap"
)

// TestNextRenewal: the earliest certificate's renewal point, with the
// injected draw.
func TestNextRenewal(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	certs := []pki.CertFileInfo{
		{Issued: t0, NotAfter: t0.Add(120 * time.Minute)},
		{Issued: t0, NotAfter: t0.Add(60 * time.Minute)},
	}
	if _, ok := NextRenewal(nil, 0); ok {
		t.Error("no certificates: a renewal")
	}
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{{0, 40 * time.Minute}, {1, 45 * time.Minute}} {
		if at, ok := NextRenewal(certs, tc.r); !ok || !at.Equal(t0.Add(tc.want)) {
			t.Errorf("r=%v: %v, want %v after issue", tc.r, at.Sub(t0), tc.want)
		}
	}
}

// TestRenewCerts: a single node started with a short certificate lifetime
// renews its member, client and M3 certificates in place (new serials on
// disk, all four certificates), and etcd keeps serving after the first
// certificates expire.
func TestRenewCerts(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for certificates to be renewed and expire")
	}
	dataDir := t.TempDir()
	o := localOptions(t, dataDir)
	o.CertTTL = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before, err := m.Certs()
	if err != nil || len(before) != 3 {
		t.Fatalf("Certs: %v, %+v; want 3 files", err, before)
	}
	renewed := make(chan struct{}, 10)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.RenewCerts(rctx, func() float64 { return 0 }, func() { renewed <- struct{}{} }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("RenewCerts: %v", err)
		}
	}()
	select {
	case <-renewed:
	case <-ctx.Done():
		t.Fatal("no renewal")
	}
	after, err := m.Certs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if after[i].Path != before[i].Path || after[i].Serial == before[i].Serial {
			t.Errorf("%s: serial %s, was %s: not renewed", before[i].Path, after[i].Serial, before[i].Serial)
		}
		if at := before[i].RenewAt(0); time.Now().Before(at) {
			t.Errorf("%s renewed before its renewal point %v", before[i].Path, at)
		}
	}
	if got := m.M3CertSerial(); got != after[2].Serial || after[2].Path != filepath.Join(o.Paths.M3PKI, pki.ClientCertFile) {
		t.Errorf("M3CertSerial %s, want %s", got, after[2].Serial)
	}
	time.Sleep(time.Until(before[0].NotAfter) + time.Second)
	if _, err := m.Etcd().Client().Put(ctx, "/m3sup/v1/after-expiry", "1"); err != nil {
		t.Errorf("etcd after the first certificates expired: %v", err)
	}
}

// TestRenewRemote: a host without the CA (a client-only host) renews its
// client certificate at the join endpoint of a host that holds it,
// presenting the current one; the new one replaces its files and M3's
// copy. Once the host is removed from the cluster, renewal is refused.
func TestRenewRemote(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t, "host1")
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	port := etcdtest.FreePorts(t, "127.0.0.1", 1)[0]
	o := Options{NodeName: "host1", Advertise: "127.0.0.1", MultiHost: true, CertTTL: time.Hour,
		JoinListen: fmt.Sprintf("127.0.0.1:%d", port), MaxVoters: config.Default().Cluster.MaxVoters, Logger: zap.NewNop()}
	first := &Member{o: o, etcd: e, ca: ca, issuer: ca}
	execute, interrupt, err := first.JoinServer()
	if err != nil || execute == nil {
		t.Fatalf("JoinServer: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- execute() }()
	t.Cleanup(func() {
		interrupt(nil)
		if err := <-done; err != nil {
			t.Errorf("join server: %v", err)
		}
	})

	// client1, joined earlier: its certificate and the cluster file.
	dir := t.TempDir()
	paths := Paths{PKI: filepath.Join(dir, "pki"), M3PKI: filepath.Join(dir, "pki", "m3"), ClusterFile: filepath.Join(dir, "cluster.json")}
	if err := os.MkdirAll(paths.PKI, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(pki.IssueOptions{CommonName: pki.NodeCN("client1"), Usage: pki.UsageClient, TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.PKI, pki.CACertFile), ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteClient(paths.PKI, cert, key); err != nil {
		t.Fatal(err)
	}
	if err := join.WriteClusterFile(paths.ClusterFile, join.ClusterFile{JoinURL: fmt.Sprintf("https://127.0.0.1:%d", port), Role: join.RoleClient}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Register(ctx, e.Client(), cluster.Host{Name: "client1", Roles: []cluster.Role{cluster.RoleCoordinator}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	client := &Member{o: Options{NodeName: "client1", CertTTL: time.Hour, Paths: paths, Logger: zap.NewNop()}, etcd: e}
	old, _, err := pki.ReadCertFile(filepath.Join(paths.PKI, pki.ClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.RenewRemote(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(paths.PKI, pki.ClientCertFile), filepath.Join(paths.M3PKI, pki.ClientCertFile)} {
		info, _, err := pki.ReadCertFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if info.Serial == old.Serial || info.CommonName != pki.NodeCN("client1") || info.NotAfter.Sub(info.Issued) != time.Hour {
			t.Errorf("%s after renewal: %+v, want a new certificate for %s valid 1h", f, info, pki.NodeCN("client1"))
		}
	}
	if _, err := pki.KeyPair(mustRead(t, filepath.Join(paths.M3PKI, pki.ClientCertFile)), mustRead(t, filepath.Join(paths.M3PKI, pki.ClientKeyFile))); err != nil {
		t.Errorf("M3's copy: %v", err)
	}

	cmp, put, err := cluster.Tombstone(cluster.Removed{Node: "client1", RemovedBy: "host1", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client().Txn(ctx).If(cmp).Then(put).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := client.RenewRemote(ctx); err == nil || !strings.Contains(err.Error(), "removed from the cluster") {
		t.Errorf("renewal of a removed host: %v, want a refusal", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
