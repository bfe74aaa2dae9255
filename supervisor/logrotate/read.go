package logrotate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
)

// fileID identifies a file across renames: its device and inode. The zero
// fileID is "no file".
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return fileID{}
}

// statID is the identity of the file at path, zero when there is none.
func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	return idOf(fi)
}

// Position marks a point in a live file's output: its size then and which
// file was NAME.1 then. A rotation since makes a new NAME.1.
type Position struct {
	Size    int64
	rotated fileID
}

// Mark returns the position at the end of the live file path now.
func Mark(path string) Position {
	if path == "" {
		return Position{}
	}
	pos := Position{rotated: statID(path + ".1")}
	if fi, err := os.Stat(path); err == nil {
		pos.Size = fi.Size()
	}
	return pos
}

// ReadSince returns what was written to the live file path since pos, at
// most its last max bytes. After one rotation that is NAME.1 from pos on,
// then the live file. After several, what lies beyond NAME.1 is not read, and
// NAME.1 is read from pos's offset as if it were the first: it returns the
// end of the output, which is what a crash reason needs.
func ReadSince(path string, pos Position, max int64) []byte {
	if path == "" {
		return nil
	}
	var out []byte
	// A missing NAME.1 is a rotation in progress that has not truncated the
	// live file yet (see Follower.Poll), not a rotation.
	if id := statID(path + ".1"); id != pos.rotated && id != (fileID{}) {
		out = readRange(path+".1", pos.Size, max)
		pos.Size = 0
	}
	out = append(out, readRange(path, pos.Size, max)...)
	if int64(len(out)) > max {
		out = out[int64(len(out))-max:]
	}
	return out
}

// readRange returns path's bytes from offset on (all of them when the file
// is shorter than offset: it was truncated), at most the last max.
func readRange(path string, offset, max int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	size := fi.Size()
	if offset > size {
		offset = 0
	}
	offset = maxInt64(offset, size-max)
	b := make([]byte, size-offset)
	n, _ := f.ReadAt(b, offset)
	return b[:n]
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// TailStart returns the offset where the last n lines of r's first size
// bytes begin, and how many lines that is (fewer than n when there are
// fewer). A last line without its newline counts.
func TailStart(r io.ReaderAt, size int64, n int) (int64, int, error) {
	if n <= 0 || size == 0 {
		return size, 0, nil
	}
	const block = 64 << 10
	buf := make([]byte, block)
	seen := 0
	for end := size; end > 0; {
		start := maxInt64(0, end-block)
		b := buf[:end-start]
		if _, err := r.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != '\n' || start+int64(i) == size-1 {
				continue
			}
			if seen++; seen == n {
				return start + int64(i) + 1, n, nil
			}
		}
		end = start
	}
	return 0, seen + 1, nil
}

// Tail returns the last n lines of the live file path, taking the older
// ones from NAME.1 when the live file, just rotated, holds fewer.
func Tail(path string, n int) []string {
	if path == "" {
		return nil
	}
	var lines []string
	for _, p := range []string{path, path + ".1"} {
		if len(lines) >= n {
			break
		}
		b := readRange(p, 0, 1<<20)
		start, _, _ := TailStart(bytes.NewReader(b), int64(len(b)), n-len(lines))
		var got []string
		sc := bufio.NewScanner(bytes.NewReader(b[start:]))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			got = append(got, sc.Text())
		}
		lines = append(got, lines...)
	}
	return lines
}

// Follower reads what is appended to a live file, across rotations and
// restarts that recreate it. Poll is called by one goroutine, repeatedly.
type Follower struct {
	path    string
	f       *os.File
	id      fileID // the open live file
	off     int64  // how much of it was read
	rotated fileID // NAME.1 as last seen
	shrunk  bool   // the last Poll saw the live file shorter than off
}

// NewFollower follows path from its start. Call it before reading what
// comes before the offset to follow from (SetOffset), so that a rotation or
// a new file in between is seen.
func NewFollower(path string) *Follower {
	return &Follower{path: path, rotated: statID(path + ".1"), id: statID(path)}
}

// SetOffset says how much of the live file was already read: Poll
// continues from there.
func (fl *Follower) SetOffset(off int64) { fl.off = off }

// Close closes the open file.
func (fl *Follower) Close() error {
	if fl.f == nil {
		return nil
	}
	err := fl.f.Close()
	fl.f = nil
	return err
}

// Poll writes to w what was appended since the last Poll. When NAME.1 is a
// new file (not merely gone: a rotation half done), the live file was
// rotated: the rest of the old content is read from NAME.1, and the live
// file again from its start. A live file found
// shorter than what was read, with no new NAME.1, is given one more Poll for
// NAME.1 to appear (Rotate truncates first), then read from its start
// (truncated by someone else). A live file replaced by another is read from
// its start.
func (fl *Follower) Poll(w io.Writer) error {
	// NAME.1 gone: a rotation has shifted it and not yet truncated the live
	// file (or old files were deleted); the live file reads on as before.
	if rot := statID(fl.path + ".1"); rot != fl.rotated && rot != (fileID{}) {
		fl.rotated = rot
		if fl.id != (fileID{}) {
			if err := copyFrom(w, fl.path+".1", fl.off); err != nil {
				return err
			}
		}
		fl.off, fl.shrunk = 0, false
	}
	fi, err := os.Stat(fl.path)
	if err != nil {
		return nil // not there (yet): the next Poll looks again
	}
	if id := idOf(fi); fl.f == nil || id != fl.id {
		if fl.f != nil || (fl.id != (fileID{}) && id != fl.id) {
			fl.off = 0 // a new file
		}
		fl.Close()
		if fl.f, err = os.Open(fl.path); err != nil {
			fl.f = nil
			return nil
		}
		fl.id = id
	}
	if fi.Size() < fl.off {
		if !fl.shrunk {
			fl.shrunk = true
			return nil
		}
		fl.off = 0
	}
	fl.shrunk = false
	n, err := io.Copy(w, io.NewSectionReader(fl.f, fl.off, 1<<62))
	fl.off += n
	return err
}

// copyFrom writes path's bytes from offset on.
func copyFrom(w io.Writer, path string, offset int64) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // rotated again already: that part is gone
	}
	defer f.Close()
	_, err = io.Copy(w, io.NewSectionReader(f, offset, 1<<62))
	return err
}
