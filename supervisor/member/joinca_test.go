package member

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// oneVoter is a membership with one started voter; AddLearner adds one.
type oneVoter struct {
	mu      sync.Mutex
	members []join.Member
}

func (m *oneVoter) Members(context.Context) ([]join.Member, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]join.Member(nil), m.members...), nil
}

func (m *oneVoter) AddLearner(_ context.Context, peerURL string) (uint64, []join.Member, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := uint64(len(m.members) + 1)
	m.members = append(m.members, join.Member{ID: id, PeerURLs: []string{peerURL}, IsLearner: true})
	return id, append([]join.Member(nil), m.members...), nil
}

func (m *oneVoter) RemoveMember(_ context.Context, id uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members = slices.DeleteFunc(m.members, func(x join.Member) bool { return x.ID == id })
	return nil
}

// TestJoinedVoterHoldsCA: a voter that joins keeps the CA key under its
// pki dir (not in the copy M3's containers see), loads it on start, issues
// tokens that pin the cluster CA, serves joins with cluster.joinListen; a
// client-only host gets no CA key and serves none.
func TestJoinedVoterHoldsCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t, "first")
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caHash := strings.TrimPrefix(ca.Fingerprint(), "sha256:")
	tokens := &join.Tokens{KV: e.Client(), CAHash: caHash}
	tok, _, err := tokens.Create(ctx, join.TokenOptions{TTL: time.Hour, Uses: 2, Voter: true, Description: "test"})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(maxVoters int) string {
		h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: tokens, MaxVoters: maxVoters,
			Members: &oneVoter{members: []join.Member{{ID: 1, Name: "host1", PeerURLs: []string{"https://127.0.0.2:2380"}, ClientURLs: []string{"https://127.0.0.2:2379"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(h)
		if srv.TLS, err = join.ServerTLS(ca, []string{"127.0.0.1"}, time.Now(), 0); err != nil {
			t.Fatal(err)
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	joined := func(name, ip, url string) *Member {
		dir := t.TempDir()
		def := config.Default().Etcd
		o := Options{NodeName: name, Advertise: ip, MultiHost: true, Joined: true, Logger: zap.NewNop(),
			ClientURL: def.ClientURL, PeerURL: def.PeerURL,
			Paths: Paths{PKI: filepath.Join(dir, "pki"), M3PKI: filepath.Join(dir, "pki", "m3"), ClusterFile: filepath.Join(dir, "cluster.json")}}
		j := &join.Joiner{URL: url, Token: tok.Encode(), NodeName: name, Advertise: ip, EtcdURLs: o.AdvertisedURLs,
			PKIDir: o.Paths.PKI, ClusterFile: o.Paths.ClusterFile, Logger: zap.NewNop()}
		if err := j.Join(ctx); err != nil {
			t.Fatal(err)
		}
		return &Member{o: o, etcd: e}
	}

	s := joined("host2", "127.0.0.3", serve(3))
	fi, err := os.Stat(filepath.Join(s.o.Paths.PKI, pki.CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the voter's CA key: %v, mode %v (want 0600)", err, fi.Mode())
	}
	if err := s.loadJoinedCA(); err != nil || s.CA() == nil || s.CA().Fingerprint() != ca.Fingerprint() {
		t.Fatalf("loadJoinedCA: %v, CA %v", err, s.CA())
	}
	if err := pki.CopyFiles(s.o.Paths.PKI, s.o.Paths.M3PKI, pki.CACertFile, pki.ClientCertFile, pki.ClientKeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.o.Paths.M3PKI, pki.CAKeyFile)); err == nil {
		t.Fatal("M3's pki copy holds the CA key")
	}

	// Tokens made on this voter pin the cluster CA and pass the first host's check.
	var ts join.TokenService
	ts.Enable(e.Client(), s.CA())
	text, _, err := ts.CreateToken(ctx, join.TokenOptions{TTL: time.Hour, Description: "made on host2"})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := join.ParseToken(text)
	if err != nil || t2.CAHash != caHash {
		t.Fatalf("token from host2: %v, pins %s (want %s)", err, t2.CAHash, caHash)
	}
	if _, err := tokens.Check(ctx, t2); err != nil {
		t.Fatalf("the first host refuses host2's token: %v", err)
	}

	s.o.JoinListen = "127.0.0.1:0"
	execute, interrupt, err := s.JoinServer()
	if err != nil || execute == nil {
		t.Fatalf("joinServer on a voter that holds the CA: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- execute() }()
	interrupt(nil)
	if err := <-done; err != nil {
		t.Fatalf("join server: %v", err)
	}

	// Beyond maxVoters (1 here): a client-only host, no CA key.
	c := joined("host3", "127.0.0.4", serve(1))
	if _, err := os.Stat(filepath.Join(c.o.Paths.PKI, pki.CAKeyFile)); err == nil {
		t.Fatal("a client-only host got the CA key")
	}
	if cf, err := join.ReadClusterFile(c.o.Paths.ClusterFile); err != nil || cf.Role != join.RoleClient {
		t.Fatalf("client-only host's cluster.json: %+v, %v", cf, err)
	}
	c.o.JoinListen = "127.0.0.1:0"
	if execute, _, err := c.JoinServer(); err != nil || execute != nil {
		t.Fatalf("JoinServer on a host without the CA: %v, serving %t", err, execute != nil)
	}
}
