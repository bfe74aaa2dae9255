package store_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// clusterMember is one host of a test cluster on its own loopback address.
type clusterMember struct {
	name string
	opts store.ClusterOptions
	id   uint64
	etcd *store.Etcd
}

// freePortsOn is freePorts on a given address.
func freePortsOn(t *testing.T, ip string, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Skipf("loopback alias %s unusable: %v", ip, err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newClusterMember issues the member's certificates from ca and picks its URLs.
func newClusterMember(t *testing.T, ca *pki.CA, name, ip string) *clusterMember {
	t.Helper()
	p := freePortsOn(t, ip, 2)
	dir := t.TempDir()
	peerCert, peerKey, err := ca.Issue(pki.IssueOptions{CommonName: pki.EtcdPeerCN, DNSNames: []string{name}, IPs: []net.IP{net.ParseIP(ip)}, Usage: pki.UsagePeer})
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.Issue(pki.IssueOptions{CommonName: "m3sup-client:" + name, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	return &clusterMember{name: name, opts: store.ClusterOptions{
		Name:      name,
		Dir:       filepath.Join(dir, "etcd"),
		ClientURL: fmt.Sprintf("https://%s:%d", ip, p[0]),
		PeerURL:   fmt.Sprintf("https://%s:%d", ip, p[1]),
		TLS: store.ClusterTLS{
			CAFile:         writeFile(t, filepath.Join(dir, "ca.crt"), ca.CertPEM()),
			CertFile:       writeFile(t, filepath.Join(dir, "peer.crt"), peerCert),
			KeyFile:        writeFile(t, filepath.Join(dir, "peer.key"), peerKey),
			ClientCertFile: writeFile(t, filepath.Join(dir, "client.crt"), cliCert),
			ClientKeyFile:  writeFile(t, filepath.Join(dir, "client.key"), cliKey),
		},
		AllowedPeerCN: pki.EtcdPeerCN,
		StartTimeout:  30 * time.Second,
	}}
}

func (m *clusterMember) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartClusterEtcd(ctx, m.opts)
	if err != nil {
		t.Fatalf("start %s: %v", m.name, err)
	}
	t.Cleanup(e.Close)
	m.etcd = e
	m.id = e.MemberID()
}

// join adds m as a learner through voter, starts it and promotes it.
func (m *clusterMember) join(t *testing.T, voters ...*clusterMember) {
	t.Helper()
	ctx := testCtx(t)
	id, members, err := store.AddLearner(ctx, voters[0].etcd.Client(), m.opts.PeerURL)
	if err != nil {
		t.Fatal(err)
	}
	var ic []string // what the join endpoint answers
	for _, x := range members {
		n := x.Name
		if x.ID == id {
			n = m.name
		}
		for _, u := range x.PeerURLs {
			ic = append(ic, n+"="+u)
		}
	}
	m.opts.State = store.StateExisting
	m.opts.InitialCluster = strings.Join(ic, ",")
	for _, v := range voters {
		m.opts.Endpoints = append(m.opts.Endpoints, v.opts.ClientURL)
	}
	m.start(t)
	if m.id != id {
		t.Fatalf("%s started as %x, added as %x", m.name, m.id, id)
	}
	if err := store.PromoteWhenReady(ctx, m.etcd.Client(), id); err != nil {
		t.Fatal(err)
	}
	// Promoting again is a no-op.
	if err := store.PromoteWhenReady(ctx, m.etcd.Client(), id); err != nil {
		t.Fatalf("second promote: %v", err)
	}
}

// directClient talks to exactly one member's client URL with cfg.
func directClient(t *testing.T, endpoint string, cfg *tls.Config) (*clientv3.Client, error) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: cfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func memberTLS(t *testing.T, ca *pki.CA, m *clusterMember, certBy *pki.CA) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientTLS(ca.CertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	if certBy != nil {
		c, k, err := certBy.Issue(pki.IssueOptions{CommonName: "probe", Usage: pki.UsageClient})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := pki.KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg
}

func voters(t *testing.T, cli *clientv3.Client) (voters, learners int) {
	t.Helper()
	ms, err := store.Members(testCtx(t), cli)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.IsLearner {
			learners++
		} else {
			voters++
		}
	}
	return voters, learners
}

func TestClusterJoinPromoteRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m1 := newClusterMember(t, ca, "node-1", "127.0.0.2")
	m2 := newClusterMember(t, ca, "node-2", "127.0.0.3")
	m3 := newClusterMember(t, ca, "node-3", "127.0.0.4")

	m1.start(t)
	ctx := testCtx(t)
	if _, err := m1.etcd.Client().Put(ctx, "/k", "v1"); err != nil {
		t.Fatal(err)
	}
	m2.join(t, m1)
	if v, l := voters(t, m1.etcd.Client()); v != 2 || l != 0 {
		t.Fatalf("after node-2: %d voters, %d learners", v, l)
	}
	m3.join(t, m1, m2)
	if v, l := voters(t, m1.etcd.Client()); v != 3 || l != 0 {
		t.Fatalf("after node-3: %d voters, %d learners", v, l)
	}

	// Every member serves reads and writes over mutual TLS.
	for i, m := range []*clusterMember{m1, m2, m3} {
		c, err := directClient(t, m.opts.ClientURL, memberTLS(t, ca, m, ca))
		if err != nil {
			t.Fatal(err)
		}
		val := fmt.Sprintf("via-%d", i)
		if _, err := c.Put(ctx, "/k", val); err != nil {
			t.Fatalf("put via %s: %v", m.name, err)
		}
		resp, err := c.Get(ctx, "/k")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
			t.Fatalf("get via %s: %v %v", m.name, resp, err)
		}
	}

	// A client without a CA-issued certificate is refused, and so is one
	// whose certificate comes from another CA.
	foreign, err := pki.NewCA("foreign", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*tls.Config{
		"no client cert":      memberTLS(t, ca, m1, nil),
		"foreign client cert": memberTLS(t, ca, m1, foreign),
	} {
		c, err := directClient(t, m1.opts.ClientURL, cfg)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = c.Put(pctx, "/k", "intruder")
			cancel()
		}
		if err == nil {
			t.Errorf("%s: put accepted", name)
		}
	}

	// With node-2 down, removing node-3 would leave node-1 alone among two
	// voters: refused, and the membership is unchanged.
	m2.etcd.Close()
	err = store.RemoveMember(ctx, m1.etcd.Client(), m3.id)
	if !errors.Is(err, store.ErrQuorumAtRisk) {
		t.Fatalf("remove node-3 with node-2 down: %v, want ErrQuorumAtRisk", err)
	}
	t.Log(err)
	if v, _ := voters(t, m1.etcd.Client()); v != 3 {
		t.Fatalf("membership changed: %d voters", v)
	}

	// node-2 back: node-3 leaves cleanly.
	m2.start(t)
	if err := store.RemoveMember(ctx, m1.etcd.Client(), m3.id); err != nil {
		t.Fatalf("remove node-3: %v", err)
	}
	m3.etcd.Close()
	if v, l := voters(t, m1.etcd.Client()); v != 2 || l != 0 {
		t.Fatalf("after removing node-3: %d voters, %d learners", v, l)
	}
	if err := store.RemoveMember(ctx, m1.etcd.Client(), m3.id); !errors.Is(err, store.ErrNotMember) {
		t.Errorf("remove node-3 again: %v, want ErrNotMember", err)
	}
	if _, err := m2.etcd.Client().Put(ctx, "/k", "after"); err != nil {
		t.Fatalf("put after removal: %v", err)
	}
}

func TestClusterOptionsRefused(t *testing.T) {
	ok := store.ClusterOptions{
		Name: "n", Dir: t.TempDir(), ClientURL: "https://127.0.0.1:1", PeerURL: "https://127.0.0.1:2",
		TLS: store.ClusterTLS{CAFile: "ca", CertFile: "c", KeyFile: "k", ClientCertFile: "cc", ClientKeyFile: "ck"},
	}
	tests := map[string]func(*store.ClusterOptions){
		"plain http client URL": func(o *store.ClusterOptions) { o.ClientURL = "http://127.0.0.1:1" },
		"plain http peer URL":   func(o *store.ClusterOptions) { o.PeerURL = "http://127.0.0.1:2" },
		"no TLS":                func(o *store.ClusterOptions) { o.TLS = store.ClusterTLS{} },
		"bad state":             func(o *store.ClusterOptions) { o.State = "joining" },
		"existing, no cluster":  func(o *store.ClusterOptions) { o.State = store.StateExisting },
		"no name":               func(o *store.ClusterOptions) { o.Name = "" },
	}
	for name, mutate := range tests {
		o := ok
		mutate(&o)
		if _, err := store.StartClusterEtcd(testCtx(t), o); err == nil {
			t.Errorf("%s: started", name)
		}
	}
}

func TestQuorumAfterRemoval(t *testing.T) {
	tests := []struct {
		name   string
		voters map[uint64]bool
		remove uint64
		ok     bool
	}{
		{"3 healthy, remove one", map[uint64]bool{1: true, 2: true, 3: true}, 3, true},
		{"remove the down one of 3", map[uint64]bool{1: true, 2: true, 3: false}, 3, true},
		{"remove a healthy one while another is down", map[uint64]bool{1: true, 2: false, 3: true}, 3, false},
		{"2 healthy, remove one", map[uint64]bool{1: true, 2: true}, 2, true},
		{"2 voters, one down", map[uint64]bool{1: true, 2: false}, 2, false},
		{"last voter", map[uint64]bool{1: true}, 1, false},
		{"5, two down, remove a down one", map[uint64]bool{1: true, 2: true, 3: true, 4: false, 5: false}, 5, true},
		{"5, two down, remove a healthy one", map[uint64]bool{1: true, 2: true, 3: true, 4: false, 5: false}, 1, false},
		{"5, three down", map[uint64]bool{1: true, 2: true, 3: false, 4: false, 5: false}, 5, false},
	}
	for _, tt := range tests {
		err := store.QuorumAfterRemoval(tt.voters, tt.remove)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, store.ErrQuorumAtRisk)) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// threeVoters starts node-1 and joins node-2 and node-3 to it as voters,
// all with certificates from one test CA (returned for more members).
func threeVoters(t *testing.T) (*pki.CA, *clusterMember, *clusterMember, *clusterMember) {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m1 := newClusterMember(t, ca, "node-1", "127.0.0.2")
	m2 := newClusterMember(t, ca, "node-2", "127.0.0.3")
	m3 := newClusterMember(t, ca, "node-3", "127.0.0.4")
	m1.start(t)
	m2.join(t, m1)
	m3.join(t, m1, m2)
	return ca, m1, m2, m3
}

// TestRemoveDeadVoter: a voter that is gone for good (`m3sup remove-host`)
// is removed by name from a live member. Removing the dead one of three
// leaves two, both healthy: allowed; etcd keeps working on two voters and
// removing it again is a no-op. Removing a healthy voter while another is
// dead is refused and changes nothing.
func TestRemoveDeadVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	_, m1, m2, m3 := threeVoters(t)
	ctx := testCtx(t)
	cli := m1.etcd.Client()

	m3.etcd.Close() // node-3 dies for good
	if err := store.CheckRemoval(ctx, cli, m2.id); !errors.Is(err, store.ErrQuorumAtRisk) {
		t.Fatalf("check removal of healthy node-2 with node-3 dead: %v, want ErrQuorumAtRisk", err)
	}
	if removed, err := store.RemoveMemberNamed(ctx, cli, "node-2"); removed || !errors.Is(err, store.ErrQuorumAtRisk) {
		t.Fatalf("remove healthy node-2 with node-3 dead: %t, %v, want refused with ErrQuorumAtRisk", removed, err)
	}
	if v, _ := voters(t, cli); v != 3 {
		t.Fatalf("membership changed by a refused removal: %d voters", v)
	}
	if err := store.CheckRemoval(ctx, cli, m3.id); err != nil {
		t.Fatalf("check removal of dead node-3 with node-1 and node-2 up: %v", err)
	}
	if removed, err := store.RemoveMemberNamed(ctx, cli, "node-3"); !removed || err != nil {
		t.Fatalf("remove dead node-3: %t, %v", removed, err)
	}
	if v, l := voters(t, cli); v != 2 || l != 0 {
		t.Fatalf("after removing dead node-3: %d voters, %d learners", v, l)
	}
	if removed, err := store.RemoveMemberNamed(ctx, cli, "node-3"); removed || err != nil {
		t.Fatalf("remove node-3 again: %t, %v, want a no-op", removed, err)
	}
	if _, err := m2.etcd.Client().Put(ctx, "/k", "after"); err != nil {
		t.Fatalf("put on two voters: %v", err)
	}
}

