package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadRefusesNonRegularFiles: a FIFO given as a config file fails at
// once, naming the file; it does not wait for a writer.
func TestLoadRefusesNonRegularFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "m3sup.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{fifo, fifo + ": not a regular file (a FIFO)"},
		{"/dev/null", "/dev/null: not a regular file (a device)"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(tt.path); done <- err }()
		select {
		case err := <-done:
			wantErr(t, err, tt.want)
		case <-time.After(5 * time.Second):
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close() // let the blocked reader go
			}
			t.Fatalf("Load(%s) still blocked after 5 s", tt.path)
		}
	}
}

// TestLoadEnvCannotInjectYAML: environment values are expanded inside one
// value after parsing, so they cannot add keys, turn checksums off or
// change a value's structure; a value with a line break is refused, naming
// the variable and the field.
func TestLoadEnvCannotInjectYAML(t *testing.T) {
	env := map[string]string{
		"NEWLINE":   "/srv/m3sup\nrelease: {insecureSkipChecksum: true}",
		"CR":        "/srv/m3sup\rrelease: {insecureSkipChecksum: true}",
		"FLOW":      "x, insecureSkipChecksum: true",
		"MAPPING":   "{insecureSkipChecksum: true}",
		"LIST":      "[a, b]",
		"COMMENT":   "/srv/m3sup # trailing",
		"NUMBER":    "128",
		"BOOL":      "true",
		"ANCHOR":    "*a",
		"EMPTY":     "",
		"DOLLARS":   "$HOME",
		"SHARDS":    "32",
		"LOG_LEVEL": "debug",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	load1 := func(t *testing.T, content string) (Config, error) {
		t.Helper()
		return load(lookup, []string{writeFile(t, "m3sup.yaml", content)})
	}

	for _, tt := range []struct {
		name, content string
		want          []string
	}{
		{"newline", "dataDir: ${NEWLINE}\n", []string{"dataDir: environment variable NEWLINE holds a line break"}},
		{"carriage return", "dataDir: ${CR:/x}\n", []string{"dataDir: environment variable CR holds a line break"}},
		{"newline in a bare $VAR", "dataDir: $NEWLINE\n", []string{"dataDir: environment variable NEWLINE holds a line break"}},
		{"flow mapping", "release: {url: \"${FLOW}\", checksum: \"sha256:" + strings.Repeat("a", 64) + "\"}\n",
			[]string{`release.url: "x, insecureSkipChecksum: true" must be an http://`}},
		{"mapping into a struct", "release: ${MAPPING}\n", []string{`release: cannot use "{insecureSkipChecksum: true}" as a mapping`}},
		{"list into a string", "nodeName: ${LIST}\n", []string{`nodeName: "[a, b]" must be 1-253 characters`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load1(t, tt.content)
			wantErr(t, err, tt.want...)
			if c.Release.InsecureSkipChecksum {
				t.Error("the environment turned checksums off")
			}
		})
	}

	// What expansion is for still works, typed as YAML would type it.
	c, err := load1(t, "dataDir: ${COMMENT}\ncluster:\n  numShards: ${SHARDS}\n  replicationFactor: ${NOPE:1}\nlog:\n  level: $LOG_LEVEL\ndbnode:\n  logLevel: ${EMPTY:\"\"}\n  noFile: ${NUMBER}\nbackup:\n  keep: 0$$\n")
	if err == nil {
		t.Fatal("backup.keep: \"0$\" accepted as an integer")
	}
	c, err = load1(t, "dataDir: ${COMMENT}\ncluster:\n  numShards: ${SHARDS}\n  replicationFactor: ${NOPE:1}\nlog:\n  level: $LOG_LEVEL\ndbnode:\n  logLevel: ${EMPTY:\"\"}\n  noFile: ${NUMBER}\nnodeName: a$${NOT}b\n")
	if err == nil {
		t.Fatal("nodeName with ${ accepted")
	}
	c, err = load1(t, "dataDir: ${COMMENT}\ncluster:\n  numShards: ${SHARDS}\n  replicationFactor: ${NOPE:1}\nlog:\n  level: $LOG_LEVEL\ndbnode:\n  logLevel: ${EMPTY:\"\"}\n  noFile: ${NUMBER}\nrelease:\n  insecureSkipChecksum: ${BOOL}\n  checksum: \"sha256:$${X}\"\n  url: https://example.com/${DOLLARS}/m3.tar.gz\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/m3sup # trailing" || c.Cluster.NumShards != 32 || c.Cluster.ReplicationFactor != 1 ||
		c.Log.Level != "debug" || c.DBNode.LogLevel != "info" || c.DBNode.NoFile != 128 || !c.Release.InsecureSkipChecksum {
		t.Errorf("expanded config = dataDir %q shards %d rf %d log %q dbnode log %q noFile %d insecure %v",
			c.DataDir, c.Cluster.NumShards, c.Cluster.ReplicationFactor, c.Log.Level, c.DBNode.LogLevel, c.DBNode.NoFile, c.Release.InsecureSkipChecksum)
	}
	// A variable's value is not expanded again, and $$ is a literal $.
	if c.Release.Checksum != "sha256:${X}" || c.Release.URL != "https://example.com/$HOME/m3.tar.gz" {
		t.Errorf("checksum %q url %q", c.Release.Checksum, c.Release.URL)
	}
	// Not even through an alias that shares the mapping it is in.
	c, err = load1(t, "registries:\n  a.example.com: &r\n    username: ${DOLLARS}\n    password: x\n  b.example.com: *r\n")
	if err != nil || c.Registries["a.example.com"].Username != "$HOME" || c.Registries["b.example.com"].Username != "$HOME" {
		t.Errorf("registries %+v, %v", c.Registries, err)
	}
}

// TestValidateMatchesRun: what `run` refuses later (the cluster spec's
// limits, the fetcher's schemes, the advertise address) Validate refuses
// up front, naming the field, so `config check` agrees with `run`.
func TestValidateMatchesRun(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content string
		want    string
	}{
		{"replication factor above 7", "cluster:\n  replicationFactor: 100\n", "cluster.replicationFactor: 100 must be between 1 and 7"},
		{"ftp release URL", "release:\n  url: ftp://example.com/m3.tar.gz\n  checksum: sha256:" + strings.Repeat("a", 64) + "\n",
			`release.url: "ftp://example.com/m3.tar.gz" must be an http://, https:// or file:// URL or an absolute path`},
		{"ftp checksums file", "release:\n  url: https://example.com/m3.tar.gz\n  checksum: file:ftp://example.com/sums.txt\n",
			`release.checksum: "file:ftp://example.com/sums.txt" must be file: followed by an http://, https:// or file:// URL or an absolute path`},
		{"forced getter", "release:\n  url: git::https://example.com/m3.tar.gz\n  checksum: sha256:" + strings.Repeat("a", 64) + "\n",
			`release.url: "git::https://example.com/m3.tar.gz" must be an http://, https:// or file:// URL or an absolute path`},
		{"advertise not an address", "cluster:\n  advertise: \"not an address!!\"\n", `cluster.advertise: "not an address!!" must be an IP address or a DNS name`},
		{"advertise with a port", "cluster:\n  advertise: 10.0.0.1:2380\n", `cluster.advertise: "10.0.0.1:2380" must be an IP address or a DNS name`},
		{"weight zero", "cluster:\n  weight: 0\n", "cluster.weight: 0 must be between 1 and 10000"},
		{"num shards", "cluster:\n  numShards: 0\n", "cluster.numShards: 0 must be between 1 and 4096"},
		{"uppercase checksum", "release:\n  url: https://example.com/m3.tar.gz\n  checksum: sha256:" + strings.Repeat("A", 64) + "\n",
			"release.checksum: \"sha256:" + strings.Repeat("A", 64) + "\" must be sha256: followed by 64 lowercase hex digits"},
		{"namespace name the spec refuses", "cluster:\n  namespaces:\n    - {name: _x, retention: 48h, blockSize: 2h}\n",
			`cluster.namespaces[0].name: "_x" must be 1-63 letters`},
		{"negative download limit", "release:\n  maxDownloadBytes: -1\n", "release.maxDownloadBytes: -1 must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "m3sup.yaml", tt.content)
			_, err := load(noEnv, []string{path})
			wantErr(t, err, path+": "+tt.want)
		})
	}
	for _, ok := range []string{
		"cluster:\n  replicationFactor: 7\n  weight: 1\n  advertise: 10.0.0.1\n",
		"cluster:\n  advertise: m3-a.example.com\n",
		"cluster:\n  advertise: \"fd00::1\"\n",
		"release:\n  url: file:///srv/m3.tar.gz\n  checksum: file:/srv/sums.txt\n",
		"release:\n  url: /srv/m3.tar.gz\n  checksum: file:https://example.com/sums.txt\n",
	} {
		if _, err := load(noEnv, []string{writeFile(t, "m3sup.yaml", ok)}); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	// Left out, the weight is 100.
	if c, err := load(noEnv, nil); err != nil || c.Cluster.Weight != 100 || c.Release.MaxDownloadBytes != 2<<30 {
		t.Errorf("default weight %d, download limit %d, %v", c.Cluster.Weight, c.Release.MaxDownloadBytes, err)
	}
}
