package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to a file named name in a fresh temp dir.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func noEnv(string) (string, bool) { return "", false }

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"dataDir", c.DataDir, "/var/lib/m3sup"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"api.socket", c.API.Socket, "/run/m3sup/m3sup.sock"},
		{"etcd.name", c.Etcd.Name, c.NodeName},
		{"etcd.clientURL", c.Etcd.ClientURL, "http://127.0.0.1:2379"},
		{"etcd.peerURL", c.Etcd.PeerURL, "http://127.0.0.1:2380"},
		{"etcd.startTimeout", c.Etcd.StartTimeout.D(), 60 * time.Second},
		{"runtime.containerd.mode", c.Runtime.Containerd.Mode, "auto"},
		{"runtime.containerd.address", c.Runtime.Containerd.Address, ""},
		{"runtime.containerd.namespace", c.Runtime.Containerd.Namespace, "m3sup"},
		{"runtime.containerd.binary", c.Runtime.Containerd.Binary, "containerd"},
		{"release.version", c.Release.Version, "1.5.0"},
		{"release.url", c.Release.URL, "https://github.com/m3db/m3/releases/download/v1.5.0/m3_1.5.0_linux_amd64.tar.gz"},
		{"release.checksum", c.Release.Checksum, "file:https://github.com/m3db/m3/releases/download/v1.5.0/m3_1.5.0_checksums.txt"},
		{"release.insecureSkipChecksum", c.Release.InsecureSkipChecksum, false},
		{"dbnode.listenAddress", c.DBNode.ListenAddress, "0.0.0.0:9000"},
		{"dbnode.clusterListenAddress", c.DBNode.ClusterListenAddress, "0.0.0.0:9001"},
		{"dbnode.httpNodeListenAddress", c.DBNode.HTTPNodeListenAddress, "0.0.0.0:9002"},
		{"dbnode.httpClusterListenAddress", c.DBNode.HTTPClusterListenAddress, "0.0.0.0:9003"},
		{"dbnode.debugListenAddress", c.DBNode.DebugListenAddress, "0.0.0.0:9004"},
		{"dbnode.logLevel", c.DBNode.LogLevel, "info"},
		{"dbnode.stopTimeout", c.DBNode.StopTimeout.D(), 30 * time.Second},
		{"dbnode.noFile", c.DBNode.NoFile, uint64(3000000)},
		{"componentLogs", c.ComponentLogs, ComponentLogs{MaxSize: 10 << 20, MaxFiles: 5, Compress: true}},
		{"coordinator.listenAddress", c.Coordinator.ListenAddress, "0.0.0.0:7201"},
		{"coordinator.metricsListenAddress", c.Coordinator.MetricsListenAddress, "0.0.0.0:7203"},
		{"coordinator.logLevel", c.Coordinator.LogLevel, "info"},
		{"coordinator.stopTimeout", c.Coordinator.StopTimeout.D(), 10 * time.Second},
		{"cluster.env", c.Cluster.Env, "default_env"},
		{"cluster.zone", c.Cluster.Zone, "embedded"},
		{"cluster.numShards", c.Cluster.NumShards, 64},
		{"cluster.replicationFactor", c.Cluster.ReplicationFactor, 1},
		{"cluster.isolationGroup", c.Cluster.IsolationGroup, c.NodeName},
		{"cluster.weight", c.Cluster.Weight, uint32(100)},
		{"cluster.roles", c.Cluster.Roles, []string{"dbnode", "coordinator"}},
		{"cluster.readyTimeout", c.Cluster.ReadyTimeout.D(), 10 * time.Minute},
		{"cluster.rolloutDeadline", c.Cluster.RolloutDeadline.D(), 5 * time.Minute},
		{"cluster.joinTimeout", c.Cluster.JoinTimeout.D(), 10 * time.Minute},
		{"cluster.certLifetime", c.Cluster.CertLifetime.D(), 365 * 24 * time.Hour},
		{"len(cluster.namespaces)", len(c.Cluster.Namespaces), 1},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	ns := c.Cluster.Namespaces[0]
	if ns.Name != "default" || ns.Retention.D() != 48*time.Hour || ns.BlockSize.D() != 2*time.Hour ||
		ns.BufferPast.D() != 10*time.Minute || ns.BufferFuture.D() != 2*time.Minute || !ns.Indexed() ||
		ns.IndexEnabled == nil {
		t.Errorf("default namespace = %+v", ns)
	}
	if c.NodeName == "" {
		t.Error("nodeName is empty")
	}

	// Default returns fresh values: changing one does not change the next.
	c.Cluster.Namespaces[0].Name = "changed"
	*c.Cluster.Namespaces[0].IndexEnabled = false
	if d := Default(); d.Cluster.Namespaces[0].Name != "default" || !d.Cluster.Namespaces[0].Indexed() {
		t.Error("Default() shares state between calls")
	}
}

