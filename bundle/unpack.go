package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// ManifestName is the file Unpack writes at the top of every extracted tree:
// each regular file's path, mode, size and sha256. An archive member of that
// name is refused.
const ManifestName = ".m3sup-manifest.json"

// maxManifest bounds the manifest Unpack reads back.
const maxManifest = 64 << 20

type manifest struct {
	Digest Digest         `json:"digest"`
	Files  []manifestFile `json:"files"`
}

type manifestFile struct {
	Path   string `json:"path"` // slash-separated, relative to the tree
	Mode   string `json:"mode"` // octal permission bits, e.g. "0755"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Unpack extracts the cached archive d (tar or tar.gz, told apart by magic
// bytes) into unpacked/<hex> and returns that directory. The archive is
// re-hashed first (ErrCorrupt if it no longer matches). An existing tree is
// checked against its manifest and re-extracted if anything differs.
// Archives with links, device nodes, absolute or ".." paths, or more than
// MaxFiles entries or MaxBytes of content are refused with ErrUnsafeArchive,
// and nothing of them is kept.
func (c *Cache) Unpack(ctx context.Context, d Digest) (string, error) {
	if d.Hex() == "" {
		return "", fmt.Errorf("unpack %q: invalid digest", string(d))
	}
	v, err := c.flights.do(ctx, "unpack:"+d.Hex(), func() (any, error) {
		return c.unpackOnce(ctx, d)
	})
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", d, err)
	}
	return v.(string), nil
}

func (c *Cache) unpackOnce(ctx context.Context, d Digest) (string, error) {
	got, _, ok, err := c.verifyBlob(d)
	switch {
	case isNotExist(err):
		return "", fmt.Errorf("archive is not in the cache: %w", fs.ErrNotExist)
	case err != nil:
		return "", fmt.Errorf("verify archive: %w", err)
	case !ok:
		moved, qerr := c.quarantine(c.Path(d))
		if qerr != nil {
			return "", fmt.Errorf("cached archive is corrupted (now %s) and could not be moved aside: %w: %w", got, qerr, ErrCorrupt)
		}
		c.log.Warn("cached archive is corrupted; moved it aside", zap.String("digest", string(d)),
			zap.String("got", string(got)), zap.String("moved_to", moved))
		return "", fmt.Errorf("cached archive is corrupted (now %s, moved to %s); fetch it again: %w", got, moved, ErrCorrupt)
	}

	final := filepath.Join(c.dir, dirUnpacked, d.Hex())
	if _, err := os.Lstat(final); err == nil {
		verr := verifyTree(final, d)
		if verr == nil {
			return final, nil
		}
		c.log.Warn("extracted tree differs from its manifest; extracting again",
			zap.String("digest", string(d)), zap.String("dir", final), zap.Error(verr))
		if err := c.removeAside(final); err != nil {
			return "", fmt.Errorf("remove damaged tree: %w", err)
		}
	}

	tmp, err := os.MkdirTemp(filepath.Join(c.dir, dirUnpacked), d.Hex()+".tmp-")
	if err != nil {
		return "", err
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(tmp)
		}
	}()

	m, err := c.extract(ctx, c.Path(d), tmp)
	if err != nil {
		return "", err
	}
	m.Digest = d
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ManifestName), append(data, '\n'), 0o444); err != nil {
		return "", fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Someone else (another process) may have committed it first.
		if verifyTree(final, d) == nil {
			return final, nil
		}
		return "", fmt.Errorf("commit tree: %w", err)
	}
	committed = true
	syncDir(filepath.Dir(final))
	c.log.Info("unpacked archive", zap.String("digest", string(d)), zap.String("dir", final), zap.Int("files", len(m.Files)))
	return final, nil
}

// removeAside renames dir out of the way, then deletes it, so that a
// half-deleted tree never sits under its final name.
func (c *Cache) removeAside(dir string) error {
	old := dir + ".old-" + randomSuffix()
	if err := os.Rename(dir, old); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// refuse builds an ErrUnsafeArchive error.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsafeArchive)
}

