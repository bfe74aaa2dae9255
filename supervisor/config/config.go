package config

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	yaml "gopkg.in/yaml.v2"
)

// Config is the whole m3sup configuration file. Default returns it with
// every field set; Load starts from the defaults and applies files on top.
type Config struct {
	// DataDir holds etcd data, the artifact cache and component state.
	DataDir string `yaml:"dataDir"`
	// NodeName names this host; it is the M3 host id and the default etcd
	// member name. Default: the hostname, lowercased, with characters other
	// than [a-z0-9-.] replaced by '-'.
	NodeName    string      `yaml:"nodeName"`
	Log         Log         `yaml:"log"`
	API         API         `yaml:"api"`
	Metrics     Metrics     `yaml:"metrics"`
	Disk        Disk        `yaml:"disk"`
	Etcd        Etcd        `yaml:"etcd"`
	Runtime     Runtime     `yaml:"runtime"`
	Release     Release     `yaml:"release"`
	DBNode      DBNode      `yaml:"dbnode"`
	Coordinator Coordinator `yaml:"coordinator"`
	Cluster     Cluster     `yaml:"cluster"`
	Backup      Backup      `yaml:"backup"`
	// ComponentLogs caps the disk each component's stdout/stderr log takes.
	ComponentLogs ComponentLogs `yaml:"componentLogs"`
	Bundles       Bundles       `yaml:"bundles"`
	// Registries configures image pulls per registry host ("quay.io",
	// "127.0.0.1:5000"): mirrors, credentials, plain HTTP, a CA. Hosts not
	// listed are reached over HTTPS, anonymously.
	Registries map[string]Registry `yaml:"registries,omitempty"`
}

// Registry configures pulls from one registry host.
type Registry struct {
	// Mirrors are tried in order before the registry itself, each written
	// host[:port][/path] without a scheme; a mirror's own entry under
	// registries gives its scheme, credentials and CA.
	Mirrors  []string `yaml:"mirrors,omitempty"`
	Username string   `yaml:"username,omitempty"`
	// Password, or PasswordFile (a file holding it; preferred, as `config
	// print` shows Password).
	Password     string `yaml:"password,omitempty"`
	PasswordFile string `yaml:"passwordFile,omitempty"`
	// InsecurePlainHTTP talks plain HTTP to this host; nothing else does.
	InsecurePlainHTTP bool `yaml:"insecurePlainHTTP,omitempty"`
	// CA is a PEM file trusted for this host in addition to the system roots.
	CA string `yaml:"ca,omitempty"`
}

// Backup schedules snapshots of the cluster's brain (etcd, desired state,
// M3's placement and namespaces) into <dataDir>/backups.
type Backup struct {
	Interval Duration `yaml:"interval"` // 0 disables scheduled backups
	Keep     int      `yaml:"keep"`     // newest files kept; 0 keeps all
}

// ComponentLogs caps each component's log
// (components/<name>/logs/<name>.log): it is rotated by copy and truncate
// once it reaches MaxSize, keeping MaxFiles files per component, the live one
// included (see supervisor/logrotate for what a rotation can lose).
type ComponentLogs struct {
	MaxSize  int64 `yaml:"maxSize"`  // bytes; 0 never rotates
	MaxFiles int   `yaml:"maxFiles"` // at least 1; 1 truncates without keeping
	Compress bool  `yaml:"compress"` // gzip rotated files from <name>.log.2 on
}

// Component log defaults: 5 files of 10 MiB, at most 50 MiB per component
// (much less with compression).
const (
	DefaultComponentLogMaxSize  = int64(10) << 20
	DefaultComponentLogMaxFiles = 5
	// MinComponentLogMaxSize is the smallest rotation size accepted.
	MinComponentLogMaxSize = int64(4) << 10
)

// Bundles configures air-gap bundles dropped into <dataDir>/bundles.
type Bundles struct {
	// TrustedKeys are ed25519 public key files (PEM); when set, only bundles
	// signed by one of them are imported.
	TrustedKeys []string `yaml:"trustedKeys,omitempty"`
}

// Log configures m3sup's own log.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error
	Format string `yaml:"format"` // text|json
}