func TestSanitizeNodeName(t *testing.T) {
	for in, want := range map[string]string{
		"db-1.example.com": "db-1.example.com",
		"My_Host":          "my-host",
		"-._x_.-":          "x",
		"":                 "m3sup",
		"!!!":              "m3sup",
		"ÄBC":              "bc", // each non-ASCII byte becomes '-', then trimmed
	} {
		if got := sanitizeNodeName(in); got != want {
			t.Errorf("sanitizeNodeName(%q) = %q, want %q", in, got, want)
		}
		if got := sanitizeNodeName(in); !nodeNameRE.MatchString(got) {
			t.Errorf("sanitizeNodeName(%q) = %q, which Validate rejects", in, got)
		}
	}
	if got := sanitizeNodeName(strings.Repeat("a", 300)); len(got) != 253 {
		t.Errorf("long hostname gives %d bytes, want 253", len(got))
	}
}

func TestLoadNoFilesIsDefault(t *testing.T) {
	got, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load() = %+v, want Default() %+v", got, want)
	}
}

func TestLoadOverrides(t *testing.T) {
	first := writeFile(t, "first.yaml", `
dataDir: /data/first
nodeName: node-a
etcd:
  clientURL: http://10.0.0.1:2379
  startTimeout: 5s
cluster:
  numShards: 128
  namespaces:
    - name: a
      retention: 24h
      blockSize: 1h
    - name: b
      retention: 720h
      blockSize: 24h
      bufferPast: 20m
      indexEnabled: false
`)
	second := writeFile(t, "second.yaml", `
etcd:
  clientURL: http://10.0.0.2:2379   # later wins, field by field
release:
  version: 1.5.1
cluster:
  namespaces:                        # lists are replaced whole
    - name: only
      retention: 48h
      blockSize: 2h
coordinator: ~                       # null keeps the defaults
componentLogs: {maxSize: 65536, maxFiles: 3}
`)
	c, err := Load(first, second)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/data/first" || c.NodeName != "node-a" || c.Etcd.Name != "node-a" {
		t.Errorf("first file lost: dataDir %q nodeName %q etcd.name %q", c.DataDir, c.NodeName, c.Etcd.Name)
	}
	if c.Etcd.ClientURL != "http://10.0.0.2:2379" {
		t.Errorf("etcd.clientURL = %q, want the second file's", c.Etcd.ClientURL)
	}
	if c.Etcd.StartTimeout.D() != 5*time.Second || c.Etcd.PeerURL != "http://127.0.0.1:2380" {
		t.Errorf("etcd siblings lost: %+v", c.Etcd)
	}
	if c.Cluster.NumShards != 128 || c.Cluster.Env != "default_env" {
		t.Errorf("cluster = %+v", c.Cluster)
	}
	if len(c.Cluster.Namespaces) != 1 || c.Cluster.Namespaces[0].Name != "only" ||
		c.Cluster.Namespaces[0].BufferPast.D() != 10*time.Minute || !c.Cluster.Namespaces[0].Indexed() {
		t.Errorf("namespaces = %+v", c.Cluster.Namespaces)
	}
	if want := (ComponentLogs{MaxSize: 65536, MaxFiles: 3, Compress: true}); c.ComponentLogs != want {
		t.Errorf("componentLogs = %+v, want %+v", c.ComponentLogs, want)
	}
	if c.Coordinator != Default().Coordinator {
		t.Errorf("coordinator = %+v, want defaults", c.Coordinator)
	}
	wantURL := "https://github.com/m3db/m3/releases/download/v1.5.1/m3_1.5.1_linux_amd64.tar.gz"
	wantSum := "file:https://github.com/m3db/m3/releases/download/v1.5.1/m3_1.5.1_checksums.txt"
	if c.Release.URL != wantURL || c.Release.Checksum != wantSum {
		t.Errorf("release not derived from version: %+v", c.Release)
	}

	// The other order: the first file's namespaces win and keep their settings.
	c, err = Load(second, first)
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd.ClientURL != "http://10.0.0.1:2379" || len(c.Cluster.Namespaces) != 2 {
		t.Errorf("reverse order: clientURL %q, %d namespaces", c.Etcd.ClientURL, len(c.Cluster.Namespaces))
	}
	b := c.Cluster.Namespaces[1]
	if b.BufferPast.D() != 20*time.Minute || b.BufferFuture.D() != 2*time.Minute || b.Indexed() {
		t.Errorf("namespace b = %+v", b)
	}
}

