package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad checks that no file content makes Load panic, and that every
// failure is a config error.
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
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := load(noEnv, []string{path})
		if err != nil && !IsConfigError(err) {
			t.Fatalf("not a config error: %v", err)
		}
	})
}
