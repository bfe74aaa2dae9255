package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// localOptions is a single node whose etcd listens on free loopback
// ports, configured with plain http:// URLs as older configs (and the
// defaults) have them.
func localOptions(t *testing.T, dataDir string) Options {
	t.Helper()
	p := etcdtest.FreePorts(t, "127.0.0.1", 2)
	return Options{
		NodeName: "n1", EtcdName: "n1",
		ClientURL:    fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		PeerURL:      fmt.Sprintf("http://127.0.0.1:%d", p[1]),
		StartTimeout: config.Default().Etcd.StartTimeout.D(),
		Paths: Paths{PKI: filepath.Join(dataDir, "pki"), M3PKI: filepath.Join(dataDir, "pki", "m3"),
			Etcd: filepath.Join(dataDir, "etcd"), ClusterFile: filepath.Join(dataDir, "cluster.json")},
		Logger: zap.NewNop(),
	}
}

func tlsClient(t *testing.T, endpoint, dir, name string, caFile string) *clientv3.Client {
	t.Helper()
	tc, err := transport.TLSInfo{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key"), TrustedCAFile: caFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLocalEtcdRootOnly: the single node's etcd serves only mutual TLS
// with certificates under a 0700 dir, on both ports; plain HTTP and a TLS
// client without a certificate get nothing (no KV, no /metrics, /version,
// /members on the peer port); M3's certificate reaches only M3's keys.
// The data dir of a version that served plain HTTP is taken over: its data
// stays and the recorded peer URL moves to https.
func TestLocalEtcdRootOnly(t *testing.T) {
	dataDir := t.TempDir()
	o := localOptions(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An earlier m3sup: plain HTTP, no auth, a spec in it.
	old, err := store.StartEtcd(ctx, store.EtcdOptions{Name: o.EtcdName, Dir: o.Paths.Etcd, ClientURL: o.ClientURL, PeerURL: o.PeerURL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Client().Put(ctx, "/m3sup/v1/old", "kept"); err != nil {
		t.Fatal(err)
	}
	old.Close()

	for round := range 2 { // the upgrade, then a restart of the secure setup
		m, err := Start(ctx, o)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		e := m.Etcd()
		got, err := e.Client().Get(ctx, "/m3sup/v1/old")
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "kept" {
			t.Fatalf("round %d: data of the old data dir: %v %v", round, got, err)
		}
		ms, err := store.Members(ctx, e.Client())
		if err != nil || len(ms) != 1 || !strings.HasPrefix(ms[0].PeerURLs[0], "https://") || !strings.HasPrefix(ms[0].ClientURLs[0], "https://") {
			t.Fatalf("round %d: members %+v %v", round, ms, err)
		}
		e.Close()
	}
	fi, err := os.Stat(o.Paths.PKI)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("pki dir: %v %v", fi.Mode(), err)
	}

	m, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.CA() != nil {
		t.Error("a single node returns its CA as the cluster CA")
	}
	if me := m.M3Etcd(); me.Voters != nil || me.TLS == nil || me.TLS.CAPath != ContainerPKI+"/"+pki.CACertFile {
		t.Errorf("M3's etcd on a single node: %+v", me)
	}
	hostPort := strings.TrimPrefix(o.ClientURL, "http://")
	peerHostPort := strings.TrimPrefix(o.PeerURL, "http://")

	// Plain HTTP on both ports, and HTTPS without a client certificate.
	for _, u := range []string{"http://" + hostPort + "/version", "http://" + peerHostPort + "/members", "http://" + peerHostPort + "/metrics"} {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("GET %s: %s, want refused", u, resp.Status)
			}
		}
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}, Timeout: 3 * time.Second}
	for _, u := range []string{"https://" + hostPort + "/version", "https://" + peerHostPort + "/members", "https://" + peerHostPort + "/metrics", "https://" + peerHostPort + "/version"} {
		if resp, err := insecure.Get(u); err == nil {
			resp.Body.Close()
			t.Errorf("GET %s without a certificate: %s, want a TLS error", u, resp.Status)
		}
	}
	plain, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + hostPort}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	if _, err := plain.Put(pctx, store.ClusterKey, "{}"); err == nil {
		t.Error("a plain-HTTP client wrote the cluster spec")
	}
	pcancel()

	// M3's certificate: M3's keys only.
	ca := filepath.Join(o.Paths.PKI, pki.CACertFile)
	m3c := tlsClient(t, "https://"+hostPort, o.Paths.M3PKI, "etcd-client", ca)
	if _, err := m3c.Put(ctx, "_sd.placement/default_env/m3db", "x"); err != nil {
		t.Errorf("M3's certificate cannot write M3's placement: %v", err)
	}
	for _, k := range []string{store.ClusterKey, store.TokensPrefix + "t1", "/m3sup/v1/hosts/n1/controls"} {
		if _, err := m3c.Put(ctx, k, "{}"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("M3's certificate writing %s: %v, want permission denied", k, err)
		}
	}
	if _, err := m3c.Get(ctx, store.ClusterKey); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("M3's certificate reading %s: %v, want permission denied", store.ClusterKey, err)
	}
	// The member certificate is no etcd user.
	peer := tlsClient(t, "https://"+hostPort, o.Paths.PKI, "etcd-peer", ca)
	if _, err := peer.Put(ctx, store.ClusterKey, "{}"); err == nil {
		t.Error("the member certificate wrote the cluster spec")
	}
	m.Close()

	// The same data under another node name (a backup restored onto
	// another host): the setup runs as root, so the new host's identity
	// gets its user instead of being locked out.
	o2 := localOptions(t, dataDir)
	o2.NodeName = "n2"
	m2, err := Start(ctx, o2)
	if err != nil {
		t.Fatalf("start under another node name: %v", err)
	}
	defer m2.Close()
	if _, err := m2.Etcd().Client().Put(ctx, "/m3sup/v1/renamed", "ok"); err != nil {
		t.Fatalf("host n2 on n1's data: %v", err)
	}
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // the test checks that the server refuses a client without a certificate

// TestAuthPrefixesAgree: the key prefixes store's etcd roles name are the
// ones the cluster and join packages write.
func TestAuthPrefixesAgree(t *testing.T) {
	for _, p := range [][2]string{
		{store.RemovedPrefix, cluster.RemovedPrefix},
		{store.LeavingPrefix, cluster.LeavingPrefix},
		{store.TokensPrefix, join.TokenPrefix},
	} {
		if p[0] != p[1] {
			t.Errorf("store has %q, the writer %q", p[0], p[1])
		}
	}
}
