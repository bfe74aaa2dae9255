package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	getter "github.com/hashicorp/go-getter/v2"
	"go.uber.org/zap"
)

// Source says where an artifact comes from and how to verify it.
type Source struct {
	// URL is https://, http://, file:// or a plain filesystem path (made
	// absolute against the working directory).
	URL string
	// Checksum is "sha256:<hex>", or "file:<URL>" naming a goreleaser-style
	// checksums file ("<hex>  <filename>" lines) whose line for the base name
	// of URL's path gives the digest. The URL takes the same forms as URL.
	Checksum string
	// InsecureSkipChecksum allows a fetch without any checksum. It is the
	// only way to do so, and it logs a loud warning each time. A Checksum,
	// when present, is still verified.
	InsecureSkipChecksum bool
}

// FetchResult describes a verified artifact in the cache.
type FetchResult struct {
	Digest Digest
	// Path is the artifact in the cache; treat it as read-only.
	Path string
	// Downloaded is false when the cache already held the artifact and no
	// transfer happened.
	Downloaded bool
	// Bytes is the artifact's size.
	Bytes int64
}

// maxChecksumsFile bounds a "file:" checksums file.
const maxChecksumsFile = 1 << 20

// Fetch returns the verified artifact for src from the cache, downloading
// it first if needed. A digest already in the cache is re-hashed, never
// downloaded again; a "file:" checksum resolved once is remembered, so a
// later Fetch of the same source needs no network. A cached artifact that
// fails re-hashing is moved to corrupt/ and fetched again.
func (c *Cache) Fetch(ctx context.Context, src Source) (FetchResult, error) {
	s, err := parseLocation(src.URL)
	if err != nil {
		return FetchResult{}, fmt.Errorf("fetch %s: %w", src.URL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()

	var res FetchResult
	switch cs := strings.TrimSpace(src.Checksum); {
	case strings.HasPrefix(cs, digestPrefix):
		want, perr := ParseDigest(cs)
		if perr != nil {
			return FetchResult{}, fmt.Errorf("fetch %s: checksum: %w", s.display, perr)
		}
		res, err = c.fetchDigest(ctx, s, want)
	case strings.HasPrefix(cs, "file:"):
		sums, perr := parseLocation(strings.TrimPrefix(cs, "file:"))
		if perr != nil {
			return FetchResult{}, fmt.Errorf("fetch %s: checksums file: %w", s.display, perr)
		}
		res, err = c.fetchViaChecksumsFile(ctx, s, sums)
	case cs != "":
		return FetchResult{}, fmt.Errorf("fetch %s: unsupported checksum %q (want sha256:<hex> or file:<URL>)", s.display, cs)
	case src.InsecureSkipChecksum:
		res, err = c.fetchUnverified(ctx, s)
	default:
		return FetchResult{}, fmt.Errorf("fetch %s: a checksum is required (sha256:<hex> or file:<checksums URL>); set InsecureSkipChecksum only to trust the source blindly: %w", s.display, ErrNoChecksum)
	}
	if err != nil {
		return FetchResult{}, fmt.Errorf("fetch %s: %w", s.display, err)
	}
	return res, nil
}

// location is a validated source URL.
type location struct {
	display string // for messages and logs; credentials redacted
	getter  string // what go-getter is given
	name    string // base name of the path
	key     string // identity, for refs and flights
}

var forcedGetter = regexp.MustCompile(`^[A-Za-z0-9]+::`)

// parseLocation accepts http(s)://, file:// and plain paths, and refuses
// everything go-getter would otherwise interpret (forced getters, "//"
// subdirectories, its own checksum parameter).
func parseLocation(raw string) (location, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return location{}, errors.New("empty URL")
	}
	if forcedGetter.MatchString(raw) {
		return location{}, errors.New("forced getters (scheme::url) are not supported")
	}
	if !strings.Contains(raw, "://") && !strings.HasPrefix(raw, "file:") {
		return pathLocation(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, fmt.Errorf("parse URL: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return location{}, errors.New("URL has no host")
		}
		if strings.Contains(u.Path, "//") {
			return location{}, errors.New(`URL path must not contain "//"`)
		}
		if u.Query().Has("checksum") {
			return location{}, errors.New(`URL must not carry a "checksum" query parameter; use Source.Checksum`)
		}
		name := path.Base(u.Path)
		if name == "/" || name == "." || strings.HasSuffix(u.Path, "/") {
			return location{}, errors.New("URL does not name a file")
		}
		u.Fragment = ""
		return location{display: u.Redacted(), getter: u.String(), name: name, key: u.String()}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, fmt.Errorf("file URL with remote host %q", u.Host)
		}
		if u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return location{}, errors.New("file URL must hold an absolute path")
		}
		return pathLocation(u.Path)
	default:
		return location{}, fmt.Errorf("unsupported scheme %q (want http, https, file or a path)", u.Scheme)
	}
}

func pathLocation(p string) (location, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return location{}, err
	}
	name := filepath.Base(abs)
	if name == string(filepath.Separator) || name == "." {
		return location{}, errors.New("path does not name a file")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	return location{display: abs, getter: u.String(), name: name, key: u.String()}, nil
}

