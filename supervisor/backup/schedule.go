package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// File names of scheduled backups: m3sup-<UTC time>.tar.gz; the names sort
// by time.
const (
	filePrefix = "m3sup-"
	fileSuffix = ".tar.gz"
	fileTime   = "20060102T150405.000Z"
)

// Scheduler writes a backup into Dir every Interval and keeps the Keep
// newest. The zero Interval disables it; Keep <= 0 keeps every backup.
//
// Run is one actor of the daemon's run.Group: it returns nil when ctx ends
// and never fails the daemon — a failed backup is logged and retried at the
// next tick.
type Scheduler struct {
	Dir      string        // e.g. <data-dir>/backups
	Interval time.Duration // between backups; <= 0: no scheduled backups
	Keep     int           // newest backups kept; <= 0: all
	Logger   *zap.Logger
}

// Run takes a backup every Interval until ctx ends. The first one is due
// Interval after the newest backup already in Dir (at once when there is
// none), so restarting the daemon neither skips nor repeats backups.
func (s *Scheduler) Run(ctx context.Context, cli *clientv3.Client, meta Meta) error {
	if s.Interval <= 0 {
		<-ctx.Done()
		return nil
	}
	log := s.logger()
	s.removeStaleTemps()
	newest, _ := s.newest()
	timer := time.NewTimer(nextDelay(newest, time.Now(), s.Interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		start := time.Now()
		path, info, pruned, err := s.Once(ctx, cli, meta)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("scheduled backup failed", zap.Error(err), zap.Duration("next_in", s.Interval))
		default:
			log.Info("backup written", zap.String("path", path), zap.Int64("bytes", info.Size),
				zap.Int64("revision", info.Revision), zap.Duration("took", time.Since(start).Round(time.Millisecond)),
				zap.Int("pruned", len(pruned)))
		}
		timer.Reset(s.Interval)
	}
}

// nextDelay is how long to wait for the next backup when the newest one was
// taken at newest (zero: none).
func nextDelay(newest, now time.Time, interval time.Duration) time.Duration {
	if newest.IsZero() {
		return 0
	}
	d := newest.Add(interval).Sub(now)
	return max(0, min(d, interval))
}

// Once writes one backup into Dir atomically, then prunes Dir to the Keep
// newest. It returns the new file, its manifest and the files it removed.
func (s *Scheduler) Once(ctx context.Context, cli *clientv3.Client, meta Meta) (string, Info, []string, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", Info{}, nil, fmt.Errorf("create backup dir: %w", err)
	}
	path := filepath.Join(s.Dir, filePrefix+time.Now().UTC().Format(fileTime)+fileSuffix)
	if meta.TempDir == "" {
		meta.TempDir = s.Dir
	}
	var info Info
	err := WriteAtomic(path, func(w io.Writer) error {
		var err error
		info, err = Write(ctx, w, cli, meta)
		return err
	})
	if err != nil {
		return "", info, nil, fmt.Errorf("backup to %s: %w", path, err)
	}
	pruned, err := s.prune()
	if err != nil {
		return path, info, pruned, err
	}
	return path, info, pruned, nil
}

// List returns the scheduled backups in Dir, oldest first.
func (s *Scheduler) List() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, filePrefix) && strings.HasSuffix(n, fileSuffix) {
			out = append(out, filepath.Join(s.Dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s *Scheduler) prune() ([]string, error) {
	if s.Keep <= 0 {
		return nil, nil
	}
	files, err := s.List()
	if err != nil {
		return nil, fmt.Errorf("prune backups: %w", err)
	}
	var removed []string
	for len(files) > s.Keep {
		if err := os.Remove(files[0]); err != nil {
			return removed, fmt.Errorf("prune backups: %w", err)
		}
		removed = append(removed, files[0])
		files = files[1:]
	}
	return removed, nil
}

// newest is the time of the newest backup in Dir, from its name.
func (s *Scheduler) newest() (time.Time, error) {
	files, err := s.List()
	if err != nil || len(files) == 0 {
		return time.Time{}, err
	}
	name := filepath.Base(files[len(files)-1])
	return time.Parse(fileTime, strings.TrimSuffix(strings.TrimPrefix(name, filePrefix), fileSuffix))
}

// removeStaleTemps removes what a backup interrupted by a crash left.
func (s *Scheduler) removeStaleTemps() {
	for _, pat := range []string{"." + filePrefix + "*" + fileSuffix + ".*.tmp", ".m3sup-etcd-snapshot-*"} {
		m, _ := filepath.Glob(filepath.Join(s.Dir, pat))
		for _, f := range m {
			_ = os.Remove(f)
		}
	}
}

func (s *Scheduler) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}
