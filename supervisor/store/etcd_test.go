package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/store"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1. It holds all the
// listeners open until every port is chosen, so the ports differ.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// member is where one test's etcd lives: its data dir and URLs.
type member struct {
	dir                string
	clientURL, peerURL string
}

func newMember(t *testing.T) member {
	t.Helper()
	p := freePorts(t, 2)
	return member{
		dir:       filepath.Join(t.TempDir(), "etcd"),
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", p[1]),
	}
}

func (m member) opts() store.EtcdOptions {
	return store.EtcdOptions{Name: "test", Dir: m.dir, ClientURL: m.clientURL, PeerURL: m.peerURL, StartTimeout: 30 * time.Second}
}

// start starts the member and closes it when the test ends.
func (m member) start(t *testing.T) *store.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEtcd(ctx, m.opts())
	if err != nil {
		t.Fatalf("StartEtcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func startEtcd(t *testing.T) *store.Etcd {
	t.Helper()
	return newMember(t).start(t)
}

func TestStartEtcd(t *testing.T) {
	m := newMember(t)
	e := m.start(t)

	select {
	case err := <-e.Err():
		t.Fatalf("server error right after start: %v", err)
	case <-e.Stopped():
		t.Fatal("server stopped right after start")
	default:
	}
	if !e.IsLeader() {
		t.Fatal("a single member must lead once ready")
	}
	if e.Endpoint() != m.clientURL {
		t.Fatalf("Endpoint %q, want %q", e.Endpoint(), m.clientURL)
	}
	if want := strings.TrimPrefix(m.clientURL, "http://"); e.HostPort() != want {
		t.Fatalf("HostPort %q, want %q", e.HostPort(), want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Client().Put(ctx, "/test/k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := e.Client().Get(ctx, "/test/k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get returned %v", resp.Kvs)
	}

	e.Close()
	e.Close() // idempotent
	select {
	case <-e.Stopped():
	default:
		t.Fatal("Stopped not closed after Close")
	}
}

func TestStartEtcdPortInUse(t *testing.T) {
	for _, which := range []string{"client", "peer"} {
		t.Run(which, func(t *testing.T) {
			m := newMember(t)
			busy := m.clientURL
			if which == "peer" {
				busy = m.peerURL
			}
			hostPort := strings.TrimPrefix(busy, "http://")
			ln, err := net.Listen("tcp", hostPort)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()

			e, err := store.StartEtcd(context.Background(), m.opts())
			if err == nil {
				e.Close()
				t.Fatalf("StartEtcd succeeded with the %s port in use", which)
			}
			// m3sup's own wording, not only the kernel's "address already in use".
			if !strings.Contains(err.Error(), "is already in use by another process") || !strings.Contains(err.Error(), hostPort) {
				t.Fatalf("error %q does not say which address is in use", err)
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("error %v does not wrap EADDRINUSE", err)
			}
		})
	}
}

func TestStartEtcdCancelled(t *testing.T) {
	m := newMember(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, err := store.StartEtcd(ctx, m.opts())
	if err == nil {
		e.Close()
		t.Fatal("StartEtcd succeeded with a cancelled context")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v does not wrap context.Canceled", err)
	}
	// The half-started member was closed: its ports are free again.
	assertFree(t, m.clientURL)
	assertFree(t, m.peerURL)
}

func TestStartEtcdTimeout(t *testing.T) {
	m := newMember(t)
	o := m.opts()
	o.StartTimeout = time.Nanosecond
	e, err := store.StartEtcd(context.Background(), o)
	if err == nil {
		e.Close()
		t.Fatal("StartEtcd succeeded within a nanosecond")
	}
	if !strings.Contains(err.Error(), "not ready after 1ns") {
		t.Fatalf("error %q does not name the timeout", err)
	}
	assertFree(t, m.clientURL)
}

func TestStartEtcdBadURL(t *testing.T) {
	m := newMember(t)
	o := m.opts()
	o.ClientURL = "http://[::1"
	if _, err := store.StartEtcd(context.Background(), o); err == nil || !strings.Contains(err.Error(), "etcd client URL") {
		t.Fatalf("bad client URL: error %v", err)
	}
}

func assertFree(t *testing.T, u string) {
	t.Helper()
	ln, err := net.Listen("tcp", strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatalf("%s still in use after a failed start: %v", u, err)
	}
	_ = ln.Close()
}

func TestRestartKeepsData(t *testing.T) {
	m := newMember(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e1 := m.start(t)
	c := validCluster()
	rev, err := store.New(e1.Client()).PutCluster(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	e1.Close()

	e2 := m.start(t)
	got, gotRev, found, err := store.New(e2.Client()).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !found || gotRev != rev || got.M3.Env != c.M3.Env || len(got.M3.Namespaces) != len(c.M3.Namespaces) {
		t.Fatalf("after restart: found=%v rev=%d (want %d) spec=%+v", found, gotRev, rev, got)
	}
	if !e2.IsLeader() {
		t.Fatal("restarted single member is not the leader")
	}
}

// TestStopMember: the member stops (its client URL refuses connections),
// the Etcd stays usable for Close, and both are idempotent.
func TestStopMember(t *testing.T) {
	e := etcdtest.Start(t, "stop")
	u, err := url.Parse(e.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	e.StopMember()
	e.StopMember()
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Fatalf("the stopped member still accepts connections on %s", u.Host)
	}
	e.Close()
	e.Close()
}