// Metrics configures the optional TCP listener for Prometheus.
type Metrics struct {
	// Listen is a host:port (or :port, meaning 127.0.0.1) where m3sup
	// serves GET /metrics only, plain HTTP, for Prometheus; "" (the
	// default) serves metrics on the API socket only.
	Listen string `yaml:"listen"`
}

// ListenAddress is Listen with a missing host made loopback ("" when off).
func (m Metrics) ListenAddress() string {
	if strings.HasPrefix(m.Listen, ":") {
		return "127.0.0.1" + m.Listen
	}
	return m.Listen
}

// Disk sets when the data dir's filesystem counts as low on space (status
// and the log warn, preflight warns) and as nearly full (preflight fails,
// the log says so as an error). Free space or free inodes below either the
// percentage or the byte count of a level reaches it; 0 turns that part
// off. Bytes are plain integers.
type Disk struct {
	WarnFreePercent int    `yaml:"warnFreePercent"` // default 10
	WarnFreeBytes   uint64 `yaml:"warnFreeBytes"`   // default 2 GiB
	FailFreePercent int    `yaml:"failFreePercent"` // default 2
	FailFreeBytes   uint64 `yaml:"failFreeBytes"`   // default 256 MiB
}

// API configures the local API the CLI talks to.
type API struct {
	Socket string `yaml:"socket"` // unix socket path
}

// Etcd configures the embedded etcd member.
type Etcd struct {
	Name string `yaml:"name"` // default: NodeName
	// ClientURL and PeerURL name the member's host:port. The member
	// always serves mutual TLS there (https, whatever the scheme says):
	// on a single node on these addresses, in multi-host mode on the
	// advertise address with these ports.
	ClientURL    string   `yaml:"clientURL"`
	PeerURL      string   `yaml:"peerURL"`
	StartTimeout Duration `yaml:"startTimeout"`
}

// Runtime configures how containers are run.
type Runtime struct {
	Containerd Containerd `yaml:"containerd"`
}

// Containerd modes.
const (
	ModeAuto     = "auto"     // use a host containerd at Address if one answers, else start one
	ModeExternal = "external" // use the host containerd at Address; never start one
	ModeManaged  = "managed"  // always start a private containerd child
)

// Containerd configures the containerd m3sup uses.
type Containerd struct {
	Mode      string `yaml:"mode"`      // auto|external|managed
	Address   string `yaml:"address"`   // socket path; empty: the mode's usual socket
	Namespace string `yaml:"namespace"` // containerd namespace for m3sup's containers
	Binary    string `yaml:"binary"`    // containerd binary for managed mode
}

// Release says which M3 release to run and how to verify it.
type Release struct {
	Version string `yaml:"version"`
	// URL of the release tarball; empty: the GitHub release of Version.
	URL string `yaml:"url"`
	// Checksum is "sha256:<64 hex>" or "file:<url of a checksums file>";
	// empty with an empty URL: the GitHub checksums file of Version.
	Checksum             string `yaml:"checksum"`
	InsecureSkipChecksum bool   `yaml:"insecureSkipChecksum"`
	// MaxDownloadBytes bounds the downloaded release tarball (and any
	// artifact m3sup fetches for it); a larger download fails and leaves
	// nothing in the cache. Default (and 0) 2 GiB (DefaultMaxDownloadBytes). It is
	// this host's own limit, not part of the cluster's desired state.
	MaxDownloadBytes int64 `yaml:"maxDownloadBytes"`
}

