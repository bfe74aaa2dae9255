package m3

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v2"
)

// Defaults for the etcd key space M3 uses. A standalone coordinator assumes
// DefaultEnv unless the Cluster-Environment-Name header says otherwise.
const (
	DefaultEnv     = "default_env"
	DefaultZone    = "embedded"
	DefaultService = "m3db"
)

// EtcdParams names the etcd cluster and the key space (env/zone/service)
// that dbnodes and the coordinator share. Empty Env, Zone and Service take
// DefaultEnv, DefaultZone and DefaultService.
type EtcdParams struct {
	Endpoints []string // host:port of etcd client URLs
	Env       string
	Zone      string
	Service   string
	// TLS, when set, makes M3 talk to etcd over mutual TLS with these files
	// (paths as the process sees them).
	TLS *EtcdTLS
	// AutoSync, when positive, makes M3's etcd clients refresh their
	// endpoints from etcd's member list this often, so a running M3
	// follows voters that join or leave; Endpoints then only seed it.
	AutoSync time.Duration
}

// EtcdTLS names the PEM files of M3's etcd client certificate and the CA.
type EtcdTLS struct {
	CertPath, KeyPath, CAPath string
}

func (e EtcdParams) withDefaults() EtcdParams {
	if e.Env == "" {
		e.Env = DefaultEnv
	}
	if e.Zone == "" {
		e.Zone = DefaultZone
	}
	if e.Service == "" {
		e.Service = DefaultService
	}
	return e
}

func (e EtcdParams) validate() error {
	if len(e.Endpoints) == 0 {
		return errors.New("etcd: no endpoints")
	}
	for _, ep := range e.Endpoints {
		if err := validateHostPort(ep); err != nil {
			return fmt.Errorf("etcd endpoint: %w", err)
		}
	}
	return nil
}

// DBNodeParams is everything that differs between m3dbnode configs. Paths
// are as the process sees them (inside its container). Empty listen
// addresses take M3's defaults (0.0.0.0:9000..9004); empty LogLevel is info.
type DBNodeParams struct {
	HostID string
	Etcd   EtcdParams

	FilePathPrefix string // data, commit logs, index, snapshots
	CacheDir       string // etcd KV cache

	ListenAddress            string // node tchannel, default 0.0.0.0:9000
	ClusterListenAddress     string // cluster tchannel, default 0.0.0.0:9001
	HTTPNodeListenAddress    string // /health, /bootstrapped; default 0.0.0.0:9002
	HTTPClusterListenAddress string // default 0.0.0.0:9003
	DebugListenAddress       string // pprof and Prometheus /metrics; default 0.0.0.0:9004

	LogLevel string // debug, info, warn, error
}

func (p DBNodeParams) withDefaults() DBNodeParams {
	p.Etcd = p.Etcd.withDefaults()
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&p.ListenAddress, "0.0.0.0:9000")
	def(&p.ClusterListenAddress, "0.0.0.0:9001")
	def(&p.HTTPNodeListenAddress, "0.0.0.0:9002")
	def(&p.HTTPClusterListenAddress, "0.0.0.0:9003")
	def(&p.DebugListenAddress, "0.0.0.0:9004")
	def(&p.LogLevel, "info")
	return p
}

// Validate reports the first problem with p after defaults are applied.
func (p DBNodeParams) Validate() error {
	p = p.withDefaults()
	if p.HostID == "" {
		return errors.New("dbnode: empty host ID")
	}
	if err := p.Etcd.validate(); err != nil {
		return fmt.Errorf("dbnode: %w", err)
	}
	for name, dir := range map[string]string{"filePathPrefix": p.FilePathPrefix, "cacheDir": p.CacheDir} {
		if !path.IsAbs(dir) {
			return fmt.Errorf("dbnode: %s %q is not an absolute path", name, dir)
		}
	}
	for name, addr := range map[string]string{
		"listenAddress":            p.ListenAddress,
		"clusterListenAddress":     p.ClusterListenAddress,
		"httpNodeListenAddress":    p.HTTPNodeListenAddress,
		"httpClusterListenAddress": p.HTTPClusterListenAddress,
		"debugListenAddress":       p.DebugListenAddress,
	} {
		if err := validateHostPort(addr); err != nil {
			return fmt.Errorf("dbnode: %s: %w", name, err)
		}
	}
	return validateLogLevel(p.LogLevel)
}

// CoordinatorParams is everything that differs between m3coordinator
// configs. Empty ListenAddress is 0.0.0.0:7201, empty MetricsListenAddress
// is 0.0.0.0:7203, empty LogLevel is info.
type CoordinatorParams struct {
	Etcd                 EtcdParams
	CacheDir             string // etcd KV cache, inside the container
	ListenAddress        string
	MetricsListenAddress string
	LogLevel             string
}

