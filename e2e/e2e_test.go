package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/internal/e2etest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// releaseServer serves the tarball over real HTTP and counts requests.
type releaseServer struct {
	*httptest.Server
	requests atomic.Int64
	url      string
}

func serveRelease(t testing.TB, tarball string) *releaseServer {
	rs := &releaseServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.requests.Add(1)
		http.ServeFile(w, r, tarball)
	}))
	t.Cleanup(rs.Close)
	rs.url = rs.Server.URL + "/" + filepath.Base(tarball)
	return rs
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	return freePortsOn(t, "127.0.0.1", n)
}

// node is one m3sup under test: its config, dirs and ports.
type node struct {
	t          testing.TB
	dir        string // data dir
	socket     string
	configFile string
	etcdURL    string
	peerURL    string // as configured (http://); served as https
	coordURL   string
	logFile    string
	cmd        *exec.Cmd
	done       chan struct{}
	exitErr    error
	pids       map[string]uint32
	notify     *notifySocket
}

// notifySocket is a real unix datagram socket standing in for systemd's
// NOTIFY_SOCKET; it collects every message m3sup sends.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t testing.TB, dir string) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(dir, "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ns.conn = conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, strings.Split(strings.TrimSpace(string(buf[:n])), "\n")...)
			ns.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return ns
}

func (ns *notifySocket) messages() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.msgs...)
}

