package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBrokenConfigs: every broken config exits 2 with the file and the field
// named, and no panic. These need no root and no M3.
func TestBrokenConfigs(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body string
		want       []string
	}{
		{"syntax.yaml", "dataDir: /x\netcd:\n  clientURL: [unclosed\n", []string{"syntax.yaml", "line"}},
		{"unknown.yaml", "etcd:\n  clientUrl: http://127.0.0.1:2379\n", []string{"unknown.yaml", "etcd.clientUrl"}},
		{"type.yaml", "cluster:\n  numShards: many\n", []string{"type.yaml", "cluster.numShards"}},
		{"duration.yaml", "cluster:\n  namespaces:\n    - name: default\n      retention: 2d\n      blockSize: 2h\n", []string{"duration.yaml", "retention", "2d"}},
		{"missing.yaml", "", []string{"missing.yaml"}},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.name)
		if tc.name != "missing.yaml" {
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"run", "--config", path}, {"config", "check", path}} {
			t.Run(tc.name+"/"+args[0], func(t *testing.T) {
				cmd := exec.Command(os.Args[0], args...)
				cmd.Env = append(os.Environ(), "M3SUP_TEST_MAIN=1")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				err := cmd.Run()
				ee, ok := err.(*exec.ExitError)
				if !ok || ee.ExitCode() != 2 {
					t.Fatalf("exit %v, want status 2; output:\n%s", err, out.String())
				}
				s := out.String()
				for _, w := range tc.want {
					if !strings.Contains(s, w) {
						t.Errorf("output does not mention %q:\n%s", w, s)
					}
				}
				if strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
					t.Errorf("output looks like a crash:\n%s", s)
				}
				if n := strings.Count(strings.TrimSpace(s), "\n"); n > 3 {
					t.Errorf("a config error should be a few lines, got %d:\n%s", n+1, s)
				}
			})
		}
	}
}
