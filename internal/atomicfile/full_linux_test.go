package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWriteOnFullFilesystem: on a real filesystem with no room left, a
// write fails with ENOSPC, the old content stays whole and no temporary
// file is left; once there is room the same write succeeds. It mounts a
// small tmpfs, so it needs root.
func TestWriteOnFullFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "state.json")
	old := bytes.Repeat([]byte("o"), 64<<10)
	if err := WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	err = WriteFile(path, bytes.Repeat([]byte("n"), 64<<10), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full filesystem: %v, want ENOSPC", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Fatalf("old content damaged: %d bytes", len(b))
	}
	if got := entries(t, dir); len(got) != 2 {
		t.Fatalf("directory holds %v; want state.json and filler only", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatalf("write once there is room: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("content %q, want new", b)
	}
}
