package m3

import (
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v2"
)

func testDBNodeParams() DBNodeParams {
	return DBNodeParams{
		HostID:                   "node-1",
		Etcd:                     EtcdParams{Endpoints: []string{"127.0.0.1:2379", "127.0.0.2:2379"}, Env: "m3sup_test"},
		FilePathPrefix:           "/var/lib/m3db",
		CacheDir:                 "/var/lib/m3kv",
		ListenAddress:            "127.0.0.2:9000",
		ClusterListenAddress:     "127.0.0.2:9001",
		HTTPNodeListenAddress:    "127.0.0.2:9002",
		HTTPClusterListenAddress: "127.0.0.2:9003",
		DebugListenAddress:       "127.0.0.2:9004",
		LogLevel:                 "info",
	}
}

func testCoordinatorParams() CoordinatorParams {
	return CoordinatorParams{
		Etcd:                 EtcdParams{Endpoints: []string{"127.0.0.1:2379"}, Env: "m3sup_test"},
		CacheDir:             "/var/lib/m3kv",
		ListenAddress:        "127.0.0.1:7201",
		MetricsListenAddress: "127.0.0.1:7203",
		LogLevel:             "warn",
	}
}

// lookup walks a generic YAML document along keys (ints index lists).
func lookup(t *testing.T, doc any, keys ...any) any {
	t.Helper()
	cur := doc
	for i, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := cur.(map[any]any)
			if !ok {
				t.Fatalf("at %v: not a map: %#v", keys[:i], cur)
			}
			v, ok := m[k]
			if !ok {
				t.Fatalf("missing key %v", keys[:i+1])
			}
			cur = v
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: not a list of len > %d: %#v", keys[:i], k, cur)
			}
			cur = l[k]
		}
	}
	return cur
}

func TestRenderDBNode(t *testing.T) {
	out, err := RenderDBNode(testDBNodeParams())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out)
	var doc any
	if err := yaml.UnmarshalStrict(out, &doc); err != nil {
		t.Fatal(err)
	}
	svc := []any{"db", "discovery", "config", "service"}
	for _, c := range []struct {
		keys []any
		want any
	}{
		{[]any{"db", "hostID", "resolver"}, "config"},
		{[]any{"db", "hostID", "value"}, "node-1"},
		{[]any{"db", "listenAddress"}, "127.0.0.2:9000"},
		{[]any{"db", "clusterListenAddress"}, "127.0.0.2:9001"},
		{[]any{"db", "httpNodeListenAddress"}, "127.0.0.2:9002"},
		{[]any{"db", "httpClusterListenAddress"}, "127.0.0.2:9003"},
		{[]any{"db", "debugListenAddress"}, "127.0.0.2:9004"},
		{[]any{"db", "filesystem", "filePathPrefix"}, "/var/lib/m3db"},
		{[]any{"db", "logging", "level"}, "info"},
		{[]any{"db", "metrics", "prometheus", "handlerPath"}, "/metrics"},
		{[]any{"db", "commitlog", "flushEvery"}, "1s"},
		{append(svc, "env"), "m3sup_test"},
		{append(svc, "zone"), "embedded"},
		{append(svc, "service"), "m3db"},
		{append(svc, "cacheDir"), "/var/lib/m3kv"},
		{append(svc, "etcdClusters", 0, "zone"), "embedded"},
		{append(svc, "etcdClusters", 0, "endpoints", 1), "127.0.0.2:2379"},
	} {
		if got := lookup(t, doc, c.keys...); got != c.want {
			t.Errorf("%v = %#v, want %#v", c.keys, got, c.want)
		}
	}
	disc := lookup(t, doc, "db", "discovery").(map[any]any)
	if _, ok := disc["type"]; ok {
		t.Error("discovery.type must not be set")
	}
	if strings.Contains(string(out), "seedNodes") {
		t.Error("rendered config embeds etcd seed nodes")
	}
}

func TestRenderCoordinator(t *testing.T) {
	out, err := RenderCoordinator(testCoordinatorParams())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out)
	var doc any
	if err := yaml.UnmarshalStrict(out, &doc); err != nil {
		t.Fatal(err)
	}
	svc := []any{"clusters", 0, "client", "config", "service"}
	for _, c := range []struct {
		keys []any
		want any
	}{
		{[]any{"listenAddress"}, "127.0.0.1:7201"},
		{[]any{"logging", "level"}, "warn"},
		{[]any{"metrics", "prometheus", "handlerPath"}, "/metrics"},
		{[]any{"metrics", "prometheus", "listenAddress"}, "127.0.0.1:7203"},
		{[]any{"clusters", 0, "client", "writeConsistencyLevel"}, "majority"},
		{[]any{"clusters", 0, "client", "readConsistencyLevel"}, "unstrict_majority"},
		{append(svc, "env"), "m3sup_test"},
		{append(svc, "zone"), "embedded"},
		{append(svc, "service"), "m3db"},
		{append(svc, "cacheDir"), "/var/lib/m3kv"},
		{append(svc, "etcdClusters", 0, "endpoints", 0), "127.0.0.1:2379"},
	} {
		if got := lookup(t, doc, c.keys...); got != c.want {
			t.Errorf("%v = %#v, want %#v", c.keys, got, c.want)
		}
	}
	cluster := lookup(t, doc, "clusters", 0).(map[any]any)
	if _, ok := cluster["namespaces"]; ok {
		t.Error("static namespaces list must not be rendered")
	}
}

