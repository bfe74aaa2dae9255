package regularfile

import (
	"io/fs"
	"os"
)

// NotRegularError reports that a file is not a regular file. Mode is its
// type as Stat (or, for a refused symlink, Lstat) saw it.
type NotRegularError struct {
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return "not a regular file (" + Describe(e.Mode) + ")"
}

// Open opens path for reading if it is a regular file, following a final
// symlink. A FIFO, socket, device or directory is refused at once.
func Open(path string) (*os.File, error) {
	return open(path, false)
}

// OpenNoFollow is Open, but a final symlink is refused rather than followed.
func OpenNoFollow(path string) (*os.File, error) {
	return open(path, true)
}

func open(path string, noFollow bool) (*os.File, error) {
	flag := os.O_RDONLY | oNonBlock
	if noFollow {
		if oNoFollow == 0 {
			// No O_NOFOLLOW on this platform: check the path first.
			if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, notRegular(path, fi.Mode())
			}
		}
		flag |= oNoFollow
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		if noFollow {
			// O_NOFOLLOW fails with an errno that varies by system (ELOOP
			// on Linux); say plainly that the path is a symlink.
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, notRegular(path, fi.Mode())
			}
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(path, fi.Mode())
	}
	return f, nil
}

func notRegular(path string, m fs.FileMode) error {
	return &fs.PathError{Op: "open", Path: path, Err: &NotRegularError{Mode: m}}
}

// Describe names a file type for an error message: "a FIFO", "a socket",
// "a device", "a directory" or "a symlink"; any other type is spelled as
// fs.FileMode.Type prints it.
func Describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return m.Type().String()
}
