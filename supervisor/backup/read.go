package backup

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxSmallMember bounds a JSON member read into memory.
const maxSmallMember = 64 << 20

// Inspect reads the backup at path and verifies it: the manifest comes
// first, every member it lists is present once with its size and sha256,
// and nothing else is. It returns the manifest.
func Inspect(path string) (Info, error) {
	return read(path, nil)
}

// ReadMember returns one JSON member of a verified backup (MemberDesired,
// MemberPlacement, …).
func ReadMember(path, name string) ([]byte, error) {
	var out []byte
	_, err := read(path, map[string]io.Writer{name: writerFunc(func(p []byte) (int, error) {
		if len(out)+len(p) > maxSmallMember {
			return 0, fmt.Errorf("%s: larger than %d bytes", name, maxSmallMember)
		}
		out = append(out, p...)
		return len(p), nil
	})})
	return out, err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// read verifies the backup at path in one pass and copies the members
// named in sinks to their writers. What a sink received is only
// trustworthy when read returns no error.
func read(path string, sinks map[string]io.Writer) (Info, error) {
	var info Info
	f, err := os.Open(path)
	if err != nil {
		return info, fmt.Errorf("open backup: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		info.Size = fi.Size()
	}
	corrupt := func(format string, args ...any) (Info, error) {
		return info, fmt.Errorf("%s: %s: %w", path, fmt.Sprintf(format, args...), ErrCorrupt)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return corrupt("not a gzip file: %v", err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return corrupt("not a tar archive: %v", err)
	}
	if hdr.Name != MemberInfo {
		return corrupt("first member is %q, want %s", hdr.Name, MemberInfo)
	}
	b, err := io.ReadAll(io.LimitReader(tr, maxSmallMember))
	if err != nil {
		return corrupt("read %s: %v", MemberInfo, err)
	}
	size := info.Size
	if err := json.Unmarshal(b, &info); err != nil {
		return corrupt("decode %s: %v", MemberInfo, err)
	}
	info.Size = size
	if info.Format < 1 || info.Format > FormatVersion {
		return info, fmt.Errorf("%s: backup format %d; this m3sup reads format %d or older", path, info.Format, FormatVersion)
	}
	want := map[string]Member{}
	for _, m := range info.Members {
		want[m.Name] = m
	}
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return corrupt("read archive: %v", err)
		}
		m, ok := want[hdr.Name]
		if !ok {
			return corrupt("member %q is not in the manifest", hdr.Name)
		}
		if seen[hdr.Name] {
			return corrupt("member %q appears twice", hdr.Name)
		}
		seen[hdr.Name] = true
		if hdr.Typeflag != tar.TypeReg || hdr.Size != m.Size {
			return corrupt("member %s: %d bytes, the manifest says %d", hdr.Name, hdr.Size, m.Size)
		}
		h := sha256.New()
		dst := io.Writer(h)
		if s := sinks[hdr.Name]; s != nil {
			dst = io.MultiWriter(h, s)
		}
		n, err := io.Copy(dst, tr)
		if err != nil {
			return corrupt("read %s: %v", hdr.Name, err)
		}
		if n != m.Size {
			return corrupt("member %s: %d bytes, the manifest says %d", hdr.Name, n, m.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
			return corrupt("member %s: sha256 %s, the manifest says %s", hdr.Name, got, m.SHA256)
		}
	}
	for _, m := range info.Members {
		if !seen[m.Name] {
			return corrupt("member %s is missing", m.Name)
		}
	}
	if !seen[MemberSnapshot] {
		return corrupt("no %s", MemberSnapshot)
	}
	return info, nil
}