func TestRenderDefaults(t *testing.T) {
	out, err := RenderDBNode(DBNodeParams{
		HostID: "h", Etcd: EtcdParams{Endpoints: []string{"10.0.0.1:2379"}},
		FilePathPrefix: "/var/lib/m3db", CacheDir: "/var/lib/m3kv",
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, doc, "db", "discovery", "config", "service", "env"); got != DefaultEnv {
		t.Errorf("env = %v", got)
	}
	if got := lookup(t, doc, "db", "httpNodeListenAddress"); got != "0.0.0.0:9002" {
		t.Errorf("httpNodeListenAddress = %v", got)
	}
}

func TestRenderInvalid(t *testing.T) {
	mut := func(f func(*DBNodeParams)) DBNodeParams {
		p := testDBNodeParams()
		f(&p)
		return p
	}
	for name, p := range map[string]DBNodeParams{
		"no host id":      mut(func(p *DBNodeParams) { p.HostID = "" }),
		"no etcd":         mut(func(p *DBNodeParams) { p.Etcd.Endpoints = nil }),
		"bad etcd":        mut(func(p *DBNodeParams) { p.Etcd.Endpoints = []string{"http://x:2379"} }),
		"relative prefix": mut(func(p *DBNodeParams) { p.FilePathPrefix = "data" }),
		"no cache dir":    mut(func(p *DBNodeParams) { p.CacheDir = "" }),
		"bad listen":      mut(func(p *DBNodeParams) { p.ListenAddress = "9000" }),
		"bad log level":   mut(func(p *DBNodeParams) { p.LogLevel = "loud" }),
	} {
		if _, err := RenderDBNode(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	cp := testCoordinatorParams()
	cp.CacheDir = ""
	if _, err := RenderCoordinator(cp); err == nil {
		t.Error("coordinator without cacheDir: no error")
	}
}

func TestRenderEtcdTLS(t *testing.T) {
	p := CoordinatorParams{Etcd: EtcdParams{Endpoints: []string{"127.0.0.2:2379", "127.0.0.3:2379"},
		TLS: &EtcdTLS{CertPath: "/p/c.crt", KeyPath: "/p/c.key", CAPath: "/p/ca.crt"}}, CacheDir: "/kv"}
	b, err := RenderCoordinator(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"crtPath: /p/c.crt", "keyPath: /p/c.key", "caCrtPath: /p/ca.crt", "127.0.0.3:2379"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("coordinator config lacks %q:\n%s", want, b)
		}
	}
	p.Etcd.TLS = nil
	b, _ = RenderCoordinator(p)
	if strings.Contains(string(b), "tls:") {
		t.Errorf("config without TLS has a tls section:\n%s", b)
	}
	if strings.Contains(string(b), "autoSyncInterval") {
		t.Errorf("config without AutoSync sets autoSyncInterval:\n%s", b)
	}
}

// TestRenderEtcdAutoSync: with AutoSync, M3's etcd clients refresh their
// endpoints from the member list; the value decodes as the time.Duration
// of M3's etcd ClusterConfig (yaml.v2, as go.uber.org/config reads it).
func TestRenderEtcdAutoSync(t *testing.T) {
	for _, render := range map[string]func(EtcdParams) ([]byte, error){
		"m3dbnode": func(e EtcdParams) ([]byte, error) {
			return RenderDBNode(DBNodeParams{HostID: "h", Etcd: e, FilePathPrefix: "/data", CacheDir: "/kv"})
		},
		"m3coordinator": func(e EtcdParams) ([]byte, error) {
			return RenderCoordinator(CoordinatorParams{Etcd: e, CacheDir: "/kv"})
		},
	} {
		b, err := render(EtcdParams{Endpoints: []string{"127.0.0.2:2379"}, AutoSync: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var clusters []struct {
			AutoSyncInterval time.Duration `yaml:"autoSyncInterval"`
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "autoSyncInterval:") {
				var c struct {
					AutoSyncInterval time.Duration `yaml:"autoSyncInterval"`
				}
				if err := yaml.Unmarshal([]byte(strings.TrimLeft(strings.TrimSpace(l), "- ")), &c); err != nil {
					t.Fatalf("decode %q: %v", l, err)
				}
				clusters = append(clusters, c)
			}
		}
		if len(clusters) != 1 || clusters[0].AutoSyncInterval != time.Minute {
			t.Errorf("autoSyncInterval decoded as %+v, want one of 1m:\n%s", clusters, b)
		}
	}
}