// fetchDigest returns the artifact want from the cache after re-hashing it,
// or downloads it from s.
func (c *Cache) fetchDigest(ctx context.Context, s location, want Digest) (FetchResult, error) {
	v, err := c.flights.do(ctx, "blob:"+want.Hex(), func() (any, error) {
		return c.fetchDigestOnce(ctx, s, want)
	})
	res, _ := v.(FetchResult)
	return res, err
}

func (c *Cache) fetchDigestOnce(ctx context.Context, s location, want Digest) (FetchResult, error) {
	got, size, ok, err := c.verifyBlob(want)
	switch {
	case err != nil && !isNotExist(err):
		return FetchResult{}, fmt.Errorf("verify cached %s: %w", want, err)
	case err == nil && ok:
		return FetchResult{Digest: want, Path: c.Path(want), Bytes: size}, nil
	case err != nil: // not cached
		return c.download(ctx, s, want)
	}

	// Cached but corrupted: never serve it; fetch it again.
	moved, qerr := c.quarantine(c.Path(want))
	if qerr != nil {
		return FetchResult{}, fmt.Errorf("cached artifact %s is corrupted and could not be moved aside: %w: %w", want, qerr, ErrCorrupt)
	}
	c.log.Warn("cached artifact is corrupted; moved it aside and fetching it again",
		zap.String("want", string(want)), zap.String("got", string(got)),
		zap.String("moved_to", moved), zap.String("url", s.display))
	res, err := c.download(ctx, s, want)
	if err != nil {
		return FetchResult{}, fmt.Errorf("cached artifact %s was corrupted (moved to %s) and re-fetching it failed: %w: %w", want, moved, err, ErrCorrupt)
	}
	return res, nil
}

// fetchViaChecksumsFile resolves the digest of s from the checksums file at
// sums (or from the ref remembered from an earlier resolution) and fetches.
func (c *Cache) fetchViaChecksumsFile(ctx context.Context, s, sums location) (FetchResult, error) {
	refKey := refName(s, sums)
	v, err := c.flights.do(ctx, "ref:"+refKey, func() (any, error) {
		if d, ok := c.readRef(refKey); ok && c.Has(d) {
			return c.fetchDigest(ctx, s, d)
		}
		d, err := c.resolveChecksum(ctx, s, sums)
		if err != nil {
			return FetchResult{}, err
		}
		res, err := c.fetchDigest(ctx, s, d)
		if err != nil {
			return FetchResult{}, err
		}
		if err := c.writeFileAtomic(filepath.Join(c.dir, dirRefs, refKey), []byte(string(d)+"\n")); err != nil {
			// The artifact is verified; only the shortcut is lost.
			c.log.Warn("remember resolved checksum", zap.String("url", s.display), zap.Error(err))
		}
		return res, nil
	})
	res, _ := v.(FetchResult)
	return res, err
}

func refName(s, sums location) string {
	sum := sha256.Sum256([]byte(s.key + "\n" + sums.key))
	return hex.EncodeToString(sum[:])
}

func (c *Cache) readRef(name string) (Digest, bool) {
	b, err := os.ReadFile(filepath.Join(c.dir, dirRefs, name))
	if err != nil {
		return "", false
	}
	d, err := ParseDigest(strings.TrimSpace(string(b)))
	if err != nil {
		c.log.Warn("ignoring unreadable checksum ref", zap.String("ref", name), zap.Error(err))
		return "", false
	}
	return d, true
}

// resolveChecksum downloads the checksums file and picks the line for s.
func (c *Cache) resolveChecksum(ctx context.Context, s, sums location) (Digest, error) {
	tmp, cleanup, err := c.tempFile()
	if err != nil {
		return "", err
	}
	defer cleanup()
	if err := c.get(ctx, sums, tmp, maxChecksumsFile+1, false); err != nil {
		return "", fmt.Errorf("checksums file %s: %w", sums.display, err)
	}
	fi, err := os.Stat(tmp)
	if err != nil {
		return "", fmt.Errorf("checksums file %s: %w", sums.display, err)
	}
	if fi.Size() > maxChecksumsFile {
		return "", fmt.Errorf("checksums file %s: larger than %d bytes", sums.display, maxChecksumsFile)
	}
	data, err := os.ReadFile(tmp)
	if err != nil {
		return "", fmt.Errorf("checksums file %s: %w", sums.display, err)
	}
	d, err := findChecksum(data, s.name)
	if err != nil {
		return "", fmt.Errorf("checksums file %s: %w", sums.display, err)
	}
	return d, nil
}

