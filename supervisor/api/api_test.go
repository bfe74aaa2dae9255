package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
)

// shortDir is a temp dir short enough for a unix socket path (108 bytes);
// t.TempDir() embeds the test name and can exceed it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func TestListenModes(t *testing.T) {
	dir := filepath.Join(shortDir(t), "run")
	path := filepath.Join(dir, "m3sup.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	if m := mode(t, path); m.Type() != os.ModeSocket || m.Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", m)
	}
	if m := mode(t, dir); !m.IsDir() || m.Perm() != 0o700 {
		t.Fatalf("socket dir mode %v, want 0700", m)
	}
}

// A socket in an existing, shared dir must not lock the dir down.
func TestListenKeepsExistingDirMode(t *testing.T) {
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "m3sup.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if m := mode(t, dir); m.Perm() != 0o755 {
		t.Fatalf("existing dir changed to %v", m.Perm())
	}
	if m := mode(t, path); m.Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", m.Perm())
	}
}

func TestListenAlreadyRunning(t *testing.T) {
	path := filepath.Join(shortDir(t), "m3sup.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ln2, err := api.Listen(path)
	if err == nil {
		ln2.Close()
		t.Fatal("second Listen on a live socket succeeded")
	}
	if !errors.Is(err, api.ErrAlreadyRunning) {
		t.Fatalf("error %v, want ErrAlreadyRunning", err)
	}
	// The live daemon's socket is untouched.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first listener's socket is gone: %v", err)
	}
	c.Close()
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "m3sup.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket file not left behind: %v", err)
	}

	ln, err := api.Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()

	// The new socket is the one that answers.
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m.Perm() != 0o600 {
		t.Fatalf("replacement socket mode %v, want 0600", m.Perm())
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "m3sup.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := api.Listen(path)
	if err == nil {
		ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("error %q does not say the path is not a socket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatalf("the file was changed: %q", b)
	}
}

// fakeProvider is a Provider whose answers the test sets.
type fakeProvider struct {
	mu          sync.Mutex
	status      api.Status
	readyErr    error
	hadDeadline bool
}

func (f *fakeProvider) Status(context.Context) api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeProvider) Ready(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, f.hadDeadline = ctx.Deadline()
	return f.readyErr
}

func (f *fakeProvider) setReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readyErr = err
}

// serve runs a Server for h (a fakeProvider when h has no Provider) on a
// fresh socket until the test ends, then shuts it down and waits for Serve
// to return.
func serve(t *testing.T, h api.Handlers) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "m3sup.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Provider == nil {
		h.Provider = &fakeProvider{}
	}
	srv := api.NewServer(h, zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Shutdown returned %v, want nil", err)
		}
	})
	return path
}

// rawGet does a plain HTTP request over the unix socket.
func rawGet(t *testing.T, socket, method, path string) (int, http.Header, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://m3sup"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func sampleStatus() api.Status {
	return api.Status{
		Node: "edge-1", Version: "v0.1.0", Phase: "running", Ready: true,
		Etcd:       api.EtcdStatus{State: "running", Endpoint: "http://127.0.0.1:2379", Leader: true, Members: 1, DBSize: 4096},
		Containerd: api.ContainerdStatus{Mode: "managed", Address: "/run/m3sup/containerd.sock", Connected: true, PID: 42, Namespace: "m3sup"},
		Components: []agent.Status{{Name: "dbnode", Restarts: 2}, {Name: "coordinator"}},
		M3: api.M3Status{Phase: "ready", PlacementExists: true, Instances: 1, Shards: map[string]int{"AVAILABLE": 64},
			Namespaces: []api.NamespaceStatus{{Name: "default", Ready: true, Retention: "48h0m0s"}}, NodesBootstrapped: true},
	}
}

func TestServerStatus(t *testing.T) {
	p := &fakeProvider{status: sampleStatus()}
	socket := serve(t, api.Handlers{Provider: p, Metrics: prometheus.NewRegistry()})

	code, hdr, body := rawGet(t, socket, http.MethodGet, "/v1/status")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/status: %d %q", code, hdr.Get("Content-Type"))
	}
	var wire map[string]any
	if err := json.Unmarshal([]byte(body), &wire); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	if wire["node"] != "edge-1" || wire["ready"] != true {
		t.Fatalf("wire fields: %v", wire)
	}
	if etcd, _ := wire["etcd"].(map[string]any); etcd["leader"] != true || etcd["endpoint"] != "http://127.0.0.1:2379" {
		t.Fatalf("wire etcd: %v", wire["etcd"])
	}

	got, err := api.NewClient(socket).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Components are checked by field below: agent.Status belongs to
	// another package and carries times.
	want := sampleStatus()
	if !reflect.DeepEqual(got.Etcd, want.Etcd) || !reflect.DeepEqual(got.Containerd, want.Containerd) ||
		!reflect.DeepEqual(got.M3, want.M3) || got.Node != want.Node || got.Phase != want.Phase || !got.Ready {
		t.Fatalf("client decoded\n%+v\nwant\n%+v", got, want)
	}
	if len(got.Components) != 2 || got.Components[0].Name != "dbnode" || got.Components[0].Restarts != 2 {
		t.Fatalf("components %+v", got.Components)
	}

	if code, _, _ := rawGet(t, socket, http.MethodPost, "/v1/status"); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/status: %d, want 405", code)
	}
	if code, _, _ := rawGet(t, socket, http.MethodGet, "/v1/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /v1/nope: %d, want 404", code)
	}
}

