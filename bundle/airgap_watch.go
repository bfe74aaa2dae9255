package bundle

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultWatchInterval is how often WatchBundles looks for new bundles.
const DefaultWatchInterval = 2 * time.Second

// ImportedDir is the subdirectory of a watched directory that imported
// bundles are moved to.
const ImportedDir = "imported"

// WatchOptions tune WatchBundles. The zero value works.
type WatchOptions struct {
	// Verify is applied to every bundle (trusted keys, limits).
	Verify VerifyOptions
	// Interval between looks at the directory. Default 2 s.
	Interval time.Duration
}

// WatchBundles imports the bundles that appear in dir until ctx is done,
// then returns nil; it is meant to be one actor of a run.Group.
//
// Every Interval it lists dir (created if missing) for regular files named
// *.m3sup or *.tar (dot files, symlinks and other names are ignored: copy a
// bundle in as "x.m3sup.part" and rename it, or just copy it — a file is
// only taken once its size and modification time have held still for one
// interval). Each is imported with ImportBundle and onImport is called with
// the result or the error, once per bundle:
//
//   - imported: the file is moved to dir/imported/ (a name taken there gets a
//     timestamp suffix; ImportResult.Path says where it went) and its sha256
//     remembered, so the same bundle dropped again is moved aside without
//     another import or callback;
//   - refused: the file stays where it is and is not tried again until it
//     changes (size or modification time) or the watcher restarts — fix the
//     trust or replace the file.
//
// onImport runs on the watcher's goroutine; it must not block for long.
func (c *Cache) WatchBundles(ctx context.Context, dir string, opts WatchOptions, onImport func(ImportResult, error)) error {
	if opts.Interval <= 0 {
		opts.Interval = DefaultWatchInterval
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("watch bundles: %w", err)
	}
	w := &bundleWatcher{
		c: c, dir: dir, opts: opts, onImport: onImport,
		pending:  map[string]fileState{},
		settled:  map[string]fileState{},
		imported: map[Digest]bool{},
	}
	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

type fileState struct {
	size  int64
	mtime time.Time
}

type bundleWatcher struct {
	c        *Cache
	dir      string
	opts     WatchOptions
	onImport func(ImportResult, error)

	pending  map[string]fileState // seen once, waiting to hold still
	settled  map[string]fileState // refused (or not movable) in this state
	imported map[Digest]bool      // bundle files imported
}

func isBundleName(name string) bool {
	return !strings.HasPrefix(name, ".") && (strings.HasSuffix(name, ".m3sup") || strings.HasSuffix(name, ".tar"))
}

func (w *bundleWatcher) poll(ctx context.Context) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		w.c.log.Warn("list bundles directory", zap.String("dir", w.dir), zap.Error(err))
		return
	}
	present := map[string]bool{}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		name := e.Name()
		if !e.Type().IsRegular() || !isBundleName(name) {
			continue
		}
		present[name] = true
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		st := fileState{size: fi.Size(), mtime: fi.ModTime()}
		if prev, ok := w.settled[name]; ok && prev == st {
			continue
		}
		delete(w.settled, name)
		// Take a file once it has held still for an interval: seen unchanged
		// by the previous poll, or last modified longer ago than that.
		if prev, ok := w.pending[name]; !(ok && prev == st) && time.Since(st.mtime) < w.opts.Interval {
			w.pending[name] = st
			continue
		}
		delete(w.pending, name)
		w.take(ctx, name, st)
	}
	for name := range w.pending {
		if !present[name] {
			delete(w.pending, name)
		}
	}
	for name := range w.settled {
		if !present[name] {
			delete(w.settled, name)
		}
	}
}

func (w *bundleWatcher) take(ctx context.Context, name string, st fileState) {
	path := filepath.Join(w.dir, name)
	d, _, err := hashFile(path)
	if err != nil {
		if ctx.Err() == nil {
			w.settled[name] = st
			w.onImport(ImportResult{Path: path}, fmt.Errorf("import bundle %s: %w", path, err))
		}
		return
	}
	if w.imported[d] {
		if w.moveAside(path, name) == "" {
			w.settled[name] = st
		}
		return
	}
	res, err := w.c.ImportBundle(ctx, path, w.opts.Verify)
	if ctx.Err() != nil {
		return // shutting down: try again next time
	}
	if err != nil {
		w.settled[name] = st
		w.onImport(ImportResult{Path: path}, err)
		return
	}
	res.Bundle.Digest = d
	w.imported[d] = true
	if moved := w.moveAside(path, name); moved != "" {
		res.Path = moved
	} else {
		w.settled[name] = st
	}
	w.onImport(res, nil)
}

// moveAside moves an imported bundle into dir/imported/ and returns where
// it went ("" if it could not be moved; it is remembered anyway).
func (w *bundleWatcher) moveAside(path, name string) string {
	done := filepath.Join(w.dir, ImportedDir)
	if err := os.MkdirAll(done, 0o700); err != nil {
		w.c.log.Warn("move imported bundle aside", zap.String("path", path), zap.Error(err))
		return ""
	}
	dst := filepath.Join(done, name)
	if _, err := os.Lstat(dst); err == nil {
		dst = filepath.Join(done, name+"."+time.Now().UTC().Format("20060102T150405Z")+"-"+randomSuffix())
	}
	if err := os.Rename(path, dst); err != nil {
		w.c.log.Warn("move imported bundle aside", zap.String("path", path), zap.Error(err))
		return ""
	}
	return dst
}
