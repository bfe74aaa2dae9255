//go:build unix

package regularfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// openWithin runs open(path) and fails the test if it has not returned
// within a bound: a blocked open of a FIFO would otherwise hang the test.
func openWithin(t *testing.T, open func(string) (*os.File, error), path string) (*os.File, error) {
	t.Helper()
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() { f, err := open(path); done <- result{f, err} }()
	select {
	case r := <-done:
		if r.f != nil {
			t.Cleanup(func() { r.f.Close() })
		}
		return r.f, r.err
	case <-time.After(5 * time.Second):
		// Unblock a reader waiting on a FIFO so the goroutine can exit.
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatalf("open(%s) still blocked after 5 s", path)
		return nil, nil
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("content"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	opens := map[string]func(string) (*os.File, error){"Open": Open, "OpenNoFollow": OpenNoFollow}

	for _, tt := range []struct {
		open string
		path string
		// refused names the type in a *NotRegularError; "" means the open
		// succeeds.
		refused string
	}{
		{"Open", file, ""},
		{"OpenNoFollow", file, ""},
		{"Open", fifo, "not a regular file (a FIFO)"},
		{"OpenNoFollow", fifo, "not a regular file (a FIFO)"},
		{"Open", sub, "not a regular file (a directory)"},
		{"OpenNoFollow", sub, "not a regular file (a directory)"},
		{"Open", "/dev/null", "not a regular file (a device)"},
		{"Open", link, ""},
		{"OpenNoFollow", link, "not a regular file (a symlink)"},
	} {
		t.Run(tt.open+"/"+filepath.Base(tt.path), func(t *testing.T) {
			f, err := openWithin(t, opens[tt.open], tt.path)
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("%s(%s): %v", tt.open, tt.path, err)
				}
				b, err := io.ReadAll(f)
				if err != nil || string(b) != "content" {
					t.Errorf("read %q, %v; want %q", b, err, "content")
				}
				return
			}
			if f != nil {
				t.Errorf("%s(%s) returned a file with error %v", tt.open, tt.path, err)
			}
			var nr *NotRegularError
			if !errors.As(err, &nr) {
				t.Fatalf("%s(%s) = %v; want a *NotRegularError", tt.open, tt.path, err)
			}
			if got := nr.Error(); got != tt.refused {
				t.Errorf("NotRegularError = %q; want %q", got, tt.refused)
			}
			if want := "open " + tt.path + ": " + tt.refused; err.Error() != want {
				t.Errorf("error = %q; want %q", err, want)
			}
		})
	}
}

func TestOpenMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for name, open := range map[string]func(string) (*os.File, error){"Open": Open, "OpenNoFollow": OpenNoFollow} {
		if _, err := open(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s(missing) = %v; want fs.ErrNotExist", name, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	for _, tt := range []struct {
		mode fs.FileMode
		want string
	}{
		{fs.ModeNamedPipe | 0o600, "a FIFO"},
		{fs.ModeSocket | 0o755, "a socket"},
		{fs.ModeDevice | fs.ModeCharDevice | 0o666, "a device"},
		{fs.ModeDevice | 0o660, "a device"},
		{fs.ModeDir | 0o755, "a directory"},
		{fs.ModeSymlink | 0o777, "a symlink"},
		{fs.ModeIrregular, fs.ModeIrregular.String()},
	} {
		if got := Describe(tt.mode); got != tt.want {
			t.Errorf("Describe(%v) = %q; want %q", tt.mode, got, tt.want)
		}
	}
}