// extract writes the archive at archivePath into dir, which must be empty,
// through an os.Root so that no write can leave dir.
func (c *Cache) extract(ctx context.Context, archivePath, dir string) (manifest, error) {
	f, err := os.Open(archivePath)
	if err != nil {
		return manifest{}, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)

	var r io.Reader = br
	var gz *gzip.Reader
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err = gzip.NewReader(br)
		if err != nil {
			return manifest{}, fmt.Errorf("read gzip header: %w: %w", err, ErrUnsafeArchive)
		}
		defer gz.Close()
		r = gz
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return manifest{}, err
	}
	defer root.Close()

	maxFiles, maxBytes := c.opts.MaxFiles, c.opts.MaxBytes
	var (
		entries int
		written int64
		files   = map[string]manifestFile{}
	)
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return manifest{}, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return manifest{}, readError(err, entries)
		}
		entries++
		if entries > maxFiles {
			return manifest{}, refuse("archive has more than %d entries (at member %q)", maxFiles, hdr.Name)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // metadata only
		}
		name, err := memberPath(hdr.Name)
		if err != nil {
			return manifest{}, refuse("member %q: %v", hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "." {
				continue
			}
			perm := fs.FileMode(hdr.Mode).Perm()&0o755 | 0o700
			if err := root.MkdirAll(name, 0o755); err != nil {
				return manifest{}, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
			if err := root.Chmod(name, perm); err != nil {
				return manifest{}, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			if name == "." {
				return manifest{}, refuse("member %q: regular file without a name", hdr.Name)
			}
			if name == ManifestName {
				return manifest{}, refuse("member %q: name is reserved for the manifest", hdr.Name)
			}
			remaining := maxBytes - written
			if hdr.Size > remaining {
				return manifest{}, refuse("member %q declares %d bytes; the archive may hold at most %d in all", hdr.Name, hdr.Size, maxBytes)
			}
			perm := fs.FileMode(hdr.Mode).Perm()&0o755 | 0o400
			mf, n, err := writeMember(root, name, perm, io.LimitReader(tr, remaining+1))
			written += n
			if written > maxBytes {
				return manifest{}, refuse("archive holds more than %d bytes (at member %q)", maxBytes, hdr.Name)
			}
			if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return manifest{}, fmt.Errorf("archive is truncated in member %q: %w: %w", hdr.Name, err, ErrUnsafeArchive)
				}
				return manifest{}, fmt.Errorf("member %q: %w", hdr.Name, err)
			}
			files[name] = mf
		case tar.TypeSymlink:
			return manifest{}, refuse("member %q is a symlink to %q: links are not allowed", hdr.Name, hdr.Linkname)
		case tar.TypeLink:
			return manifest{}, refuse("member %q is a hard link to %q: links are not allowed", hdr.Name, hdr.Linkname)
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return manifest{}, refuse("member %q is a device or fifo node: not allowed", hdr.Name)
		default:
			return manifest{}, refuse("member %q has unsupported type %q", hdr.Name, hdr.Typeflag)
		}
	}
	if entries == 0 {
		return manifest{}, refuse("archive is empty or not a tar archive")
	}
	if gz != nil {
		// Read the gzip stream to its end: that checks its CRC and length,
		// so a damaged tail is not mistaken for a good archive.
		n, err := io.Copy(io.Discard, io.LimitReader(gz, maxBytes-written+1))
		if err != nil {
			return manifest{}, readError(err, entries)
		}
		if written+n > maxBytes {
			return manifest{}, refuse("archive holds more than %d bytes (after the tar end)", maxBytes)
		}
	}

	m := manifest{Files: make([]manifestFile, 0, len(files))}
	for _, mf := range files {
		m.Files = append(m.Files, mf)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	return m, nil
}

func readError(err error, entries int) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("archive is truncated after %d entries: %w: %w", entries, err, ErrUnsafeArchive)
	}
	return fmt.Errorf("read archive after %d entries: %w: %w", entries, err, ErrUnsafeArchive)
}

// writeMember writes one regular file below root and returns its manifest
// entry and the bytes written.
func writeMember(root *os.Root, name string, perm fs.FileMode, r io.Reader) (manifestFile, int64, error) {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return manifestFile{}, 0, err
		}
	}
	// A later member of the same name replaces an earlier one, as tar does.
	if err := root.Remove(name); err != nil && !isNotExist(err) {
		return manifestFile{}, 0, err
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
	if err != nil {
		return manifestFile{}, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return manifestFile{}, n, err
	}
	return manifestFile{Path: name, Mode: fmt.Sprintf("%04o", perm), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, n, nil
}

// memberPath turns an archive member name into a clean relative path, or
// says why it cannot be one.
func memberPath(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", errors.New("name contains NUL")
	}
	if strings.HasPrefix(name, "/") || filepath.IsAbs(name) {
		return "", errors.New("absolute path")
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", errors.New(`path traversal ("..")`)
		}
	}
	clean := path.Clean(name)
	if clean != "." && !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", errors.New("path is not local")
	}
	return clean, nil
}

// verifyTree checks an extracted tree against its manifest: every listed
// file present, regular, with its size, mode and sha256, and nothing else
// but directories.
func verifyTree(dir string, d Digest) error {
	m, err := readManifest(filepath.Join(dir, ManifestName))
	if err != nil {
		return err
	}
	if m.Digest != d {
		return fmt.Errorf("manifest is for %s", m.Digest)
	}
	want := make(map[string]manifestFile, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = f
	}
	seen := 0
	err = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." || rel == ManifestName {
			return nil
		}
		if de.IsDir() {
			return nil
		}
		if !de.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected %s", rel, de.Type())
		}
		mf, ok := want[rel]
		if !ok {
			return fmt.Errorf("%s: not in the manifest", rel)
		}
		seen++
		return checkFile(p, mf)
	})
	if err != nil {
		return err
	}
	if seen != len(want) {
		return fmt.Errorf("%d of %d files are missing", len(want)-seen, len(want))
	}
	return nil
}

func checkFile(p string, mf manifestFile) error {
	f, err := os.OpenFile(p, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", mf.Path)
	}
	if fi.Size() != mf.Size {
		return fmt.Errorf("%s: size %d, want %d", mf.Path, fi.Size(), mf.Size)
	}
	if mode := fmt.Sprintf("%04o", fi.Mode().Perm()); mode != mf.Mode {
		return fmt.Errorf("%s: mode %s, want %s", mf.Path, mode, mf.Mode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != mf.SHA256 {
		return fmt.Errorf("%s: sha256 %s, want %s", mf.Path, sum, mf.SHA256)
	}
	return nil
}

func readManifest(p string) (manifest, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	if len(data) > maxManifest {
		return manifest{}, errors.New("read manifest: too large")
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	return m, nil
}
