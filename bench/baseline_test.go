package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// baseline is the hand-run reference: a plain etcd and the release's
// m3dbnode and m3coordinator started directly as processes (no containers),
// then M3's guide steps through the coordinator API with tight polling.
type baseline struct {
	dir                       string
	etcdURL                   string
	dbHTTP                    string // node HTTP (/health)
	coordURL                  string
	etcd, dbnode, coordinator *proc
	started                   time.Time // etcd's exec
}

// baselineTimes are offsets from the start of etcd.
type baselineTimes struct {
	etcd, coordinator, placement, namespace, bootstrapped, ready time.Duration
}

// runBaseline starts everything and drives the cluster to ready. It returns
// the milestones; call stop afterwards in every case.
func runBaseline(b *testing.B, f *fixture, bl *baseline) baselineTimes {
	b.Helper()
	dir, err := os.MkdirTemp(f.root, "baseline-")
	if err != nil {
		b.Fatal(err)
	}
	bl.dir = dir
	p := freePorts(b, 9)
	etcdClient, etcdPeer := hostPort(p[0]), hostPort(p[1])
	dbListen := hostPort(p[2])
	bl.etcdURL = "http://" + etcdClient
	bl.dbHTTP = "http://" + hostPort(p[4])
	bl.coordURL = "http://" + hostPort(p[7])
	etcdParams := m3.EtcdParams{Endpoints: []string{etcdClient}}

	dbYAML, err := m3.RenderDBNode(m3.DBNodeParams{
		HostID:                   nodeName,
		Etcd:                     etcdParams,
		FilePathPrefix:           filepath.Join(dir, "db", "data"),
		CacheDir:                 filepath.Join(dir, "db", "kv"),
		ListenAddress:            dbListen,
		ClusterListenAddress:     hostPort(p[3]),
		HTTPNodeListenAddress:    hostPort(p[4]),
		HTTPClusterListenAddress: hostPort(p[5]),
		DebugListenAddress:       hostPort(p[6]),
	})
	if err != nil {
		b.Fatal(err)
	}
	coordYAML, err := m3.RenderCoordinator(m3.CoordinatorParams{
		Etcd:                 etcdParams,
		CacheDir:             filepath.Join(dir, "coord", "kv"),
		ListenAddress:        hostPort(p[7]),
		MetricsListenAddress: hostPort(p[8]),
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []string{"etcd", "db/data", "db/kv", "coord/kv"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	dbCfg, coordCfg := filepath.Join(dir, "m3dbnode.yml"), filepath.Join(dir, "m3coordinator.yml")
	if err := os.WriteFile(dbCfg, dbYAML, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(coordCfg, coordYAML, 0o644); err != nil {
		b.Fatal(err)
	}
	dbBin, err := f.releaseBinary("m3dbnode")
	if err != nil {
		b.Fatal(err)
	}
	coordBin, err := f.releaseBinary("m3coordinator")
	if err != nil {
		b.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var t baselineTimes

	// --- timed from here ---
	start := time.Now()
	bl.started = start
	bl.etcd, err = startProc("etcd", filepath.Join(dir, "etcd.log"), f.etcd,
		"--name", nodeName,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", bl.etcdURL,
		"--advertise-client-urls", bl.etcdURL,
		"--listen-peer-urls", "http://"+etcdPeer,
		"--initial-advertise-peer-urls", "http://"+etcdPeer,
		"--initial-cluster", nodeName+"=http://"+etcdPeer,
		"--initial-cluster-state", "new",
	)
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, ctx, bl.etcd, "etcd /health", func() (bool, error) {
		return httpOK(ctx, bl.etcdURL+"/health"), nil
	})
	t.etcd = time.Since(start)

	if bl.dbnode, err = startProc("m3dbnode", filepath.Join(dir, "m3dbnode.log"), dbBin, "-f", dbCfg); err != nil {
		b.Fatal(err)
	}
	if bl.coordinator, err = startProc("m3coordinator", filepath.Join(dir, "m3coordinator.log"), coordBin, "-f", coordCfg); err != nil {
		b.Fatal(err)
	}
	c := &m3.Client{BaseURL: bl.coordURL}
	waitFor(b, ctx, bl.coordinator, "coordinator /health", func() (bool, error) {
		return c.CoordinatorHealthy(ctx) == nil, nil
	})
	t.coordinator = time.Since(start)

	inst := m3.Instance{ID: nodeName, IsolationGroup: "group1", Zone: m3.DefaultZone, Weight: 100,
		Endpoint: dbListen, Hostname: "127.0.0.1", Port: uint32(p[2])}
	waitFor(b, ctx, bl.coordinator, "placement init", func() (bool, error) {
		err := c.InitPlacement(ctx, numShards, 1, []m3.Instance{inst})
		return err == nil || errors.Is(err, m3.ErrAlreadyExists), retryable(err)
	})
	t.placement = time.Since(start)
	ns := m3.Namespace{Name: "default", Retention: 48 * time.Hour, BlockSize: 2 * time.Hour, IndexEnabled: true}
	waitFor(b, ctx, bl.coordinator, "namespace add", func() (bool, error) {
		err := c.AddNamespace(ctx, ns)
		return err == nil || errors.Is(err, m3.ErrAlreadyExists), retryable(err)
	})
	t.namespace = time.Since(start)

	waitFor(b, ctx, bl.dbnode, "all shards AVAILABLE and node bootstrapped", func() (bool, error) {
		pl, ok, err := c.Placement(ctx)
		if err != nil || !ok || !pl.AllAvailable() {
			return false, nil
		}
		h, err := m3.NodeHealth(ctx, nil, bl.dbHTTP)
		return err == nil && h.OK && h.Bootstrapped, nil
	})
	t.bootstrapped = time.Since(start)

	waitFor(b, ctx, bl.coordinator, "namespace ready", func() (bool, error) {
		ready, err := c.MarkReady(ctx, ns.Name)
		return err == nil && ready, retryable(err)
	})
	t.ready = time.Since(start)
	// --- timed until here ---
	return t
}

// retryable keeps the script going on transient answers (unreachable, 5xx)
// and fails it on anything else.
func retryable(err error) error {
	if err == nil {
		return nil
	}
	var apiErr *m3.APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode < 500 && !errors.Is(err, m3.ErrAlreadyExists) {
		return err
	}
	return nil
}

// waitFor calls step every poll until it reports done; a non-nil error, p
// exiting or ctx ending fails the benchmark.
func waitFor(b *testing.B, ctx context.Context, p *proc, what string, step func() (bool, error)) {
	b.Helper()
	for {
		done, err := step()
		if err != nil {
			b.Fatalf("baseline: %s: %v", what, err)
		}
		if done {
			return
		}
		if p.exited() {
			b.Fatalf("baseline: %s exited while waiting for %s (%v); log tail:\n%s", p.name, what, p.err, p.tail(20))
		}
		select {
		case <-ctx.Done():
			b.Fatalf("baseline: %s: %v", what, ctx.Err())
		case <-time.After(poll):
		}
	}
}

func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop ends the M3 processes (SIGTERM, together), then etcd. Untimed.
func (bl *baseline) stop(b *testing.B) {
	b.Helper()
	type res struct {
		name string
		ok   bool
	}
	ch := make(chan res, 2)
	n := 0
	for _, p := range []*proc{bl.dbnode, bl.coordinator} {
		if p == nil {
			continue
		}
		n++
		go func() { ch <- res{p.name, p.stop(60 * time.Second)} }()
	}
	for range n {
		if r := <-ch; !r.ok {
			b.Errorf("baseline: %s ignored SIGTERM for 60s; killed", r.name)
		}
	}
	if bl.etcd != nil && !bl.etcd.stop(30*time.Second) {
		b.Errorf("baseline: etcd ignored SIGTERM for 30s; killed")
	}
	for _, p := range []*proc{bl.etcd, bl.dbnode, bl.coordinator} {
		if p != nil {
			keepLog(b, p.log)
		}
	}
	if bl.dir != "" && os.Getenv("M3SUP_BENCH_KEEP") == "" {
		_ = os.RemoveAll(bl.dir)
	}
}

func (t baselineTimes) String() string {
	return fmt.Sprintf("etcd %.2fs, coordinator %.2fs, placement %.2fs, namespace %.2fs, bootstrapped %.2fs, ready %.2fs",
		t.etcd.Seconds(), t.coordinator.Seconds(), t.placement.Seconds(), t.namespace.Seconds(), t.bootstrapped.Seconds(), t.ready.Seconds())
}
