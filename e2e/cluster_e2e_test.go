package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/internal/e2etest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// hostNode is one m3sup of a multi-host test, on its own loopback address.
type hostNode struct {
	*node
	ip, joinURL string
	clientOnly  bool // an etcd client-only host (tests that care set it)
}

// freePortsOn returns n ports free on ip.
func freePortsOn(t testing.TB, ip string, n int) []int {
	t.Helper()
	return e2etest.FreePorts(t, ip, n)
}

// newHostNode writes a multi-host config for a node on ip; first makes it
// serve the join endpoint.
func newHostNode(t testing.TB, name, ip string, first bool, releaseURL, checksum string) *hostNode {
	t.Helper()
	return newHostNodeWith(t, name, ip, first, releaseURL, checksum, hostOpts{})
}

// hostOpts are the per-host settings a test may change: the replication
// factor (zero: 3), the host's roles (nil: both) and whether a host that is
// not the first serves joins too (cluster.joinListen).
type hostOpts struct {
	rf         int
	roles      []string
	joinListen bool
	// certLifetime is cluster.certLifetime ("": the default).
	certLifetime string
}

func newHostNodeWith(t testing.TB, name, ip string, first bool, releaseURL, checksum string, o hostOpts) *hostNode {
	t.Helper()
	if o.rf == 0 {
		o.rf = 3
	}
	var roles string
	if len(o.roles) > 0 {
		roles = "  roles: [" + strings.Join(o.roles, ", ") + "]\n"
	}
	if o.certLifetime != "" {
		roles += "  certLifetime: " + o.certLifetime + "\n"
	}
	base, err := os.MkdirTemp("", "m3sup-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	p := freePortsOn(t, ip, 10)
	n := &node{
		t:          t,
		dir:        filepath.Join(base, "data"),
		socket:     filepath.Join(base, "run", "m3sup.sock"),
		configFile: filepath.Join(base, "m3sup.yaml"),
		etcdURL:    fmt.Sprintf("https://%s:%d", ip, p[0]),
		coordURL:   fmt.Sprintf("http://%s:%d", ip, p[7]),
		logFile:    filepath.Join(base, "m3sup.log"),
		pids:       map[string]uint32{},
	}
	h := &hostNode{node: n, ip: ip}
	joinListen := ""
	if first || o.joinListen {
		joinListen = fmt.Sprintf("  joinListen: %s:%d\n", ip, p[9])
		h.joinURL = fmt.Sprintf("https://%s:%d", ip, p[9])
	}
	cfg := fmt.Sprintf(`dataDir: %s
nodeName: %s
api:
  socket: %s
etcd:
  clientURL: http://%s:%d
  peerURL: http://%s:%d
runtime:
  containerd:
    mode: managed
    namespace: m3sup-e2e-%s
release:
  version: "1.5.0"
  url: %s
  checksum: %s
dbnode:
  listenAddress: %s:%d
  clusterListenAddress: %s:%d
  httpNodeListenAddress: %s:%d
  httpClusterListenAddress: %s:%d
  debugListenAddress: %s:%d
  stopTimeout: 30s
coordinator:
  listenAddress: %s:%d
  metricsListenAddress: %s:%d
cluster:
  numShards: 16
  replicationFactor: %d
  readyTimeout: 4m
  advertise: %s
%s%s  namespaces:
    - name: default
      retention: 48h
      blockSize: 2h
`, n.dir, name, n.socket, ip, p[0], ip, p[1], strings.TrimPrefix(filepath.Base(base), "m3sup-e2e-"), releaseURL, checksum,
		ip, p[2], ip, p[3], ip, p[4], ip, p[5], ip, p[6], ip, p[7], ip, p[8], o.rf, ip, joinListen, roles)
	if err := os.WriteFile(n.configFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.cleanup)
	return h
}

// stopHosts sends SIGTERM to every host at once, then expects each m3sup
// to exit 0 within two minutes (its containers stopped).
func stopHosts(t testing.TB, hosts ...*hostNode) {
	t.Helper()
	for _, h := range hosts {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, h := range hosts {
		if code := h.waitExit(2 * time.Minute); code != 0 {
			t.Fatalf("%s exited %d; log:\n%s", h.ip, code, h.log())
		}
	}
}

// tlsEtcd is an etcd client with the first host's client certificate.
func (h *hostNode) tlsEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	dir := filepath.Join(h.dir, "pki")
	tc, err := transport.TLSInfo{CertFile: filepath.Join(dir, "etcd-client.crt"), KeyFile: filepath.Join(dir, "etcd-client.key"),
		TrustedCAFile: filepath.Join(dir, pki.CACertFile)}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{h.etcdURL}, DialTimeout: 5 * time.Second, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createToken runs `m3sup token create --ttl 1h` with flags (e.g.
// "--voter", "--uses", "2") against h's socket, retrying while the daemon
// (or its etcd) is still starting.
func (h *hostNode) createToken(t testing.TB, timeout time.Duration, flags ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cmd := m3sup(append([]string{"token", "create", "--ttl", "1h", "--socket", h.socket}, flags...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
		select {
		case <-h.done:
			t.Fatalf("first host exited (%v); log:\n%s", h.exitErr, h.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("token create: %v: %s", err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitVoters waits until etcd has want members, none of them a learner.
func waitVoters(t testing.TB, cli *clientv3.Client, want int, timeout time.Duration, hosts ...*hostNode) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		for _, h := range hosts {
			select {
			case <-h.done:
				t.Fatalf("%s exited (%v); log:\n%s", h.ip, h.exitErr, h.log())
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := cli.MemberList(ctx)
		cancel()
		if err == nil {
			voters := 0
			var desc []string
			for _, m := range resp.Members {
				if !m.IsLearner && m.Name != "" {
					voters++
				}
				desc = append(desc, fmt.Sprintf("%s learner=%t %v", m.Name, m.IsLearner, m.ClientURLs))
			}
			last = strings.Join(desc, "; ")
			if voters == want && len(resp.Members) == want {
				t.Logf("etcd members: %s", last)
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("etcd did not reach %d voters in %s; last: %s", want, timeout, last)
}

// TestE2EThreeHosts: a first host with cluster.joinListen runs etcd over mutual
// TLS and issues a token; two hosts join with --join/--token and become etcd
// voters (learner, then promoted); their M3 configs name every voter over
// TLS. A wrong token, a token pinning another CA and an http:// join URL
// each make a further `m3sup run --join` exit non-zero with a clear message
// before anything starts. Then the cluster controller inits the placement
// (3 instances, RF 3) and every host becomes ready; a point written through
// host 1's coordinator reads back through host 3's.
func TestE2EThreeHosts(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()

	h1 := newHostNode(t, "host1", "127.0.0.2", true, rs.url, sum)
	h1.start()
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "2") // host2 and host3
	if _, err := join.ParseToken(tok); err != nil {
		t.Fatalf("token create printed %q: %v", tok, err)
	}
	t.Logf("first host up, token created after %s", time.Since(start).Round(100*time.Millisecond))
	cli := h1.tlsEtcd(t)

	h2 := newHostNode(t, "host2", "127.0.0.3", false, rs.url, sum)
	h2.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 2, 2*time.Minute, h1, h2)
	t.Logf("host2 joined as a voter after %s", time.Since(start).Round(100*time.Millisecond))

	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h3 := newHostNode(t, "host3", "127.0.0.4", false, rs.url, sum)
	h3.start("--join", h1.joinURL, "--token-file", tokFile)
	waitVoters(t, cli, 3, 2*time.Minute, h1, h2, h3)
	t.Logf("host3 joined as a voter after %s", time.Since(start).Round(100*time.Millisecond))

	// The joined host remembers its join, and M3 on it is configured for
	// every voter over TLS.
	if _, err := os.Stat(filepath.Join(h3.dir, "cluster.json")); err != nil {
		t.Fatalf("joined host has no cluster.json: %v", err)
	}
	coordYAML := filepath.Join(h3.dir, "components", "m3coordinator", "config", "m3coordinator.yml")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(coordYAML)
		if err == nil {
			s := string(b)
			ok := strings.Contains(s, "caCrtPath: /etc/m3sup-pki/ca.crt")
			for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
				ok = ok && strings.Contains(s, ip+":")
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host3's coordinator config lacks TLS or a voter:\n%s", s)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("host3's coordinator config: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// A joined voter received the CA with its join: it issues tokens that
	// pin the same CA; M3's copy of its pki dir holds no CA key.
	c3 := api.NewClient(h3.socket)
	tok3, err := c3.CreateToken(context.Background(), join.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatalf("token create on a joined voter: %v", err)
	}
	if p3, err := join.ParseToken(tok3.Token); err != nil || !strings.HasPrefix(tok, "K10"+p3.CAHash+"::") {
		t.Fatalf("token from host3 %v pins another CA than host1's: %v", p3, err)
	}
	if _, err := os.Stat(filepath.Join(h3.dir, "pki", pki.CAKeyFile)); err != nil {
		t.Fatalf("joined voter holds no CA key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h3.dir, "pki", "m3", pki.CAKeyFile)); err == nil {
		t.Fatal("the CA key is in the pki dir M3's containers see")
	}

	// Refused joins: each exits non-zero with a clear message, nothing started.
	parsed, _ := join.ParseToken(tok)
	wrongSecret := join.Token{CAHash: parsed.CAHash, ID: parsed.ID, Secret: strings.Repeat("a", len(parsed.Secret))}.Encode()
	other, err := pki.NewCA("another cluster", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := join.Token{CAHash: strings.TrimPrefix(other.Fingerprint(), "sha256:"), ID: parsed.ID, Secret: parsed.Secret}.Encode()
	for _, c := range []struct {
		name, url, token, want string
	}{
		{"wrong token", h1.joinURL, wrongSecret, "join refused"},
		{"token pinning another CA", h1.joinURL, otherCA, "does not hold the CA the token pins"},
		{"plain http", "http://" + strings.TrimPrefix(h1.joinURL, "https://"), tok, "plain-HTTP join refused"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			h4 := newHostNode(t, "host4", "127.0.0.5", false, rs.url, sum)
			h4.start("--join", c.url, "--token", c.token)
			if code := h4.waitExit(time.Minute); code == 0 {
				t.Fatalf("refused join exited 0; log:\n%s", h4.log())
			}
			if log := h4.log(); !strings.Contains(log, c.want) {
				t.Fatalf("log lacks %q:\n%s", c.want, log)
			}
			for _, p := range []string{"etcd", "containerd", "cluster.json", "pki", "components"} {
				if _, err := os.Stat(filepath.Join(h4.dir, p)); err == nil {
					t.Fatalf("refused join left %s behind", p)
				}
			}
			if _, err := os.Stat(h4.socket); err == nil {
				t.Fatal("refused join opened its API socket")
			}
			t.Logf("%s: %s", c.name, lastLine(h4.log()))
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := cli.MemberList(ctx); err != nil || len(resp.Members) != 3 {
		t.Fatalf("after refused joins: members %v, err %v (want 3, no stray learner)", resp, err)
	}

	// M3 across the three hosts: the controller leader inits the placement
	// once three hosts registered; every host becomes ready.
	for _, h := range []*hostNode{h1, h2, h3} {
		st := h.waitReady(6 * time.Minute)
		t.Logf("%s ready after %s: %d instances, shards %v", h.ip, time.Since(start).Round(100*time.Millisecond), st.M3.Instances, st.M3.Shards)
	}
	mc := &m3.Client{BaseURL: h1.coordURL}
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	p, exists, err := mc.Placement(pctx)
	pcancel()
	if err != nil || !exists {
		t.Fatalf("placement: exists %t, err %v", exists, err)
	}
	if len(p.Instances) != 3 || !p.AllAvailable() || p.ReplicaFactor != 3 || p.NumShards != 16 {
		t.Fatalf("placement: %d instances, RF %d, %d shards, states %v; want 3 instances, RF 3, 16 shards all AVAILABLE",
			len(p.Instances), p.ReplicaFactor, p.NumShards, p.ShardStates())
	}
	for id, in := range p.Instances {
		t.Logf("placement instance %s: endpoint %s, group %s, %d shards", id, in.Endpoint, in.IsolationGroup, len(in.Shards))
	}
	// A write through each host's coordinator reads back through every
	// coordinator.
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	all := []*hostNode{h1, h2, h3}
	for i, w := range all {
		metric := fmt.Sprintf("m3sup_e2e_three_hosts_via_host%d", i+1)
		writeAndRead(t, w.coordURL, metric, ts, float64(7+i))
		for _, r := range all {
			readBack(t, r.coordURL, metric, ts, float64(7+i))
		}
	}
	t.Logf("a write through each host's coordinator read back through every one after %s", time.Since(start).Round(100*time.Millisecond))

	// A joined host restarts from cluster.json without joining again (the
	// token is revoked first, so a second join would be refused).
	rev := m3sup("token", "revoke", parsed.ID, "--socket", h1.socket)
	if out, err := rev.CombinedOutput(); err != nil {
		t.Fatalf("token revoke: %v: %s", err, out)
	}
	if code := h3.stop(2 * time.Minute); code != 0 {
		t.Fatalf("host3 exited %d; log:\n%s", code, h3.log())
	}
	restart := time.Now()
	h3.start("--join", h1.joinURL, "--token-file", tokFile)
	h3.waitReady(4 * time.Minute)
	if !strings.Contains(h3.log(), "already joined") {
		t.Fatalf("restarted host3 did not start from cluster.json; log:\n%s", h3.log())
	}
	waitVoters(t, cli, 3, time.Minute, h1, h2, h3)
	readBack(t, h3.coordURL, "m3sup_e2e_three_hosts_via_host1", ts, 7)
	t.Logf("host3 restarted without a new join, ready again in %s", time.Since(restart).Round(100*time.Millisecond))

	// Losing a host (power cut) loses no majority write; it comes back —
	// started without --join, as a unit file that names only the config
	// would: cluster.json says it joined.
	loseHost(t, cli, h2, h1)

	// Safe rolling change: a dbnode-only apply restarts one host at a time.
	rollDBNodes(t, cli, h1, h2, h3)

	stopHosts(t, h3, h2, h1)
	t.Logf("total %s", time.Since(start).Round(100*time.Millisecond))
}
