package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
)

func TestComponentImages(t *testing.T) {
	cfg := config.Default()
	c := SpecFromConfig(cfg)
	if refs := componentImages(c); len(refs) != 0 || !needsRelease(c) {
		t.Fatalf("binary mode: %v, needsRelease %v", refs, needsRelease(c))
	}
	c.DBNode.Image, c.Coordinator.Image = "quay.io/m3db/m3:v1", "quay.io/m3db/m3:v1"
	if refs := componentImages(c); !slices.Equal(refs, []string{"quay.io/m3db/m3:v1"}) || needsRelease(c) {
		t.Fatalf("image mode: %v, needsRelease %v", refs, needsRelease(c))
	}
}

// TestUnpackedRelease: the binaries of an unpacked release are found at
// its top or one directory down (goreleaser's wrapper); a missing or
// non-executable one is left out, for rendering to refuse.
func TestUnpackedRelease(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "m3_1.5.0_linux_amd64"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeExecutable(t, filepath.Join(dir, "m3_1.5.0_linux_amd64", DBNode))
	if err := os.WriteFile(filepath.Join(dir, Coordinator), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel := unpackedRelease("1.5.0", "sha256:abc", dir)
	if rel.Binaries[DBNode] != filepath.Join(dir, "m3_1.5.0_linux_amd64", DBNode) {
		t.Errorf("m3dbnode: %q", rel.Binaries[DBNode])
	}
	if bin, ok := rel.Binaries[Coordinator]; ok {
		t.Errorf("a non-executable m3coordinator was found: %q", bin)
	}
}

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}
