package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // every error, in order
	}{{
		name:   "defaults",
		modify: func(*Config) {},
	}, {
		name: "paths and enums",
		modify: func(c *Config) {
			c.DataDir = "var/lib/m3sup"
			c.NodeName = "Node_1"
			c.Log.Level = "trace"
			c.Log.Format = "xml"
			c.API.Socket = "/" + strings.Repeat("s", 120)
		},
		want: []string{
			`dataDir: "var/lib/m3sup" must be an absolute path`,
			`nodeName: "Node_1" must be 1-253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit (it is the M3 host id)`,
			`log.level: "trace" must be one of debug, info, warn, error`,
			`log.format: "xml" must be one of text, json`,
			`api.socket: path is 121 bytes; a unix socket path may have at most 107`,
		},
	}, {
		name: "disk and metrics",
		modify: func(c *Config) {
			c.Disk = Disk{WarnFreePercent: 100, FailFreePercent: -1, WarnFreeBytes: 1 << 30, FailFreeBytes: 2 << 30}
			c.Metrics.Listen = ":7201"
		},
		want: []string{
			`metrics.listen: port 7201 is also used by coordinator.listenAddress`,
			`disk.warnFreePercent: 100 must be a whole percentage from 0 to 99 (0 turns it off)`,
			`disk.failFreePercent: -1 must be a whole percentage from 0 to 99 (0 turns it off)`,
			`disk.failFreeBytes: 2147483648 must not exceed disk.warnFreeBytes 1073741824 (fail means fuller than warn)`,
		},
	}, {
		name: "disk fail above warn, bad metrics address",
		modify: func(c *Config) {
			c.Disk.FailFreePercent = 20
			c.Metrics.Listen = "localhost"
		},
		want: []string{
			`metrics.listen: "localhost" must be host:port with a port from 1 to 65535, like 0.0.0.0:9000`,
			`disk.failFreePercent: 20 must not exceed disk.warnFreePercent 10 (fail means fuller than warn)`,
		},
	}, {
		name: "component logs",
		modify: func(c *Config) {
			c.ComponentLogs = ComponentLogs{MaxSize: 100, MaxFiles: 0}
		},
		want: []string{
			`componentLogs.maxSize: 100 must be at least 4096 bytes, or 0 to never rotate`,
			`componentLogs.maxFiles: 0 must be at least 1 (the live file; 1 truncates without keeping old output)`,
		},
	}, {
		name: "component logs: never rotate, keep nothing old",
		modify: func(c *Config) {
			c.ComponentLogs = ComponentLogs{MaxSize: 0, MaxFiles: 1}
		},
	}, {
		name: "etcd",
		modify: func(c *Config) {
			c.Etcd.Name = "a=b"
			c.Etcd.ClientURL = "127.0.0.1:2379"
			c.Etcd.PeerURL = "unix:///run/etcd.sock"
			c.Etcd.StartTimeout = 0
		},
		want: []string{
			`etcd.name: "a=b" must not contain '=', ',' or spaces`,
			`etcd.clientURL: must be an http(s) URL with host:port, like http://127.0.0.1:2379, got "127.0.0.1:2379"`,
			`etcd.peerURL: must be an http(s) URL with host:port, like http://127.0.0.1:2379, got "unix:///run/etcd.sock"`,
			`etcd.startTimeout: must be a positive duration like 30s, got 0s`,
		},
	}, {
		name: "runtime",
		modify: func(c *Config) {
			c.Runtime.Containerd = Containerd{Mode: "docker", Address: "run/containerd.sock", Namespace: "m3 sup"}
		},
		want: []string{
			`runtime.containerd.mode: "docker" must be one of auto, external, managed`,
			`runtime.containerd.address: "run/containerd.sock" must be an absolute path`,
			`runtime.containerd.namespace: "m3 sup" must be letters and digits, optionally separated by '.', '_' or '-'`,
			`runtime.containerd.binary: must not be empty in mode "docker"`,
		},
	}, {
		name: "external containerd needs no binary",
		modify: func(c *Config) {
			c.Runtime.Containerd = Containerd{Mode: ModeExternal, Address: "unix:///run/containerd/containerd.sock", Namespace: "k8s.io"}
		},
	}, {
		name: "release checksum kinds",
		modify: func(c *Config) {
			c.Release = Release{Version: "v1.5", URL: "m3.tar.gz", Checksum: "md5:abc"}
		},
		want: []string{
			`release.version: "v1.5" must be an M3 version like 1.5.0`,
			`release.url: "m3.tar.gz" must be an http://, https:// or file:// URL or an absolute path, like https://host/m3.tar.gz`,
			`release.checksum: "md5:abc" must be "sha256:<64 hex digits>" or "file:<url>" (or set release.insecureSkipChecksum)`,
		},
	}, {
		name: "release short sha256 and missing checksum",
		modify: func(c *Config) {
			c.Release.Checksum = "sha256:abcd"
		},
		want: []string{`release.checksum: "sha256:abcd" must be sha256: followed by 64 lowercase hex digits`},
	}, {
		name: "custom url needs a checksum",
		modify: func(c *Config) {
			c.Release = Release{Version: "1.5.0", URL: "https://mirror.example/m3.tgz"}
		},
		want: []string{`release.checksum: is required with a custom release.url: use "sha256:<64 hex digits>" or "file:<url of a checksums file>", or set release.insecureSkipChecksum: true`},
	}, {
		name: "insecureSkipChecksum skips the checksum",
		modify: func(c *Config) {
			c.Release = Release{Version: "1.5.0", URL: "file:///srv/m3.tgz", InsecureSkipChecksum: true}
		},
	}, {
		name: "listen addresses and port conflicts",
		modify: func(c *Config) {
			c.DBNode.ListenAddress = "0.0.0.0"
			c.DBNode.ClusterListenAddress = "0.0.0.0:70000"
			c.DBNode.DebugListenAddress = "127.0.0.1:7201"
			c.Coordinator.MetricsListenAddress = "10.0.0.1:9002"
			c.Etcd.PeerURL = "http://10.0.0.1:9003"
		},
		want: []string{
			`dbnode.listenAddress: "0.0.0.0" must be host:port with a port from 1 to 65535, like 0.0.0.0:9000`,
			`dbnode.clusterListenAddress: "0.0.0.0:70000" must be host:port with a port from 1 to 65535, like 0.0.0.0:9000`,
			`dbnode.httpClusterListenAddress: port 9003 is also used by etcd.peerURL`,
			`coordinator.listenAddress: port 7201 is also used by dbnode.debugListenAddress`,
			`coordinator.metricsListenAddress: port 9002 is also used by dbnode.httpNodeListenAddress`,
		},
	}, {
		name: "same port on different hosts is fine",
		modify: func(c *Config) {
			c.Coordinator.ListenAddress = "127.0.0.1:7201"
			c.Coordinator.MetricsListenAddress = "127.0.0.2:7201"
		},
	}, {
		name: "components",
		modify: func(c *Config) {
			c.DBNode.LogLevel = "verbose"
			c.DBNode.StopTimeout = Duration(-time.Second)
			c.DBNode.NoFile = 0
			c.Coordinator.LogLevel = ""
			c.Coordinator.StopTimeout = 0
		},
		want: []string{
			`dbnode.logLevel: "verbose" must be one of debug, info, warn, error`,
			`dbnode.stopTimeout: must be a positive duration like 30s, got -1s`,
			`dbnode.noFile: must be at least 1`,
			`coordinator.logLevel: "" must be one of debug, info, warn, error`,
			`coordinator.stopTimeout: must be a positive duration like 30s, got 0s`,
		},
	}, {
		name: "cluster topology",
		modify: func(c *Config) {
			c.Cluster.Env = ""
			c.Cluster.Zone = "a zone"
			c.Cluster.NumShards = 5000
			c.Cluster.ReplicationFactor = 0
			c.Cluster.IsolationGroup = "g/1"
			c.Cluster.ReadyTimeout = 0
			c.Cluster.RolloutDeadline = -1
			c.Cluster.JoinTimeout = 0
			c.Cluster.CertLifetime = Duration(time.Minute)
			c.Cluster.Namespaces = nil
			c.Cluster.Roles = []string{"dbnode", "query", "dbnode"}
			c.Cluster.Weight = 20000
		},
		want: []string{
			`cluster.env: "" must be letters, digits, '_', '.' or '-'`,
			`cluster.zone: "a zone" must be letters, digits, '_', '.' or '-'`,
			`cluster.isolationGroup: "g/1" must be letters, digits, '_', '.' or '-'`,
			`cluster.roles[1]: "query" is not a role (want "dbnode" or "coordinator")`,
			`cluster.roles[2]: "dbnode" is listed twice`,
			`cluster.weight: 20000 must be between 1 and 10000`,
			`cluster.numShards: 5000 must be between 1 and 4096`,
			`cluster.replicationFactor: 0 must be between 1 and 7`,
			`cluster.readyTimeout: must be a positive duration like 30s, got 0s`,
			`cluster.rolloutDeadline: must be a positive duration like 30s, got -1ns`,
			`cluster.joinTimeout: must be a positive duration like 30s, got 0s`,
			`cluster.certLifetime: 1m0s must be between 3m0s and 3650 days (87600h, the CA's own validity)`,
			`cluster.namespaces: must list at least one namespace`,
		},
	}, {
		name: "multi-host",
		modify: func(c *Config) {
			c.Cluster.JoinListen = "no-port"
			c.Cluster.MaxVoters = 4
		},
		want: []string{
			`cluster.joinListen: "no-port" must be host:port`,
			`cluster.advertise: must be set with cluster.joinListen (the address other hosts reach this host by)`,
			`cluster.maxVoters: 4 must be odd (3 or 5)`,
		},
	}, {
		name: "namespaces",
		modify: func(c *Config) {
			ns := c.Cluster.Namespaces[0]
			c.Cluster.Namespaces = []Namespace{
				ns,
				ns, // duplicate name
				{Name: "", Retention: Duration(time.Hour), BlockSize: Duration(2 * time.Hour), BufferPast: Duration(time.Minute), BufferFuture: Duration(time.Minute)},
				{Name: "small", Retention: Duration(time.Hour), BlockSize: Duration(10 * time.Minute), BufferPast: Duration(10 * time.Minute), BufferFuture: Duration(time.Hour)},
				{Name: "unset"},
			}
		},
		want: []string{
			`cluster.namespaces[1].name: "default" is already the name of cluster.namespaces[0]`,
			`cluster.namespaces[2].name: "" must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit`,
			`cluster.namespaces[2].blockSize: 2h must not be longer than retention (1h)`,
			`cluster.namespaces[3].bufferPast: 10m must be shorter than blockSize (10m)`,
			`cluster.namespaces[3].bufferFuture: 1h must be shorter than blockSize (10m)`,
			`cluster.namespaces[4].retention: must be a positive duration like 30s, got 0s`,
			`cluster.namespaces[4].blockSize: must be a positive duration like 30s, got 0s`,
			`cluster.namespaces[4].bufferPast: must be a positive duration like 30s, got 0s`,
			`cluster.namespaces[4].bufferFuture: must be a positive duration like 30s, got 0s`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !IsConfigError(err) {
				t.Errorf("IsConfigError = false")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.File != "" || fe.Path == "" {
				t.Errorf("first FieldError = %+v", fe)
			}
		})
	}
}
