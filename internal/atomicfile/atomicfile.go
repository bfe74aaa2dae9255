package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile replaces path with data, atomically and durably; the file gets
// perm regardless of the umask.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// Write replaces path with what fill writes into the temporary file. When
// fill fails, path is untouched and the temporary file is removed.
func Write(path string, perm fs.FileMode, fill func(f *os.File) error) error {
	tmp, err := write(path, perm, fill)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op after the rename
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDirOf(path)
}

// Create writes data to path like WriteFile, but only when path does not
// exist yet: an existing file is left alone and the error is fs.ErrExist.
func Create(path string, data []byte, perm fs.FileMode) error {
	tmp, err := write(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDirOf(path)
}

// Commit makes tmp, a file the caller has written and closed, the content
// of path: it syncs tmp, sets perm and renames it into place (creating
// path's directory if needed), then syncs the directory. tmp must be on
// path's filesystem.
func Commit(tmp, path string, perm fs.FileMode) error {
	if fi, err := os.Lstat(tmp); err != nil || !fi.Mode().IsRegular() {
		if err == nil {
			err = fmt.Errorf("%s is not a regular file", tmp)
		}
		return fmt.Errorf("commit %s: %w", path, err)
	}
	f, err := os.OpenFile(tmp, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return fmt.Errorf("commit %s: %w", path, err)
	}
	syncErr := f.Sync()
	chmodErr := f.Chmod(perm)
	closeErr := f.Close()
	if err := errors.Join(syncErr, chmodErr, closeErr); err != nil {
		return fmt.Errorf("commit %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("commit %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("commit %s: %w", path, err)
	}
	return syncDirOf(path)
}

// SyncDir fsyncs a directory, making the names created, renamed or removed
// in it durable. Filesystems that cannot sync a directory (EINVAL) are not
// an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func syncDirOf(path string) error { return SyncDir(filepath.Dir(path)) }

// write fills a synced, closed temporary file beside path and returns its
// name; on error nothing is left behind.
func write(path string, perm fs.FileMode, fill func(f *os.File) error) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = errors.Join(f.Chmod(perm), fill(f))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp, nil
}