func (p CoordinatorParams) withDefaults() CoordinatorParams {
	p.Etcd = p.Etcd.withDefaults()
	if p.ListenAddress == "" {
		p.ListenAddress = "0.0.0.0:7201"
	}
	if p.MetricsListenAddress == "" {
		p.MetricsListenAddress = "0.0.0.0:7203"
	}
	if p.LogLevel == "" {
		p.LogLevel = "info"
	}
	return p
}

// Validate reports the first problem with p after defaults are applied.
func (p CoordinatorParams) Validate() error {
	p = p.withDefaults()
	if err := p.Etcd.validate(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if !path.IsAbs(p.CacheDir) {
		return fmt.Errorf("coordinator: cacheDir %q is not an absolute path", p.CacheDir)
	}
	if err := validateHostPort(p.ListenAddress); err != nil {
		return fmt.Errorf("coordinator: listenAddress: %w", err)
	}
	if err := validateHostPort(p.MetricsListenAddress); err != nil {
		return fmt.Errorf("coordinator: metrics listenAddress: %w", err)
	}
	return validateLogLevel(p.LogLevel)
}

func validateHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q: want host:port", s)
	}
	return nil
}

func validateLogLevel(l string) error {
	switch strings.ToLower(l) {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("log level %q: want debug, info, warn or error", l)
}

// The types below mirror the subset of M3 v1.5.0's config structs we set
// (src/cmd/services/m3dbnode/config, src/cmd/services/m3query/config,
// src/dbnode/environment, src/cluster/client/etcd, src/x/instrument). M3
// loads YAML strictly, so every key here must exist in that schema.

type dbnodeFile struct {
	DB dbConfig `yaml:"db"`
}

type dbConfig struct {
	Logging                       logConfig       `yaml:"logging"`
	Metrics                       metricsConfig   `yaml:"metrics"`
	ListenAddress                 string          `yaml:"listenAddress"`
	ClusterListenAddress          string          `yaml:"clusterListenAddress"`
	HTTPNodeListenAddress         string          `yaml:"httpNodeListenAddress"`
	HTTPClusterListenAddress      string          `yaml:"httpClusterListenAddress"`
	DebugListenAddress            string          `yaml:"debugListenAddress"`
	HostID                        hostIDConfig    `yaml:"hostID"`
	Client                        clientConfig    `yaml:"client"`
	GCPercentage                  int             `yaml:"gcPercentage"`
	WriteNewSeriesAsync           bool            `yaml:"writeNewSeriesAsync"`
	WriteNewSeriesBackoffDuration string          `yaml:"writeNewSeriesBackoffDuration"`
	CommitLog                     commitLogConfig `yaml:"commitlog"`
	Filesystem                    fsConfig        `yaml:"filesystem"`
	Discovery                     discoveryConfig `yaml:"discovery"`
}

type logConfig struct {
	Level string `yaml:"level"`
}

type metricsConfig struct {
	Scope        *scopeConfig     `yaml:"scope,omitempty"`
	Prometheus   prometheusConfig `yaml:"prometheus"`
	Sanitization string           `yaml:"sanitization"`
	SamplingRate float64          `yaml:"samplingRate"`
	Extended     string           `yaml:"extended"`
}

type scopeConfig struct {
	Prefix string `yaml:"prefix"`
}

type prometheusConfig struct {
	HandlerPath   string `yaml:"handlerPath"`
	ListenAddress string `yaml:"listenAddress,omitempty"`
}

type hostIDConfig struct {
	Resolver string `yaml:"resolver"`
	Value    string `yaml:"value"`
}

// clientConfig is M3's dbnode client config (src/dbnode/client/config.go);
// Config is set only for the coordinator, whose client finds the cluster
// through it.
type clientConfig struct {
	Config                *envConfig `yaml:"config,omitempty"`
	WriteConsistencyLevel string     `yaml:"writeConsistencyLevel"`
	ReadConsistencyLevel  string     `yaml:"readConsistencyLevel"`
}

type commitLogConfig struct {
	FlushMaxBytes int            `yaml:"flushMaxBytes"`
	FlushEvery    string         `yaml:"flushEvery"`
	Queue         commitLogQueue `yaml:"queue"`
}

type commitLogQueue struct {
	CalculationType string `yaml:"calculationType"`
	Size            int    `yaml:"size"`
}

type fsConfig struct {
	FilePathPrefix string `yaml:"filePathPrefix"`
}

// discoveryConfig uses the explicit `config` form, not `type: m3db_cluster`
// (which forces cacheDir /var/lib/m3kv).
type discoveryConfig struct {
	Config envConfig `yaml:"config"`
}

// envConfig is environment.Configuration in its single-`service` form (its
// UnmarshalYAML turns it into a one-element services list). No seedNodes:
// m3sup runs etcd, the dbnode must not embed one.
type envConfig struct {
	Service etcdServiceConfig `yaml:"service"`
}

type etcdServiceConfig struct {
	Env          string              `yaml:"env"`
	Zone         string              `yaml:"zone"`
	Service      string              `yaml:"service"`
	CacheDir     string              `yaml:"cacheDir"`
	EtcdClusters []etcdClusterConfig `yaml:"etcdClusters"`
}

type etcdClusterConfig struct {
	Zone             string         `yaml:"zone"`
	Endpoints        []string       `yaml:"endpoints"`
	TLS              *etcdTLSConfig `yaml:"tls,omitempty"`
	AutoSyncInterval string         `yaml:"autoSyncInterval,omitempty"` // e.g. 1m0s
}

// etcdTLSConfig is M3's src/cluster/client/etcd TLSConfig.
type etcdTLSConfig struct {
	CrtPath   string `yaml:"crtPath"`
	CACrtPath string `yaml:"caCrtPath"`
	KeyPath   string `yaml:"keyPath"`
}

type coordinatorFile struct {
	ListenAddress string          `yaml:"listenAddress"`
	Logging       logConfig       `yaml:"logging"`
	Metrics       metricsConfig   `yaml:"metrics"`
	Clusters      []clusterConfig `yaml:"clusters"`
}

// clusterConfig has no `namespaces:` list on purpose: without it the
// coordinator follows the namespaces registered in etcd (dynamic mode).
type clusterConfig struct {
	Client clientConfig `yaml:"client"`
}

func etcdService(e EtcdParams, cacheDir string) etcdServiceConfig {
	var tlsCfg *etcdTLSConfig
	if e.TLS != nil {
		tlsCfg = &etcdTLSConfig{CrtPath: e.TLS.CertPath, CACrtPath: e.TLS.CAPath, KeyPath: e.TLS.KeyPath}
	}
	var autoSync string
	if e.AutoSync > 0 {
		autoSync = e.AutoSync.String()
	}
	return etcdServiceConfig{
		Env:      e.Env,
		Zone:     e.Zone,
		Service:  e.Service,
		CacheDir: cacheDir,
		EtcdClusters: []etcdClusterConfig{{
			Zone:             e.Zone,
			Endpoints:        append([]string(nil), e.Endpoints...),
			TLS:              tlsCfg,
			AutoSyncInterval: autoSync,
		}},
	}
}

// RenderDBNode returns the m3dbnode YAML for p.
func RenderDBNode(p DBNodeParams) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("render m3dbnode config: %w", err)
	}
	p = p.withDefaults()
	cfg := dbnodeFile{DB: dbConfig{
		Logging: logConfig{Level: strings.ToLower(p.LogLevel)},
		Metrics: metricsConfig{
			// Served on DebugListenAddress.
			Prometheus:   prometheusConfig{HandlerPath: "/metrics"},
			Sanitization: "prometheus",
			SamplingRate: 1.0,
			Extended:     "detailed",
		},
		ListenAddress:            p.ListenAddress,
		ClusterListenAddress:     p.ClusterListenAddress,
		HTTPNodeListenAddress:    p.HTTPNodeListenAddress,
		HTTPClusterListenAddress: p.HTTPClusterListenAddress,
		DebugListenAddress:       p.DebugListenAddress,
		HostID:                   hostIDConfig{Resolver: "config", Value: p.HostID},
		Client: clientConfig{
			WriteConsistencyLevel: "majority",
			ReadConsistencyLevel:  "unstrict_majority",
		},
		GCPercentage:                  100,
		WriteNewSeriesAsync:           true,
		WriteNewSeriesBackoffDuration: "2ms",
		CommitLog: commitLogConfig{
			FlushMaxBytes: 524288,
			FlushEvery:    "1s",
			Queue:         commitLogQueue{CalculationType: "fixed", Size: 2097152},
		},
		Filesystem: fsConfig{FilePathPrefix: p.FilePathPrefix},
		Discovery: discoveryConfig{Config: envConfig{
			Service: etcdService(p.Etcd, p.CacheDir),
		}},
	}}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render m3dbnode config: %w", err)
	}
	return out, nil
}

// RenderCoordinator returns the m3coordinator YAML for p.
func RenderCoordinator(p CoordinatorParams) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("render m3coordinator config: %w", err)
	}
	p = p.withDefaults()
	cfg := coordinatorFile{
		ListenAddress: p.ListenAddress,
		Logging:       logConfig{Level: strings.ToLower(p.LogLevel)},
		Metrics: metricsConfig{
			Scope: &scopeConfig{Prefix: "coordinator"},
			Prometheus: prometheusConfig{
				HandlerPath:   "/metrics",
				ListenAddress: p.MetricsListenAddress,
			},
			Sanitization: "prometheus",
			SamplingRate: 1.0,
			Extended:     "none",
		},
		Clusters: []clusterConfig{{Client: clientConfig{
			Config:                &envConfig{Service: etcdService(p.Etcd, p.CacheDir)},
			WriteConsistencyLevel: "majority",
			ReadConsistencyLevel:  "unstrict_majority",
		}}},
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render m3coordinator config: %w", err)
	}
	return out, nil
}