// DBNode configures m3dbnode.
type DBNode struct {
	ListenAddress            string   `yaml:"listenAddress"`
	ClusterListenAddress     string   `yaml:"clusterListenAddress"`
	HTTPNodeListenAddress    string   `yaml:"httpNodeListenAddress"`
	HTTPClusterListenAddress string   `yaml:"httpClusterListenAddress"`
	DebugListenAddress       string   `yaml:"debugListenAddress"`
	LogLevel                 string   `yaml:"logLevel"`
	StopTimeout              Duration `yaml:"stopTimeout"`
	// UnhealthyAfter: an m3dbnode that answered /health and then stays
	// quiet this long (stopped, deadlocked) is killed and restarted with
	// reason "unhealthy". 0 never restarts it for that. A bootstrap,
	// however long, answers /health all along and is left alone.
	UnhealthyAfter Duration `yaml:"unhealthyAfter"`
	NoFile         uint64   `yaml:"noFile"` // RLIMIT_NOFILE
	// Image runs m3dbnode from this image (like quay.io/m3db/m3dbnode:v1.5.0)
	// instead of the release tarball's binary.
	Image string `yaml:"image,omitempty"`
	// CPUCoreGuard runs m3dbnode with a /proc/cpuinfo that lists one
	// processor, so M3 v1.5 never indexes its per-core queues with the CPU
	// id RDTSCP reports (wrong on some VMs, missing on others: M3 issues
	// #3105, #3827, #4080). "auto" (the default) guards when m3sup's probe
	// finds the ids untrustworthy on this host; "on" always; "off" never.
	CPUCoreGuard string `yaml:"cpuCoreGuard"`
}

// CPU-core guard modes (DBNode.CPUCoreGuard).
const (
	GuardAuto = "auto"
	GuardOn   = "on"
	GuardOff  = "off"
)

// Coordinator configures m3coordinator.
type Coordinator struct {
	ListenAddress        string   `yaml:"listenAddress"`
	MetricsListenAddress string   `yaml:"metricsListenAddress"`
	LogLevel             string   `yaml:"logLevel"`
	StopTimeout          Duration `yaml:"stopTimeout"`
	// UnhealthyAfter is DBNode.UnhealthyAfter for m3coordinator.
	UnhealthyAfter Duration `yaml:"unhealthyAfter"`
	// Image runs m3coordinator from this image instead of the release
	// tarball's binary.
	Image string `yaml:"image,omitempty"`
}

// Cluster is the M3 topology m3sup seeds on first boot.
type Cluster struct {
	Env               string `yaml:"env"`
	Zone              string `yaml:"zone"`
	NumShards         int    `yaml:"numShards"`
	ReplicationFactor int    `yaml:"replicationFactor"`
	// IsolationGroup is this host's M3 isolation group (M3 puts each
	// replica of a shard in a different group). Empty means the node name:
	// one group per host.
	IsolationGroup string `yaml:"isolationGroup"`
	// Weight is this host's M3 placement weight (its share of shards),
	// 1 to 10000; default 100. An explicit 0 is an error.
	Weight uint32 `yaml:"weight,omitempty"`
	// Roles is what this host runs: dbnode, coordinator or both (the
	// default). Only a multi-host cluster has hosts with one role: a
	// coordinator-only host joins no placement, a dbnode-only host drives
	// M3 through a peer's coordinator.
	Roles        []string    `yaml:"roles,omitempty"`
	ReadyTimeout Duration    `yaml:"readyTimeout"`
	Namespaces   []Namespace `yaml:"namespaces"`
	// Advertise is the address (IP or DNS name) other hosts reach this host
	// by, in multi-host mode; etcd's URLs use it as their host.
	Advertise string `yaml:"advertise,omitempty"`
	// JoinListen (host:port) serves the TLS join endpoint other hosts
	// `m3sup run --join` to. Set on the first host, it turns on multi-host
	// mode: a CA under <dataDir>/pki and etcd over mutual TLS. Set on a
	// joined etcd voter (which received the CA with its join), that voter
	// serves joins too.
	JoinListen string `yaml:"joinListen,omitempty"`
	// MaxVoters is how many etcd voters the cluster grows to (odd; 3 or 5);
	// later hosts use etcd as clients. Zero means 3.
	MaxVoters int `yaml:"maxVoters,omitempty"`
	// JoinTimeout is how long `m3sup run --join` keeps trying while the
	// cluster refuses it for now (another host is joining, the join
	// endpoint is not up or busy); a refusal no retry can change (token,
	// CA, name) ends the run at once. Default 10m.
	JoinTimeout Duration `yaml:"joinTimeout"`
	// RolloutDeadline is how long a planned m3dbnode restart for a new
	// spec (release or dbnode settings) may take to become healthy
	// (bootstrapped, every shard AVAILABLE). A host that misses it marks
	// the spec failed, which halts the rollout, and returns its m3dbnode
	// to the last spec it ran healthy.
	RolloutDeadline Duration `yaml:"rolloutDeadline"`
	// CertLifetime is the validity of every certificate m3sup issues
	// (etcd's, M3's, the join endpoint's); each is renewed in place
	// between 2/3 and 3/4 of it. Default 365 days; at least
	// MinCertLifetime (short lifetimes are for tests) and at most the
	// CA's (pki.CAValidity).
	CertLifetime Duration `yaml:"certLifetime"`
}

