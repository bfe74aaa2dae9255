package disk

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestFromStatfs(t *testing.T) {
	st := unix.Statfs_t{Bsize: 4096, Frsize: 1024, Blocks: 1000, Bfree: 300, Bavail: 250, Files: 100, Ffree: 40}
	got := FromStatfs(&st)
	want := Usage{SizeBytes: 1024000, UsedBytes: 716800, FreeBytes: 256000, Inodes: 100, UsedInodes: 60, FreeInodes: 40}
	if got != want {
		t.Fatalf("FromStatfs = %+v, want %+v", got, want)
	}
	// A filesystem without f_frsize counts in f_bsize.
	st = unix.Statfs_t{Bsize: 4096, Blocks: 10, Bfree: 10, Bavail: 10}
	if got := FromStatfs(&st); got.SizeBytes != 40960 || got.FreeBytes != 40960 || got.UsedBytes != 0 {
		t.Fatalf("without frsize: %+v", got)
	}
}

func TestProbe(t *testing.T) {
	u, err := Probe(t.TempDir())
	if err != nil || u.SizeBytes == 0 || u.FreeBytes > u.SizeBytes {
		t.Fatalf("Probe = %+v, %v", u, err)
	}
	if _, err := Probe("/nonexistent/m3sup"); err == nil {
		t.Fatal("no error for a missing path")
	}
}