func TestLoadEmptyAndCommentOnlyFiles(t *testing.T) {
	for _, content := range []string{"", "# nothing\n", "---\n", "~\n"} {
		c, err := Load(writeFile(t, "m3sup.yaml", content))
		if err != nil {
			t.Errorf("%q: %v", content, err)
			continue
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("%q: not the defaults", content)
		}
	}
}

func TestLoadEnvExpansion(t *testing.T) {
	path := writeFile(t, "m3sup.yaml", `
dataDir: ${M3SUP_TEST_DIR:/tmp/x}
cluster:
  numShards: ${M3SUP_TEST_SHARDS:32}
release:
  checksum: sha256:$${NOT_EXPANDED}
  insecureSkipChecksum: true
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/tmp/x" || c.Cluster.NumShards != 32 {
		t.Errorf("defaults not used: dataDir %q numShards %d", c.DataDir, c.Cluster.NumShards)
	}
	if c.Release.Checksum != "sha256:${NOT_EXPANDED}" {
		t.Errorf("$$ not unescaped: %q", c.Release.Checksum)
	}

	t.Setenv("M3SUP_TEST_DIR", "/srv/m3sup")
	t.Setenv("M3SUP_TEST_SHARDS", "256")
	if c, err = Load(path); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/m3sup" || c.Cluster.NumShards != 256 {
		t.Errorf("env not used: dataDir %q numShards %d", c.DataDir, c.Cluster.NumShards)
	}

	t.Setenv("M3SUP_TEST_SHARDS", "lots")
	_, err = Load(path)
	wantErr(t, err, path+`: cluster.numShards: cannot use "lots" as an integer`)
}

// wantErr fails unless err is a config error whose text contains every want.
func wantErr(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", wants)
	}
	if !IsConfigError(err) {
		t.Errorf("IsConfigError(%v) = false", err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // each %s is the file's path
	}{{
		name:    "syntax error with line",
		content: "dataDir: /x\nnodeName: a\netcd:\n  clientURL: http://a:1: b\n",
		want:    []string{"%s: line 4: mapping values are not allowed in this context"},
	}, {
		name:    "duplicate key",
		content: "dataDir: /x\ndataDir: /y\n",
		want:    []string{`%s: line 2: key "dataDir" already set in map`},
	}, {
		name:    "unknown nested key differing in case",
		content: "etcd:\n  clientUrl: http://127.0.0.1:2379\n",
		want:    []string{`%s: unknown field "etcd.clientUrl" (did you mean "etcd.clientURL"?)`},
	}, {
		name:    "unknown key with a typo inside a list",
		content: "cluster:\n  namespaces:\n    - name: a\n      retension: 48h\n      blockSize: 2h\n",
		want:    []string{`%s: unknown field "cluster.namespaces[0].retension" (did you mean "cluster.namespaces[0].retention"?)`},
	}, {
		name:    "unknown key at the wrong level",
		content: "numShards: 32\n",
		want:    []string{`%s: unknown field "numShards" (did you mean "cluster.numShards"?)`},
	}, {
		name:    "unknown key without a suggestion",
		content: "etcd:\n  wibble: 1\n",
		want:    []string{`%s: unknown field "etcd.wibble"`},
	}, {
		name:    "wrong types",
		content: "cluster:\n  numShards: abc\n  replicationFactor: 1.5\nrelease:\n  insecureSkipChecksum: maybe\ndbnode:\n  noFile: -1\netcd: [a]\nlog: debug\n",
		want: []string{
			`%s: cluster.numShards: cannot use "abc" as an integer`,
			`%s: cluster.replicationFactor: cannot use 1.5 as an integer`,
			`%s: release.insecureSkipChecksum: cannot use "maybe" as a boolean (true or false)`,
			`%s: dbnode.noFile: cannot use -1 as a non-negative integer`,
			`%s: etcd: cannot use a list as a mapping`,
			`%s: log: cannot use "debug" as a mapping`,
		},
	}, {
		name:    "bad durations",
		content: "cluster:\n  namespaces:\n    - name: a\n      retention: 2d\n      blockSize: 7200\n",
		want: []string{
			`%s: cluster.namespaces[0].retention: invalid duration "2d": use Go durations like 48h`,
			`%s: cluster.namespaces[0].blockSize: invalid duration 7200: use Go durations like 48h`,
		},
	}, {
		name:    "list where a mapping is expected and vice versa",
		content: "cluster:\n  namespaces:\n    name: a\n",
		want:    []string{`%s: cluster.namespaces: cannot use a mapping as a list`},
	}, {
		name:    "document is not a mapping",
		content: "- a\n- b\n",
		want:    []string{`%s: cannot use a list as a mapping`},
	}, {
		name:    "unset variable without default",
		content: "dataDir: ${M3SUP_TEST_UNSET_VAR}\n",
		want:    []string{`%s: environment variable M3SUP_TEST_UNSET_VAR is not set and ${M3SUP_TEST_UNSET_VAR} has no default`},
	}, {
		name:    "validation names the file that set the field",
		content: "etcd:\n  clientURL: localhost\ncluster:\n  numShards: 0\n",
		want: []string{
			`%s: etcd.clientURL: must be an http(s) URL with host:port, like http://127.0.0.1:2379, got "localhost"`,
			`%s: cluster.numShards: 0 must be between 1 and 4096`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "m3sup.yaml", tt.content)
			_, err := load(noEnv, []string{path})
			var wants []string
			for _, w := range tt.want {
				wants = append(wants, strings.ReplaceAll(w, "%s", path))
			}
			wantErr(t, err, wants...)
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("m3sup-test-missing.yaml")
	wantErr(t, err, "m3sup-test-missing.yaml: open: no such file or directory")
	if err.Error() != "m3sup-test-missing.yaml: open: no such file or directory" {
		t.Errorf("error = %q", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("errors.Is(err, fs.ErrNotExist) = false")
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.File != "m3sup-test-missing.yaml" {
		t.Errorf("errors.As FileError: %+v", fe)
	}
}

func TestLoadReportsEveryFile(t *testing.T) {
	bad1 := writeFile(t, "a.yaml", "etcd:\n  clientUrl: x\n")
	bad2 := writeFile(t, "b.yaml", "cluster:\n  numShards: abc\n")
	_, err := Load(bad1, "m3sup-test-missing.yaml", bad2)
	wantErr(t, err,
		bad1+`: unknown field "etcd.clientUrl"`,
		"m3sup-test-missing.yaml: open: no such file or directory",
		bad2+`: cluster.numShards: cannot use "abc" as an integer`)
}

func TestValidationAttribution(t *testing.T) {
	a := writeFile(t, "a.yaml", "cluster:\n  numShards: 0\n  namespaces:\n    - {name: x, retention: 1h, blockSize: 2h, bufferPast: 1m}\n")
	b := writeFile(t, "b.yaml", "cluster:\n  numShards: 9999\n")
	c := writeFile(t, "c.yaml", "cluster:\n  namespaces:\n    - {name: y, retention: 1h, blockSize: 5m}\n")
	_, err := Load(a, b)
	wantErr(t, err,
		b+": cluster.numShards: 9999 must be between 1 and 4096",
		a+": cluster.namespaces[0].blockSize: 2h must not be longer than retention (1h)")

	// c replaced a's list, so a's bufferPast is gone and the failing
	// bufferPast is the default: no file is named for it.
	_, err = Load(a, c)
	wantErr(t, err,
		a+": cluster.numShards: 0 must be between 1 and 4096",
		"\ncluster.namespaces[0].bufferPast: 10m must be shorter than blockSize (5m)",
	)
}

func TestYAMLRoundTrip(t *testing.T) {
	in := Default()
	in.NodeName = "db-1"
	in.Etcd.Name = "member-1"
	in.Release = Release{Version: "1.5.1", URL: "https://mirror.example/m3.tgz", Checksum: "sha256:" + strings.Repeat("ab", 32)}
	f := false
	in.Cluster.Namespaces = append(in.Cluster.Namespaces, Namespace{
		Name: "long", Retention: Duration(90 * 24 * time.Hour), BlockSize: Duration(24 * time.Hour),
		BufferPast: Duration(90 * time.Minute), BufferFuture: Duration(time.Minute), IndexEnabled: &f,
	})
	out, err := in.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"retention: 2160h\n", "bufferPast: 1h30m\n", "startTimeout: 1m\n", "clientURL: http://127.0.0.1:2379\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("YAML() lacks %q:\n%s", want, out)
		}
	}
	got, err := Load(writeFile(t, "printed.yaml", string(out)))
	if err != nil {
		t.Fatalf("Load(YAML()): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", got, in)
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", 10 * time.Minute: "10m", 48 * time.Hour: "48h",
		90 * time.Minute: "1h30m", time.Hour + time.Second: "1h0m1s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v).String() = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(Duration(d).String()); err != nil || back != d {
			t.Errorf("%q parses back to %v, %v", want, back, err)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"2d"`)); err == nil || err.Error() != `invalid duration "2d": use Go durations like 48h` {
		t.Errorf("UnmarshalJSON(2d) = %v", err)
	}
	if err := d.UnmarshalJSON([]byte(`"90m"`)); err != nil || d.D() != 90*time.Minute {
		t.Errorf("UnmarshalJSON(90m) = %v, %v", d, err)
	}
	if b, _ := d.MarshalJSON(); string(b) != `"1h30m"` {
		t.Errorf("MarshalJSON = %s", b)
	}
}

func TestIsConfigError(t *testing.T) {
	if IsConfigError(errors.New("boom")) || IsConfigError(nil) {
		t.Error("plain errors are not config errors")
	}
	if !IsConfigError(errors.Join(errors.New("x"), &FieldError{Path: "a", Msg: "b"})) {
		t.Error("joined FieldError not found")
	}
}

func TestLoadUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	wantErr(t, err, dir+": not a regular file (a directory)")

	big := writeFile(t, "big.yaml", "# "+strings.Repeat("x", maxFileSize)+"\n")
	_, err = Load(big)
	wantErr(t, err, big+": file is larger than 1048576 bytes")
}

func TestMetricsListenAddress(t *testing.T) {
	for in, want := range map[string]string{"": "", ":9109": "127.0.0.1:9109", "0.0.0.0:9109": "0.0.0.0:9109", "[::1]:9109": "[::1]:9109"} {
		if got := (Metrics{Listen: in}).ListenAddress(); got != want {
			t.Errorf("ListenAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
