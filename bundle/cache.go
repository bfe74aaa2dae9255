package bundle

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/internal/regularfile"
)

// Defaults used for zero fields of Options.
const (
	DefaultTimeout  = 30 * time.Minute
	DefaultMaxFiles = 10000
	DefaultMaxBytes = int64(4) << 30 // 4 GiB
	// DefaultMaxDownload bounds one downloaded artifact. An M3 release
	// tarball is a few hundred MiB; 2 GiB leaves room and still stops a
	// source that streams forever from filling the disk.
	DefaultMaxDownload = int64(2) << 30 // 2 GiB
)

// Options tune a Cache. The zero value works: every zero field takes its
// default.
type Options struct {
	// Logger receives warnings (corrupt cache entries, unverified fetches)
	// and, when Progress is nil, a progress line at most every 5 s.
	Logger *zap.Logger
	// Progress, when set, receives human-readable download progress lines.
	Progress io.Writer
	// Timeout bounds one Fetch, checksums file included. Default 30 min.
	Timeout time.Duration
	// MaxFiles bounds the entries of one archive. Default 10000.
	MaxFiles int
	// MaxBytes bounds the bytes extracted from one archive, counted as they
	// are written. Default 4 GiB.
	MaxBytes int64
	// MaxDownload bounds one downloaded artifact (a release tarball), HTTP
	// or local file alike. A larger one fails with ErrTooLarge and leaves
	// nothing in the cache. Default 2 GiB (DefaultMaxDownload).
	MaxDownload int64
}

func (o Options) withDefaults() (Options, error) {
	if o.Timeout < 0 || o.MaxFiles < 0 || o.MaxBytes < 0 || o.MaxDownload < 0 {
		return o, errors.New("negative timeout or limit")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxDownload == 0 {
		o.MaxDownload = DefaultMaxDownload
	}
	return o, nil
}

// Cache is a content-addressed store of verified artifacts and their
// extracted trees. It is safe for concurrent use; concurrent requests for
// the same content in one process do the work once.
type Cache struct {
	dir  string
	opts Options
	log  *zap.Logger
	http *http.Client

	// now is the clock for progress reporting; tests replace it.
	now func() time.Time

	flights flightGroup
}

// Subdirectories of the cache directory.
const (
	dirBlobs    = "sha256"
	dirTmp      = "tmp"
	dirUnpacked = "unpacked"
	dirRefs     = "refs"
	dirCorrupt  = "corrupt"
)

// OpenCache opens (creating if needed) the cache rooted at dir, e.g.
// <data-dir>/cache.
func OpenCache(dir string, opts Options) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("open cache: empty directory")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	for _, sub := range []string{dirBlobs, dirTmp, dirUnpacked, dirRefs, dirCorrupt} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", dir, err)
		}
	}
	c := &Cache{
		dir:  abs,
		opts: opts,
		log:  opts.Logger.Named("bundle"),
		http: newHTTPClient(),
		now:  time.Now,
	}
	c.sweepTmp()
	return c, nil
}

// Dir returns the cache's root directory.
func (c *Cache) Dir() string { return c.dir }

// Path returns where the artifact d is (or would be) stored.
func (c *Cache) Path(d Digest) string { return filepath.Join(c.dir, dirBlobs, d.Hex()) }

// Has reports whether an artifact for d is stored. It does not verify it.
func (c *Cache) Has(d Digest) bool {
	if d.Hex() == "" {
		return false
	}
	fi, err := os.Lstat(c.Path(d))
	return err == nil && fi.Mode().IsRegular()
}

func newHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return fmt.Errorf("refusing redirect from https to %s", req.URL.Scheme)
			}
			return nil
		},
	}
}