func (ns *notifySocket) has(prefix string) bool {
	for _, m := range ns.messages() {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

type nodeOpts struct {
	releaseURL, checksum string
	numShards            int
	extraConfig          string // appended to the config file: more top-level keys
}

func newNode(t testing.TB, o nodeOpts) *node {
	t.Helper()
	base, err := os.MkdirTemp("", "m3sup-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	p := freePorts(t, 9)
	n := &node{
		t:          t,
		dir:        filepath.Join(base, "data"),
		socket:     filepath.Join(base, "run", "m3sup.sock"),
		configFile: filepath.Join(base, "m3sup.yaml"),
		etcdURL:    fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		peerURL:    fmt.Sprintf("http://127.0.0.1:%d", p[1]),
		coordURL:   fmt.Sprintf("http://127.0.0.1:%d", p[7]),
		logFile:    filepath.Join(base, "m3sup.log"),
		pids:       map[string]uint32{},
	}
	if o.numShards == 0 {
		o.numShards = 16
	}
	cfg := fmt.Sprintf(`dataDir: %s
nodeName: e2e-node
api:
  socket: %s
etcd:
  clientURL: %s
  peerURL: %s
runtime:
  containerd:
    mode: managed
    namespace: m3sup-e2e-%s
release:
  version: "1.5.0"
  url: %s
  checksum: %s
dbnode:
  listenAddress: 127.0.0.1:%d
  clusterListenAddress: 127.0.0.1:%d
  httpNodeListenAddress: 127.0.0.1:%d
  httpClusterListenAddress: 127.0.0.1:%d
  debugListenAddress: 127.0.0.1:%d
  stopTimeout: 30s
coordinator:
  listenAddress: 127.0.0.1:%d
  metricsListenAddress: 127.0.0.1:%d
cluster:
  numShards: %d
  readyTimeout: 4m
  namespaces:
    - name: default
      retention: 48h
      blockSize: 2h
`, n.dir, n.socket, n.etcdURL, n.peerURL, strings.TrimPrefix(filepath.Base(base), "m3sup-e2e-"), o.releaseURL, o.checksum, p[2], p[3], p[4], p[5], p[6], p[7], p[8], o.numShards)
	cfg += o.extraConfig
	if err := os.WriteFile(n.configFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.cleanup)
	return n
}

// start runs `m3sup run` in the background.
func (n *node) start(extra ...string) {
	n.t.Helper()
	logf, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	args := append([]string{"run", "--config", n.configFile}, extra...)
	n.cmd = m3sup(args...)
	n.cmd.Env = os.Environ()
	if n.notify != nil {
		n.cmd.Env = append(n.cmd.Env, "NOTIFY_SOCKET="+n.notify.path)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() {
		n.exitErr = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
}

func (n *node) log() string {
	b, _ := os.ReadFile(n.logFile)
	return string(b)
}

// waitExit waits for m3sup to exit and returns its exit code.
func (n *node) waitExit(timeout time.Duration) int {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(timeout):
		n.t.Fatalf("m3sup did not exit within %s; log:\n%s", timeout, n.log())
	}
	if n.exitErr == nil {
		return 0
	}
	if ee, ok := n.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	n.t.Fatalf("wait: %v", n.exitErr)
	return -1
}

func (n *node) stop(timeout time.Duration) int {
	n.t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	return n.waitExit(timeout)
}

// waitReady polls the daemon's status over its unix socket until ready.
func (n *node) waitReady(timeout time.Duration) api.Status {
	n.t.Helper()
	c := api.NewClient(n.socket)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last api.Status
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			n.t.Fatalf("m3sup exited before ready (%v); log:\n%s", n.exitErr, n.log())
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Status(ctx)
		if err == nil {
			last = st
			for _, comp := range st.Components {
				if comp.PID > 0 {
					n.pids[comp.Name] = comp.PID
				}
			}
			if st.Ready && c.Ready(ctx) == nil {
				cancel()
				return st
			}
		}
		cancel()
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	n.t.Fatalf("not ready after %s; last status:\n%s\nlog:\n%s", timeout, b, n.log())
	return last
}

// cleanup ends whatever a failed test left: m3sup itself (SIGTERM stops its
// containers), then any M3 process it reported.
func (n *node) cleanup() {
	if n.cmd != nil && n.cmd.Process != nil {
		select {
		case <-n.done:
		default:
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.done:
			case <-time.After(60 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.done
			}
		}
	}
	for name, pid := range n.pids {
		if processAlive(pid, name) {
			_ = syscall.Kill(int(pid), syscall.SIGKILL)
		}
	}
	if n.t.Failed() {
		n.t.Logf("m3sup log:\n%s", n.log())
	}
}

// etcdHTTPS is the node's etcd client URL as it serves it: https.
func (n *node) etcdHTTPS() string { return "https://" + strings.TrimPrefix(n.etcdURL, "http://") }

func processAlive(pid uint32, name string) bool { return e2etest.ProcessAlive(int(pid), name) }

// etcdClient is an etcd client with the node's own (root) client
// certificate: the single node's etcd serves only mutual TLS, on the
// configured host:port.
func (n *node) etcdClient() *clientv3.Client {
	n.t.Helper()
	return n.etcdClientAs("etcd-client", "")
}

// etcdClientAs is an etcd client with the certificate <name>.crt/.key
// under <dataDir>/pki/<sub>.
func (n *node) etcdClientAs(name, sub string) *clientv3.Client {
	n.t.Helper()
	dir := filepath.Join(n.dir, "pki", sub)
	tc, err := transport.TLSInfo{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key"),
		TrustedCAFile: filepath.Join(n.dir, "pki", pki.CACertFile)}.ClientConfig()
	if err != nil {
		n.t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{n.etcdHTTPS()}, DialTimeout: 5 * time.Second, TLS: tc})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// placementRevision is the etcd mod revision of M3's placement key.
func (n *node) placementRevision() int64 {
	n.t.Helper()
	c := n.etcdClient()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "_sd.placement/", clientv3.WithPrefix())
	if err != nil {
		n.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		n.t.Fatal("no M3 placement in etcd")
	}
	var rev int64
	for _, kv := range resp.Kvs {
		rev = max(rev, kv.ModRevision)
	}
	return rev
}

// writeAndRead writes one point through the coordinator and reads it back.
func writeAndRead(t testing.TB, coordURL, metric string, ts time.Time, v float64) {
	t.Helper()
	c := &m3.Client{BaseURL: coordURL}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WriteJSON(ctx, metric, map[string]string{"host": "e2e"}, ts, v); err != nil {
		t.Fatalf("write %s: %v", metric, err)
	}
	readBack(t, coordURL, metric, ts, v)
}

func readBack(t testing.TB, coordURL, metric string, ts time.Time, v float64) {
	t.Helper()
	if err := tryReadBack(coordURL, metric, ts, v, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// tryReadBack queries metric around ts until a sample equals v or wait
// passes.
func tryReadBack(coordURL, metric string, ts time.Time, v float64, wait time.Duration) error {
	c := &m3.Client{BaseURL: coordURL}
	deadline := time.Now().Add(wait)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := c.QueryRange(ctx, metric, ts.Add(-time.Minute), ts.Add(time.Minute), 5*time.Second)
		cancel()
		if err == nil && hasValue(res, v) {
			return nil
		}
		lastErr = fmt.Errorf("query %s: %v (result %+v)", metric, err, res)
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("point %s=%v not readable: %w", metric, v, lastErr)
}

// runCLI runs `m3sup ARGS --socket SOCKET` and returns
// its combined output and exit status.
func runCLI(t testing.TB, socket string, args ...string) (string, int) {
	t.Helper()
	cmd := m3sup(append(args, "--socket", socket)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("m3sup %s: %v", strings.Join(args, " "), err)
	return "", -1
}

func statusCLI(t testing.TB, socket string) api.Status {
	t.Helper()
	cmd := m3sup("status", "-o", "json", "--socket", socket)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("m3sup status -o json: %v\n%s", err, out)
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("m3sup status -o json is not JSON: %v\n%s", err, out)
	}
	return st
}

// TestE2ESingleNode: from an empty data dir to a ready single-node cluster
// that serves a write and a read; then a stop and a start that keep the data,
// download nothing and leave the placement alone.
func TestE2ESingleNode(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest})
	n.notify = listenNotify(t, filepath.Dir(n.dir))

	n.start()
	n.waitReady(4 * time.Minute)
	// systemd's view: READY=1 once up, STATUS lines that follow M3's progress.
	for _, want := range []string{"READY=1", "STATUS=fetching", "STATUS=bootstrapping", "STATUS=ready"} {
		if !n.notify.has(want) {
			t.Fatalf("no %q among the sd_notify messages: %q", want, n.notify.messages())
		}
	}
	readies := 0
	for _, m := range n.notify.messages() {
		if m == "READY=1" {
			readies++
		}
	}
	if readies != 1 {
		t.Fatalf("READY=1 sent %d times (only m3sup may notify, once): %q", readies, n.notify.messages())
	}
	if got := rs.requests.Load(); got != 1 {
		t.Fatalf("first start made %d HTTP requests for the release, want 1", got)
	}

	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, n.coordURL, "m3sup_e2e_point", ts, 42)

	st := statusCLI(t, n.socket)
	if st.Containerd.Mode != "managed" || !st.Containerd.Connected {
		t.Fatalf("containerd: %+v, want managed and connected", st.Containerd)
	}
	running := map[string]uint32{}
	for _, c := range st.Components {
		if c.State == "running" && c.PID > 0 && processAlive(c.PID, c.Name) {
			running[c.Name] = c.PID
		}
	}
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		if running[name] == 0 {
			t.Fatalf("%s is not running under containerd: %+v", name, st.Components)
		}
	}
	if !st.M3.PlacementExists || st.M3.Shards["AVAILABLE"] != 16 {
		t.Fatalf("M3 status: %+v, want a placement with 16 AVAILABLE shards", st.M3)
	}
	placementRev := n.placementRevision()

	// Give the commit log time to flush the point (it flushes every second).
	time.Sleep(2 * time.Second)
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM; log:\n%s", code, n.log())
	}
	if !n.notify.has("STOPPING=1") {
		t.Fatalf("no STOPPING=1 on shutdown: %q", n.notify.messages())
	}
	for name, pid := range running {
		if processAlive(pid, name) {
			t.Fatalf("%s (pid %d) still runs after m3sup stopped", name, pid)
		}
	}

	// Second start: same data dir.
	n.start()
	n.waitReady(4 * time.Minute)
	if got := rs.requests.Load(); got != 1 {
		t.Fatalf("restart downloaded the release again (%d requests)", got)
	}
	readBack(t, n.coordURL, "m3sup_e2e_point", ts, 42)
	if rev := n.placementRevision(); rev != placementRev {
		t.Fatalf("placement rewritten on restart: revision %d → %d", placementRev, rev)
	}
	if strings.Contains(n.log(), "placement initialized") && strings.Count(n.log(), "placement initialized") > 1 {
		t.Fatalf("placement initialized twice; log:\n%s", n.log())
	}
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM", code)
	}
}