// MinCertLifetime is the shortest cluster.certLifetime.
const MinCertLifetime = 3 * time.Minute

// Host roles (cluster.roles).
const (
	RoleDBNode      = "dbnode"
	RoleCoordinator = "coordinator"
)

// HasRole reports whether this host runs role r.
func (c Cluster) HasRole(r string) bool { return slices.Contains(c.Roles, r) }

// MultiHost reports whether this host is (or will be) part of a multi-host
// cluster: it serves the join endpoint or joins another host.
func (c Cluster) MultiHost(joinURL string) bool { return c.JoinListen != "" || joinURL != "" }

// Namespace is one unaggregated M3 namespace. Zero BufferPast,
// BufferFuture and a nil IndexEnabled take their defaults on Load.
type Namespace struct {
	Name         string   `yaml:"name"`
	Retention    Duration `yaml:"retention"`
	BlockSize    Duration `yaml:"blockSize"`
	BufferPast   Duration `yaml:"bufferPast"`   // default 10m
	BufferFuture Duration `yaml:"bufferFuture"` // default 2m
	IndexEnabled *bool    `yaml:"indexEnabled"` // default true
}

// Indexed reports whether the namespace's index is enabled (nil means yes).
func (n Namespace) Indexed() bool { return n.IndexEnabled == nil || *n.IndexEnabled }

// Defaults that other packages may want to name.
const (
	DefaultDataDir        = "/var/lib/m3sup"
	DefaultSocket         = "/run/m3sup/m3sup.sock"
	DefaultReleaseVersion = "1.5.0"
	DefaultBufferPast     = 10 * time.Minute
	DefaultBufferFuture   = 2 * time.Minute
	DefaultWeight         = 100
	// DefaultMaxDownloadBytes is release.maxDownloadBytes' default, the
	// same 2 GiB as bundle.DefaultMaxDownload.
	DefaultMaxDownloadBytes = int64(2) << 30

	releaseURLFormat      = "https://github.com/m3db/m3/releases/download/v%[1]s/m3_%[1]s_linux_amd64.tar.gz"
	releaseChecksumFormat = "file:https://github.com/m3db/m3/releases/download/v%[1]s/m3_%[1]s_checksums.txt"
	fallbackNodeName      = "m3sup"
)

// Default returns the configuration used when no file says otherwise.
// NodeName comes from os.Hostname.
func Default() Config {
	c := base()
	c.fillDerived()
	return c
}

