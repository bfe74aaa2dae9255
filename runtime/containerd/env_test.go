package containerd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestChildEnv(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/bin")
	env := []string{"HOME=/root", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1", "PATH=/usr/bin:/bin", "LISTEN_FDS=3"}
	got := childEnv(env, nil)
	if !slices.Equal(got, []string{"HOME=/root", "PATH=/usr/bin:/bin"}) {
		t.Fatalf("without extra dirs: %q", got)
	}
	got = childEnv(env, []string{"/cache/bin/a", "/cache/bin/b"})
	if got[len(got)-1] != "PATH=/cache/bin/a:/cache/bin/b:/usr/bin:/bin" {
		t.Fatalf("bundled dirs must come first: %q", got)
	}
	for _, kv := range got {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") || strings.HasPrefix(kv, "LISTEN_") {
			t.Fatalf("service-manager variable leaked to containerd: %q", kv)
		}
	}
}

func TestInDirs(t *testing.T) {
	dir := t.TempDir()
	if inDirs("runc", []string{dir}) {
		t.Fatal("found runc in an empty dir")
	}
	if err := os.WriteFile(filepath.Join(dir, "runc"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if inDirs("runc", []string{dir}) {
		t.Fatal("a non-executable file counted as runc")
	}
	if err := os.Chmod(filepath.Join(dir, "runc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !inDirs("runc", []string{"/nonexistent", dir}) {
		t.Fatal("runc in the second dir not found")
	}
}
