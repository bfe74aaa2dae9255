package m3

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// m3BinDir is where the lead's CI puts the real M3 v1.5.0 binaries.
func m3BinDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("M3SUP_M3_BIN_DIR")
	if dir == "" {
		t.Skip("M3SUP_M3_BIN_DIR not set: no real M3 binaries to validate against")
	}
	return dir
}

// dumpConfig runs `BIN -d -f FILE`: M3 loads FILE strictly (unknown keys
// are fatal), runs its struct validators, prints the parsed config and
// exits 0; on a bad config it exits non-zero with "error loading config".
func dumpConfig(t *testing.T, bin string, cfg []byte) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(f, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-d", "-f", f).CombinedOutput()
	return string(out), err
}

func TestRealBinariesAcceptRenderedConfigs(t *testing.T) {
	dir := m3BinDir(t)
	db, err := RenderDBNode(testDBNodeParams())
	if err != nil {
		t.Fatal(err)
	}
	coord, err := RenderCoordinator(testCoordinatorParams())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		bin  string
		cfg  []byte
		want []string
	}{
		{"m3dbnode", db, []string{
			"value: node-1", "filePathPrefix: /var/lib/m3db", "cacheDir: /var/lib/m3kv",
			"env: m3sup_test", "- 127.0.0.2:2379", "httpNodeListenAddress: 127.0.0.2:9002",
		}},
		{"m3coordinator", coord, []string{
			"listenAddress: 127.0.0.1:7203", "cacheDir: /var/lib/m3kv", "env: m3sup_test",
			"namespaces: []", "level: warn",
		}},
	} {
		t.Run(c.bin, func(t *testing.T) {
			bin := filepath.Join(dir, c.bin)
			out, err := dumpConfig(t, bin, c.cfg)
			if err != nil {
				t.Fatalf("%s -d rejected the rendered config: %v\n%s", c.bin, err, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("parsed config lacks %q", w)
				}
			}
			// The check has teeth: an unknown key is fatal.
			bad := append([]byte("bogusKeyFromTest: 1\n"), c.cfg...)
			if out, err := dumpConfig(t, bin, bad); err == nil || !strings.Contains(out, "bogusKeyFromTest") {
				t.Errorf("%s accepted an unknown key: %v\n%s", c.bin, err, out)
			}
		})
	}
}