// TestConnectCluster: an etcd client-only host's Etcd runs no member and
// reaches the voters over mutual TLS; without a CA-issued client
// certificate, or with no voter answering, it fails within its timeout.
func TestConnectCluster(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m1 := newClusterMember(t, ca, "node-1", "127.0.0.2")
	m1.start(t)
	ctx := testCtx(t)
	tlsFiles := m1.opts.TLS
	o := store.ClientOptions{Endpoints: []string{m1.opts.ClientURL}, CAFile: tlsFiles.CAFile,
		CertFile: tlsFiles.ClientCertFile, KeyFile: tlsFiles.ClientKeyFile, StartTimeout: 10 * time.Second}
	e, err := store.ConnectCluster(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Member() || e.IsLeader() || e.MemberID() != 0 || e.Err() != nil || e.Stopped() != nil {
		t.Fatalf("client-only Etcd claims a member: member %t leader %t id %x", e.Member(), e.IsLeader(), e.MemberID())
	}
	if e.Endpoint() != m1.opts.ClientURL {
		t.Fatalf("Endpoint() = %q, want the voter's %q", e.Endpoint(), m1.opts.ClientURL)
	}
	if _, err := e.Client().Put(ctx, "/m3sup/v1/x", "v"); err != nil {
		t.Fatalf("put through the client-only Etcd: %v", err)
	}
	if ms, err := store.Members(ctx, e.Client()); err != nil || len(ms) != 1 {
		t.Fatalf("members through the client-only Etcd: %v, %v", ms, err)
	}
	if err := store.CheckRemoval(ctx, e.Client(), m1.id); !errors.Is(err, store.ErrQuorumAtRisk) {
		t.Fatalf("CheckRemoval of the last voter = %v, want ErrQuorumAtRisk", err)
	}
	e.Close()
	e.Close() // idempotent

	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := other.Issue(pki.IssueOptions{CommonName: "intruder", Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := o
	bad.CertFile, bad.KeyFile = writeFile(t, filepath.Join(dir, "c.crt"), foreignCert), writeFile(t, filepath.Join(dir, "c.key"), foreignKey)
	bad.StartTimeout = 2 * time.Second
	if e, err := store.ConnectCluster(ctx, bad); err == nil {
		e.Close()
		t.Fatal("a client certificate from another CA connected")
	}
	for name, eps := range map[string][]string{"none": nil, "plain http": {"http://127.0.0.2:2379"}} {
		bad := o
		bad.Endpoints = eps
		if e, err := store.ConnectCluster(ctx, bad); err == nil {
			e.Close()
			t.Fatalf("%s endpoints accepted", name)
		}
	}
}

// TestRemovedMember: a member removed while it runs stops on its own with
// ErrMemberRemoved; a member removed while it was down is refused by its
// peers when it starts again on its old data dir, and StartClusterEtcd
// says so (ErrMemberRemoved) well before its start timeout.
func TestRemovedMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four etcd members")
	}
	ca, m1, m2, m3 := threeVoters(t)
	ctx := testCtx(t)
	cli := m1.etcd.Client()

	// node-3 removed while it runs.
	if err := m3.etcd.StopErr(); err != nil {
		t.Fatalf("StopErr of a running member: %v", err)
	}
	if err := store.RemoveMember(ctx, cli, m3.id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m3.etcd.Stopped():
	case <-time.After(30 * time.Second):
		t.Fatal("node-3 still runs 30 s after its removal")
	}
	if err := m3.etcd.StopErr(); !errors.Is(err, store.ErrMemberRemoved) {
		t.Fatalf("node-3 StopErr after its removal = %v, want ErrMemberRemoved", err)
	}
	m3.etcd.Close()
	if err := m3.etcd.StopErr(); err != nil {
		t.Fatalf("StopErr after Close = %v, want nil", err)
	}

	// node-4 joins, dies, is removed while down, and comes back.
	m4 := newClusterMember(t, ca, "node-4", "127.0.0.5")
	m4.join(t, m1, m2)
	m4.etcd.Close()
	if err := store.RemoveMember(ctx, cli, m4.id); err != nil {
		t.Fatal(err)
	}
	m4.opts.StartTimeout = time.Minute
	begin := time.Now()
	e, err := store.StartClusterEtcd(ctx, m4.opts)
	if err == nil {
		e.Close()
		t.Fatal("a removed member started again")
	}
	if !errors.Is(err, store.ErrMemberRemoved) {
		t.Fatalf("start of a removed member: %v, want ErrMemberRemoved", err)
	}
	if took := time.Since(begin); took > 20*time.Second {
		t.Fatalf("start of a removed member failed after %s, want well before its start timeout", took)
	}
	t.Logf("removed member refused after %s: %v", time.Since(begin).Round(time.Millisecond), err)
	if v, l := voters(t, cli); v != 2 || l != 0 {
		t.Fatalf("after the removed members came back: %d voters, %d learners", v, l)
	}
}