// TestE2EWrongChecksum: a release whose checksum does not match is refused
// with a clear error and nothing runs.
func TestE2EWrongChecksum(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	wrong := strings.Repeat("0", 64)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + wrong})
	n.start()
	if code := n.waitExit(2 * time.Minute); code != 1 {
		t.Fatalf("exit code %d, want 1; log:\n%s", code, n.log())
	}
	log := n.log()
	last := lastLine(log)
	for _, want := range []string{"checksum mismatch", wrong, env.digest} {
		if !strings.Contains(last, want) {
			t.Fatalf("last line %q does not mention %q", last, want)
		}
	}
	assertNothingRan(t, n)
}

// TestE2ECorruptCache: a cached artifact whose bytes changed is never run;
// when its source is gone the start fails with a clear error.
func TestE2ECorruptCache(t *testing.T) {
	env := needE2E(t)
	// A URL on a closed port: the corrupted entry cannot be fetched again.
	closed := freePorts(t, 1)[0]
	url := fmt.Sprintf("http://127.0.0.1:%d/%s", closed, filepath.Base(env.tarball))
	n := newNode(t, nodeOpts{releaseURL: url, checksum: "sha256:" + env.digest})

	// Seed the cache with the real artifact, then corrupt it.
	cache, err := bundle.OpenCache(filepath.Join(n.dir, "cache"), bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := cache.Fetch(ctx, bundle.Source{URL: env.tarball, Checksum: "sha256:" + env.digest})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(res.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	n.start()
	if code := n.waitExit(2 * time.Minute); code != 1 {
		t.Fatalf("exit code %d, want 1; log:\n%s", code, n.log())
	}
	last := lastLine(n.log())
	if !strings.Contains(last, "corrupt") {
		t.Fatalf("last line %q does not say the cache is corrupt", last)
	}
	assertNothingRan(t, n)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// assertNothingRan checks that no component was prepared or started.
func assertNothingRan(t testing.TB, n *node) {
	t.Helper()
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		if _, err := os.Stat(filepath.Join(n.dir, "components", name, "logs", name+".log")); err == nil {
			t.Fatalf("%s ran (its log exists)", name)
		}
	}
	if _, err := os.Stat(filepath.Join(n.dir, "cache", "unpacked")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(n.dir, "cache", "unpacked"))
		if len(entries) > 0 {
			t.Fatalf("something was unpacked from a refused artifact: %v", entries)
		}
	}
}

func hasValue(r m3.QueryResult, v float64) bool {
	for _, s := range r.Series {
		for _, p := range s.Points {
			if p.V == v {
				return true
			}
		}
	}
	return false
}
