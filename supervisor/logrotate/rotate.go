package logrotate

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// tmpSuffix marks a file being written by Rotate; a leftover one (m3sup
// died mid-rotation) is removed by the next check.
const tmpSuffix = ".rotating"

// Rotate checks the live file path against p and carries out Decide's
// plan. A missing live file is no error (nothing to rotate yet).
func Rotate(path string, p Policy) (Plan, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return Plan{}, nil
	} else if err != nil {
		return Plan{}, fmt.Errorf("rotate %s: %w", path, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Plan{}, fmt.Errorf("rotate %s: list %s: %w", path, dir, err)
	}
	var present []File
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), base+".") && strings.HasSuffix(e.Name(), tmpSuffix) {
			_ = os.Remove(filepath.Join(dir, e.Name())) // a rotation cut short
			continue
		}
		if f, ok := ParseFile(base, e.Name()); ok && e.Type().IsRegular() {
			present = append(present, f)
		}
	}
	plan := Decide(p, fi.Size(), present)
	return plan, apply(path, plan)
}

// apply carries out plan for the live file path.
func apply(path string, plan Plan) error {
	name := func(f File) string { return f.Name(path) }
	for _, f := range plan.Delete {
		if err := os.Remove(name(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate %s: delete: %w", path, err)
		}
	}
	for _, r := range plan.Renames {
		if err := os.Rename(name(r.From), name(r.To)); err != nil {
			return fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	if plan.Rotate {
		if err := copyTruncate(path, plan.Copy); err != nil {
			return fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	for _, f := range plan.Compress {
		if err := gzipFile(name(f)); err != nil {
			return fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	return nil
}

// copyTruncate copies path to path.1 (when keep) and truncates path. The
// copy reads to the end of the file as it is then and the truncate follows
// at once; what the writer adds in between is lost. path.1 appears only
// after the truncate (see the package comment).
func copyTruncate(path string, keep bool) error {
	if !keep {
		return os.Truncate(path, 0)
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".1" + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = os.Truncate(path, 0)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path+".1")
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("copy and truncate: %w", err)
	}
	return nil
}

// gzipFile replaces path with path.gz.
func gzipFile(path string) error {
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer src.Close()
	tmp := path + ".gz" + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	zw := gzip.NewWriter(dst)
	_, err = io.Copy(zw, src)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path+".gz")
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compress %s: %w", path, err)
	}
	return os.Remove(path)
}

// Rotator checks a fixed set of live files every Interval: one actor of
// the daemon's run group.
type Rotator struct {
	Paths    []string
	Policy   Policy
	Interval time.Duration // default 5 s
	Logger   *zap.Logger
}

// DefaultInterval is how often Rotator checks when Interval is 0.
const DefaultInterval = 5 * time.Second

// Run checks at once and then every Interval until ctx ends; it returns
// nil then. A policy with MaxSize 0 waits for ctx without checking.
func (r *Rotator) Run(ctx context.Context) error {
	if r.Policy.MaxSize <= 0 {
		<-ctx.Done()
		return nil
	}
	every := r.Interval
	if every <= 0 {
		every = DefaultInterval
	}
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	failed := map[string]string{} // path → last error logged, to log a repeat once
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		for _, p := range r.Paths {
			plan, err := Rotate(p, r.Policy)
			switch {
			case err != nil:
				if failed[p] != err.Error() {
					log.Error("log rotation failed", zap.Error(err))
					failed[p] = err.Error()
				}
			case plan.Rotate:
				delete(failed, p)
				log.Debug("log rotated", zap.String("path", p), zap.Int("deleted", len(plan.Delete)))
			default:
				delete(failed, p)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
