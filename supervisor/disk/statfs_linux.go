package disk

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Probe measures the filesystem holding path.
func Probe(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	u := FromStatfs(&st)
	u.Path = path
	return u, nil
}

// FromStatfs turns statfs's numbers into a Usage (without Path). Block
// counts are in fragment units (f_frsize), or f_bsize where a filesystem
// leaves f_frsize zero.
func FromStatfs(st *unix.Statfs_t) Usage {
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	u := Usage{
		SizeBytes:  st.Blocks * unit,
		FreeBytes:  st.Bavail * unit,
		Inodes:     st.Files,
		FreeInodes: st.Ffree,
	}
	if st.Bfree <= st.Blocks {
		u.UsedBytes = (st.Blocks - st.Bfree) * unit
	}
	if st.Ffree <= st.Files {
		u.UsedInodes = st.Files - st.Ffree
	}
	return u
}