// sweepTmp removes leftovers of interrupted downloads and extractions that
// are older than any operation can take.
func (c *Cache) sweepTmp() {
	cutoff := time.Now().Add(-2 * max(c.opts.Timeout, time.Hour))
	sweep := func(dir string, match func(name string) bool) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if !match(e.Name()) {
				continue
			}
			fi, err := e.Info()
			if err != nil || fi.ModTime().After(cutoff) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				c.log.Warn("remove stale temporary file", zap.String("path", filepath.Join(dir, e.Name())), zap.Error(err))
			}
		}
	}
	sweep(filepath.Join(c.dir, dirTmp), func(string) bool { return true })
	sweep(filepath.Join(c.dir, dirUnpacked), func(n string) bool {
		return strings.Contains(n, ".tmp-") || strings.Contains(n, ".old-")
	})
}

// hashFile returns the digest and size of the regular file at path. It
// refuses anything that is not a regular file (a planted symlink, say).
func hashFile(path string) (Digest, int64, error) {
	f, err := regularfile.OpenNoFollow(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return digestFromSum(h.Sum(nil)), n, nil
}

// verifyBlob re-hashes the stored artifact for want. ok is false when it
// exists but does not match (or is not a regular file); err is set when it
// is missing or unreadable.
func (c *Cache) verifyBlob(want Digest) (got Digest, size int64, ok bool, err error) {
	path := c.Path(want)
	fi, err := os.Lstat(path)
	if err != nil {
		return "", 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, false, nil
	}
	got, size, err = hashFile(path)
	if err != nil {
		return "", 0, false, err
	}
	return got, size, got == want, nil
}

// quarantine moves a path aside into corrupt/ so that it is never served
// again but can still be inspected. It returns where it went.
func (c *Cache) quarantine(path string) (string, error) {
	dst := filepath.Join(c.dir, dirCorrupt, filepath.Base(path)+"."+time.Now().UTC().Format("20060102T150405Z")+"-"+randomSuffix())
	if err := os.Rename(path, dst); err != nil {
		if rmErr := os.RemoveAll(path); rmErr != nil {
			return "", fmt.Errorf("move aside %s: %w", path, errors.Join(err, rmErr))
		}
		return "(removed)", nil
	}
	return dst, nil
}

// commitBlob makes the verified temporary file tmp the stored artifact for
// d: read-only, synced, and atomically renamed into sha256/.
func (c *Cache) commitBlob(tmp string, d Digest) (string, error) {
	dst := c.Path(d)
	if err := atomicfile.Commit(tmp, dst, 0o444); err != nil {
		return "", err
	}
	return dst, nil
}

// writeFileAtomic writes data to path through a temporary file in tmp/.
func (c *Cache) writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(c.dir, dirTmp), "write-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := atomicfile.Commit(tmp, path, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// syncDir makes a rename in dir durable; failures only cost durability.
func syncDir(dir string) { _ = atomicfile.SyncDir(dir) }

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// flightGroup runs one call per key at a time; callers that arrive while a
// call is running wait for its result instead of repeating the work. The
// call runs on the first caller's goroutine: no goroutine is started here.
type flightGroup struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

// do runs fn for key unless a call for key is already running, in which case
// it waits for that call (or for ctx). If the running call failed only
// because its own caller's context ended, a waiter whose context is still
// live tries again.
func (g *flightGroup) do(ctx context.Context, key string, fn func() (any, error)) (any, error) {
	for attempt := 0; ; attempt++ {
		g.mu.Lock()
		if g.calls == nil {
			g.calls = make(map[string]*flight)
		}
		if f, ok := g.calls[key]; ok {
			g.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-f.done:
			}
			if f.err != nil && ctx.Err() == nil && attempt < 3 &&
				(errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			return f.val, f.err
		}
		f := &flight{done: make(chan struct{})}
		g.calls[key] = f
		g.mu.Unlock()

		func() {
			defer func() {
				g.mu.Lock()
				delete(g.calls, key)
				g.mu.Unlock()
				close(f.done)
			}()
			f.val, f.err = fn()
		}()
		return f.val, f.err
	}
}