// base is Default without the fields derived from other fields (etcd.name,
// release.url, release.checksum), so that Load can derive them from the
// merged values.
func base() Config {
	host, _ := os.Hostname() // an unreadable hostname falls back below
	return Config{
		DataDir:  DefaultDataDir,
		NodeName: sanitizeNodeName(host),
		Log:      Log{Level: "info", Format: "text"},
		API:      API{Socket: DefaultSocket},
		Disk: Disk{WarnFreePercent: 10, WarnFreeBytes: 2 << 30,
			FailFreePercent: 2, FailFreeBytes: 256 << 20},
		Etcd: Etcd{
			ClientURL:    "http://127.0.0.1:2379",
			PeerURL:      "http://127.0.0.1:2380",
			StartTimeout: Duration(60 * time.Second),
		},
		Runtime: Runtime{Containerd: Containerd{
			Mode:      ModeAuto,
			Namespace: "m3sup",
			Binary:    "containerd",
		}},
		Release: Release{Version: DefaultReleaseVersion, MaxDownloadBytes: DefaultMaxDownloadBytes},
		DBNode: DBNode{
			ListenAddress:            "0.0.0.0:9000",
			ClusterListenAddress:     "0.0.0.0:9001",
			HTTPNodeListenAddress:    "0.0.0.0:9002",
			HTTPClusterListenAddress: "0.0.0.0:9003",
			DebugListenAddress:       "0.0.0.0:9004",
			LogLevel:                 "info",
			StopTimeout:              Duration(30 * time.Second),
			UnhealthyAfter:           Duration(30 * time.Second),
			NoFile:                   3000000,
			CPUCoreGuard:             GuardAuto,
		},
		Coordinator: Coordinator{
			ListenAddress:        "0.0.0.0:7201",
			MetricsListenAddress: "0.0.0.0:7203",
			LogLevel:             "info",
			StopTimeout:          Duration(10 * time.Second),
			UnhealthyAfter:       Duration(10 * time.Second),
		},
		Backup: Backup{Interval: Duration(6 * time.Hour), Keep: 5},
		ComponentLogs: ComponentLogs{MaxSize: DefaultComponentLogMaxSize,
			MaxFiles: DefaultComponentLogMaxFiles, Compress: true},
		Cluster: Cluster{
			Env:               "default_env",
			Zone:              "embedded",
			NumShards:         64,
			ReplicationFactor: 1,
			Weight:            DefaultWeight,
			ReadyTimeout:      Duration(10 * time.Minute),
			RolloutDeadline:   Duration(5 * time.Minute),
			JoinTimeout:       Duration(10 * time.Minute),
			CertLifetime:      Duration(365 * 24 * time.Hour),
			Namespaces: []Namespace{{
				Name:      "default",
				Retention: Duration(48 * time.Hour),
				BlockSize: Duration(2 * time.Hour),
			}},
		},
	}
}

// fillDerived sets the fields whose defaults depend on other fields, and the
// per-namespace defaults.
func (c *Config) fillDerived() {
	if c.Etcd.Name == "" {
		c.Etcd.Name = c.NodeName
	}
	if c.Cluster.IsolationGroup == "" {
		c.Cluster.IsolationGroup = c.NodeName
	}
	if len(c.Cluster.Roles) == 0 {
		c.Cluster.Roles = []string{RoleDBNode, RoleCoordinator}
	}
	if c.Release.URL == "" && c.Release.Version != "" {
		c.Release.URL = fmt.Sprintf(releaseURLFormat, c.Release.Version)
		if c.Release.Checksum == "" {
			c.Release.Checksum = fmt.Sprintf(releaseChecksumFormat, c.Release.Version)
		}
	}
	for i := range c.Cluster.Namespaces {
		ns := &c.Cluster.Namespaces[i]
		if ns.BufferPast == 0 {
			ns.BufferPast = Duration(DefaultBufferPast)
		}
		if ns.BufferFuture == 0 {
			ns.BufferFuture = Duration(DefaultBufferFuture)
		}
		if ns.IndexEnabled == nil {
			t := true
			ns.IndexEnabled = &t
		}
	}
}

// sanitizeNodeName lowercases a hostname and replaces every character outside
// [a-z0-9-.] with '-'.
func sanitizeNodeName(host string) string {
	b := []byte(strings.ToLower(host))
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.') {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), "-.")
	if len(s) > 253 {
		s = strings.Trim(s[:253], "-.")
	}
	if s == "" {
		return fallbackNodeName
	}
	return s
}

// YAML returns the effective configuration as YAML that Load reads back to
// the same Config; `m3sup config print` shows it.
func (c Config) YAML() ([]byte, error) {
	out, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	return out, nil
}

// Duration is a time.Duration written as a Go duration string ("48h", "30s").
// Bare numbers and units Go does not know (like "2d") are rejected.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration compactly: "48h", "1h30m", "10m", "30s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (interface{}, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(unmarshal func(interface{}) error) error {
	var v interface{}
	if err := unmarshal(&v); err != nil {
		return err
	}
	parsed, err := parseDuration(v)
	if err != nil {
		return err
	}
	*d = parsed
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v interface{}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	parsed, err := parseDuration(v)
	if err != nil {
		return err
	}
	*d = parsed
	return nil
}

// parseDuration accepts only strings that time.ParseDuration accepts.
func parseDuration(v interface{}) (Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("invalid duration %s: use Go durations like 48h", describe(v))
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use Go durations like 48h", s)
	}
	return Duration(d), nil
}
