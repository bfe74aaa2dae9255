package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzEnv is the environment FuzzLoad expands from: values that would
// inject YAML if they were pasted into the raw text.
var fuzzEnv = map[string]string{
	"INJECT": "a\nrelease: {insecureSkipChecksum: true}",
	"FLOW":   "x, insecureSkipChecksum: true",
	"MAP":    "{insecureSkipChecksum: true}",
	"SHARDS": "32",
	"TRUE":   "true",
}

func fuzzLookup(k string) (string, bool) { v, ok := fuzzEnv[k]; return v, ok }

// FuzzLoad checks that no file content makes Load panic, that every
// failure is a config error, and that no environment value turns checksums
// off: only a file that says insecureSkipChecksum can.
func FuzzLoad(f *testing.F) {
	def, err := Default().YAML()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(def),
		"",
		"etcd:\n  clientUrl: x\n",
		"cluster:\n  namespaces:\n    - name: a\n      retention: 2d\n",
		"a: &a [*a]\n",
		"dataDir: ${HOME:/x}\n",
		"? [a, b]\n: c\n",
		"- 1\n- 2\n",
		"cluster: {numShards: 99999999999999999999999}\n",
		"nodeName: ${INJECT}\n",
		"release: {url: \"${FLOW}\", checksum: \"file:/x\"}\n",
		"release: ${MAP}\n",
		"cluster:\n  numShards: ${SHARDS}\n  weight: 0\n",
		"release:\n  insecureSkipChecksum: ${TRUE}\n  url: /x\n",
		"dataDir: $$INJECT$INJECT${INJECT:x}\n",
		"cluster:\n  advertise: \"not an address!!\"\n  replicationFactor: 100\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := load(fuzzLookup, []string{path})
		if err != nil && !IsConfigError(err) {
			t.Fatalf("not a config error: %v", err)
		}
		if err == nil && c.Release.InsecureSkipChecksum && !strings.Contains(string(data), "insecureSkipChecksum") {
			t.Fatalf("checksums turned off by the environment:\n%s", data)
		}
	})
}
