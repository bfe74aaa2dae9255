package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
)

// TestRunTightensDataDir: an existing data dir with loose permissions is
// 0700 once Run has started, before anything else is read from it. The
// left.json marker makes Run stop right after that step, so nothing starts.
func TestRunTightensDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Run needs root")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "left.json"), []byte(`{"node":"a"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	err := New(Options{Config: cfg}).Run(context.Background())
	if !errors.Is(err, ErrHostLeft) {
		t.Fatalf("Run = %v; want ErrHostLeft (the marker stops it before anything starts)", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("data dir mode %v after Run, want 0700", got)
	}
}
