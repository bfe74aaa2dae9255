package bundle

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/internal/regularfile"
)

// Cache subdirectories for imported bundle members (created on first use).
const (
	dirImages = "images"
	dirBin    = "bin"
)

// ImportedFile is a bundle member placed in the cache.
type ImportedFile struct {
	Member Member `json:"member"`
	// Path is the file in the cache; treat it as read-only.
	Path string `json:"path"`
	// New is false when the cache already held it and nothing was written.
	New bool `json:"new"`
}

// Source returns a source that Cache.Fetch resolves from the cache with no
// network: the URL the release was bundled from and its sha256.
func (f ImportedFile) Source() Source {
	return Source{URL: f.Member.URL, Checksum: string(f.Member.Digest())}
}

// ImportResult says what ImportBundle placed where.
type ImportResult struct {
	// Path is the bundle file that was imported.
	Path   string   `json:"path"`
	Bundle Verified `json:"bundle"`
	// Releases are in sha256/<hex>: Cache.Fetch of any source with their
	// sha256 checksum (ImportedFile.Source) finds them without network.
	Releases []ImportedFile `json:"releases"`
	// Images are in images/<hex>.tar, ready for a containerd import.
	Images []ImportedFile `json:"images,omitempty"`
	// Binaries are in bin/<hex>/<name>, executable.
	Binaries []ImportedFile `json:"binaries,omitempty"`
	// Written counts the files this import added to the cache (refs
	// included); 0 when everything was there already.
	Written int `json:"written"`
}

// Release returns the imported release of the given M3 version (any
// release when version is empty).
func (r ImportResult) Release(version string) (ImportedFile, bool) {
	for _, f := range r.Releases {
		if version == "" || f.Member.Version == version || strings.TrimPrefix(f.Member.Version, "v") == strings.TrimPrefix(version, "v") {
			return f, true
		}
	}
	return ImportedFile{}, false
}

// memberDest is where an imported member lives in the cache.
func (c *Cache) memberDest(mb Member) string {
	switch mb.Kind {
	case KindRelease:
		return c.Path(mb.Digest())
	case KindImage:
		return filepath.Join(c.dir, dirImages, mb.SHA256+".tar")
	default:
		return filepath.Join(c.dir, dirBin, mb.SHA256, mb.Name())
	}
}

// ImportBundle verifies the bundle at path (see Verify) and places its
// members in the cache: releases in sha256/<hex>, image archives in
// images/<hex>.tar, binaries in bin/<hex>/<name>. The bundle is read once:
// members stream into tmp/ while they are checked, and only once the whole
// bundle has verified are they committed (synced, read-only, atomically
// renamed). On any failure nothing is committed and tmp/ is cleaned.
// Members already in the cache with the right content are not written
// again, so a second import writes nothing.
//
// A release the bundle was made from with a "file:<checksums URL>"
// checksum also gets that resolution remembered (a ref), so that Fetch of
// exactly that source and checksum needs no network — but only when the
// bundle's signature was verified against opts.TrustedKeys: a ref is a
// claim about what a remote checksums file says, and an unsigned bundle's
// claims are not taken on trust. Sources with a sha256 checksum need no
// ref.
func (c *Cache) ImportBundle(ctx context.Context, path string, opts VerifyOptions) (ImportResult, error) {
	res, err := c.importBundle(ctx, path, opts)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import bundle %s: %w", path, err)
	}
	return res, nil
}

func (c *Cache) importBundle(ctx context.Context, path string, opts VerifyOptions) (ImportResult, error) {
	f, err := regularfile.OpenNoFollow(path)
	if err != nil {
		return ImportResult{}, err
	}
	defer f.Close()

	staged := map[string]string{} // member path → temporary file
	defer func() {
		for _, tmp := range staged {
			_ = os.Remove(tmp) // gone already once committed
		}
	}()
	sink := func(mb Member) (io.WriteCloser, error) {
		if present(c.memberDest(mb), mb.Digest()) {
			return nil, nil
		}
		t, err := os.CreateTemp(filepath.Join(c.dir, dirTmp), "import-*")
		if err != nil {
			return nil, fmt.Errorf("create temporary file: %w", err)
		}
		staged[mb.Path] = t.Name()
		return t, nil
	}
	v, err := verifyStream(ctx, f, opts, sink, false)
	if err != nil {
		return ImportResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return ImportResult{}, err
	}

	res := ImportResult{Path: path, Bundle: v}
	for _, mb := range v.Manifest.Members {
		dst := c.memberDest(mb)
		tmp, isNew := staged[mb.Path]
		if isNew {
			mode := fs.FileMode(0o444)
			if mb.Kind == KindBinary {
				mode = 0o555
			}
			if err := commitAt(tmp, dst, mode); err != nil {
				return ImportResult{}, fmt.Errorf("store member %q: %w", mb.Path, err)
			}
			delete(staged, mb.Path)
			res.Written++
		}
		imp := ImportedFile{Member: mb, Path: dst, New: isNew}
		switch mb.Kind {
		case KindRelease:
			res.Releases = append(res.Releases, imp)
		case KindImage:
			res.Images = append(res.Images, imp)
		default:
			res.Binaries = append(res.Binaries, imp)
		}
	}
	if v.SignedBy != "" {
		for _, rel := range res.Releases {
			wrote, err := c.rememberChecksum(rel.Member)
			if err != nil {
				// The release is stored; only the shortcut is lost.
				c.log.Warn("remember bundled release checksum", zap.String("url", rel.Member.URL), zap.Error(err))
			}
			if wrote {
				res.Written++
			}
		}
	}
	return res, nil
}

// rememberChecksum writes the ref that Fetch would have written after
// resolving the release's "file:" checksum, unless it is there already.
func (c *Cache) rememberChecksum(mb Member) (bool, error) {
	sumsURL, ok := strings.CutPrefix(mb.Checksum, "file:")
	if !ok {
		return false, nil
	}
	s, err := parseLocation(mb.URL)
	if err != nil {
		return false, err
	}
	sums, err := parseLocation(sumsURL)
	if err != nil {
		return false, err
	}
	name := refName(s, sums)
	if d, ok := c.readRef(name); ok && d == mb.Digest() {
		return false, nil
	}
	if err := c.writeFileAtomic(filepath.Join(c.dir, dirRefs, name), []byte(string(mb.Digest())+"\n")); err != nil {
		return false, err
	}
	return true, nil
}

// present reports whether path is a regular file with digest d.
func present(path string, d Digest) bool {
	got, _, err := hashFile(path)
	return err == nil && got == d
}

// commitAt makes the verified temporary file tmp the file dst: synced,
// with mode, and atomically renamed (replacing a damaged dst).
func commitAt(tmp, dst string, mode fs.FileMode) error {
	return atomicfile.Commit(tmp, dst, mode)
}