func TestServerHealthAndReady(t *testing.T) {
	p := &fakeProvider{readyErr: errors.New("placement not yet created")}
	socket := serve(t, api.Handlers{Provider: p, Metrics: prometheus.NewRegistry()})
	client := api.NewClient(socket)

	if code, _, body := rawGet(t, socket, http.MethodGet, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET /healthz: %d %q", code, body)
	}

	code, _, body := rawGet(t, socket, http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: placement not yet created") {
		t.Fatalf("GET /readyz while not ready: %d %q", code, body)
	}
	err := client.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "placement not yet created") {
		t.Fatalf("client Ready while not ready: %v", err)
	}

	p.setReady(nil)
	if code, _, body := rawGet(t, socket, http.MethodGet, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("GET /readyz when ready: %d %q", code, body)
	}
	if err := client.Ready(context.Background()); err != nil {
		t.Fatalf("client Ready when ready: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.hadDeadline {
		t.Fatal("Ready was asked without a deadline")
	}
}

func TestServerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	restarts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m3sup_test_restarts_total", Help: "test counter"}, []string{"component"})
	reg.MustRegister(restarts)
	restarts.WithLabelValues("dbnode").Add(3)
	socket := serve(t, api.Handlers{Metrics: reg})

	code, hdr, body := rawGet(t, socket, http.MethodGet, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want Prometheus text", ct)
	}
	for _, want := range []string{
		"# HELP m3sup_test_restarts_total test counter\n",
		"# TYPE m3sup_test_restarts_total counter\n",
		`m3sup_test_restarts_total{component="dbnode"} 3` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics missing %q:\n%s", want, body)
		}
	}
}

func TestMetricsServerServesMetricsOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "m3sup_test_free_bytes", Help: "test gauge"})
	reg.MustRegister(g)
	g.Set(42)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewMetricsServer(reg, zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	get := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(http.MethodGet, "/metrics"); code != http.StatusOK || !strings.Contains(body, "m3sup_test_free_bytes 42\n") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	for _, path := range []string{"/v1/status", "/healthz", "/readyz", "/v1/backup", "/"} {
		if code, _ := get(http.MethodGet, path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	if code, _ := get(http.MethodPost, "/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestClientNotRunning(t *testing.T) {
	dir := shortDir(t)

	// No socket at all.
	missing := filepath.Join(dir, "missing.sock")
	if _, err := api.NewClient(missing).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "m3sup is not running") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing socket: %v", err)
	}
	// No socket dir either.
	if err := api.NewClient(filepath.Join(dir, "nodir", "m3sup.sock")).Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "m3sup is not running") {
		t.Fatalf("missing socket dir: %v", err)
	}

	// A stale socket nobody listens on.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := api.NewClient(stale).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "m3sup is not running") {
		t.Fatalf("stale socket: %v", err)
	}
}

func TestClientBadJSON(t *testing.T) {
	path := filepath.Join(shortDir(t), "m3sup.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "{not json")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()

	if _, err := api.NewClient(path).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "decode /v1/status") {
		t.Fatalf("bad JSON: %v", err)
	}
}

// TestServerServesOnlyItsParts: a part left out of Handlers is a route not
// served.
func TestServerServesOnlyItsParts(t *testing.T) {
	socket := serve(t, api.Handlers{})
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/metrics"},
		{http.MethodGet, "/v1/cluster"},
		{http.MethodGet, "/v1/tokens"},
		{http.MethodPost, "/v1/leave"},
		{http.MethodPost, "/v1/hosts/h2/remove"},
		{http.MethodGet, "/v1/backup"},
	} {
		if code, _, body := rawGet(t, socket, r.method, r.path); code != http.StatusNotFound {
			t.Errorf("%s %s without its part: %d %q, want 404", r.method, r.path, code, body)
		}
	}
	if code, _, _ := rawGet(t, socket, http.MethodGet, "/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz: %d", code)
	}
}