// findChecksum picks the digest for name from "<hex>  <filename>" lines
// (sha256sum's " *<filename>" binary marker and a "./" prefix accepted).
func findChecksum(data []byte, name string) (Digest, error) {
	var found Digest
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		sum, file, ok := strings.Cut(text, " ")
		if !ok {
			continue
		}
		file = strings.TrimPrefix(strings.TrimLeft(file, " \t"), "*")
		file = strings.TrimPrefix(file, "./")
		if file != name {
			continue
		}
		h, err := parseHex(sum)
		if err != nil {
			return "", fmt.Errorf("line %d: %w", line, err)
		}
		d := Digest(digestPrefix + h)
		if found != "" && found != d {
			return "", fmt.Errorf("conflicting checksums for %q", name)
		}
		found = d
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("no line for %q: %w", name, ErrNoChecksum)
	}
	return found, nil
}

// fetchUnverified downloads s and stores it under whatever digest it has.
func (c *Cache) fetchUnverified(ctx context.Context, s location) (FetchResult, error) {
	v, err := c.flights.do(ctx, "insecure:"+s.key, func() (any, error) {
		c.log.Warn("FETCHING WITHOUT CHECKSUM VERIFICATION (InsecureSkipChecksum): the artifact is trusted blindly; pin a sha256 checksum",
			zap.String("url", s.display))
		return c.download(ctx, s, "")
	})
	res, _ := v.(FetchResult)
	return res, err
}

// download transfers s into tmp/, verifies it against want (unless want is
// empty) and commits it to sha256/. Nothing unverified is ever left behind.
func (c *Cache) download(ctx context.Context, s location, want Digest) (FetchResult, error) {
	tmp, cleanup, err := c.tempFile()
	if err != nil {
		return FetchResult{}, err
	}
	defer cleanup()
	start := time.Now()
	max := c.opts.MaxDownload
	// A local file that is too large is refused before it is copied.
	if u, err := url.Parse(s.getter); err == nil && u.Scheme == "file" {
		if fi, err := os.Stat(u.Path); err == nil && fi.Size() > max {
			return FetchResult{}, fmt.Errorf("%s has %d bytes, more than the download limit of %d bytes: %w", s.display, fi.Size(), max, ErrTooLarge)
		}
	}
	// One byte over the limit is read, so that "too large" is told apart
	// from "exactly the limit"; go-getter's MaxBytes cuts the body silently.
	if err := c.get(ctx, s, tmp, max+1, true); err != nil {
		return FetchResult{}, err
	}
	got, size, err := hashFile(tmp)
	if err != nil {
		return FetchResult{}, fmt.Errorf("hash download: %w", err)
	}
	if size > max {
		return FetchResult{}, fmt.Errorf("download is larger than the limit of %d bytes: %w", max, ErrTooLarge)
	}
	if want != "" && got != want {
		return FetchResult{}, fmt.Errorf("content does not match its checksum: want %s, got %s: %w", want, got, ErrChecksumMismatch)
	}
	dst, err := c.commitBlob(tmp, got)
	if err != nil {
		return FetchResult{}, fmt.Errorf("store %s: %w", got, err)
	}
	c.log.Info("fetched artifact", zap.String("url", s.display), zap.String("digest", string(got)),
		zap.Int64("bytes", size), zap.Duration("took", time.Since(start)))
	return FetchResult{Digest: got, Path: dst, Downloaded: true, Bytes: size}, nil
}

// tempFile reserves a fresh path in tmp/; cleanup removes whatever is left
// there (nothing, once committed).
func (c *Cache) tempFile() (string, func(), error) {
	f, err := os.CreateTemp(filepath.Join(c.dir, dirTmp), "fetch-*")
	if err != nil {
		return "", nil, fmt.Errorf("create temporary file: %w", err)
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", nil, fmt.Errorf("create temporary file: %w", err)
	}
	return name, func() { _ = os.Remove(name) }, nil
}

// get transfers exactly one file from s to dst with go-getter: http, https
// and file getters only, no decompression, no symlinks, copies not links.
// limit > 0 bounds an HTTP body.
func (c *Cache) get(ctx context.Context, s location, dst string, limit int64, progress bool) error {
	client := &getter.Client{
		Getters: []getter.Getter{
			&getter.HttpGetter{
				Client:                c.http,
				Netrc:                 false,
				XTerraformGetDisabled: true,
				DoNotCheckHeadFirst:   true, // one request per download; no resume of unverified bytes
				MaxBytes:              limit,
			},
			&getter.FileGetter{},
		},
		// A non-nil empty map: go-getter must never unpack anything.
		Decompressors:   map[string]getter.Decompressor{},
		DisableSymlinks: true,
	}
	req := &getter.Request{
		Src:             s.getter,
		Dst:             dst,
		GetMode:         getter.ModeFile,
		Copy:            true,
		DisableSymlinks: true,
		Umask:           0o022,
	}
	if progress {
		req.ProgressListener = c.progressTracker(s)
	}
	if _, err := client.Get(ctx, req); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%v: %w: %w", err, cerr, ErrFetch)
		}
		return fmt.Errorf("%w: %w", err, ErrFetch)
	}
	// The file getter copies a regular file; make sure nothing else landed.
	fi, err := os.Lstat(dst)
	if err != nil {
		return fmt.Errorf("%w: %w", err, ErrFetch)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("transfer produced %s, not a regular file: %w", fi.Mode().Type(), ErrFetch)
	}
	return nil
}
