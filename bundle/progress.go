package bundle

import (
	"fmt"
	"io"
	"sync"
	"time"

	getter "github.com/hashicorp/go-getter/v2"
	"go.uber.org/zap"
)

// Progress reporting intervals: human output on Options.Progress, or a log
// line when there is no such writer.
const (
	progressWriterEvery = time.Second
	progressLogEvery    = 5 * time.Second
)

// progressTracker implements go-getter's ProgressTracker for one download.
type progressTracker struct {
	c   *Cache
	loc location
}

var _ getter.ProgressTracker = progressTracker{}

func (c *Cache) progressTracker(s location) progressTracker {
	return progressTracker{c: c, loc: s}
}

// TrackProgress wraps the body of a download; go-getter closes it when done.
func (t progressTracker) TrackProgress(_ string, current, total int64, stream io.ReadCloser) io.ReadCloser {
	every := progressLogEvery
	if t.c.opts.Progress != nil {
		every = progressWriterEvery
	}
	now := t.c.now()
	return &progressReader{
		ReadCloser: stream,
		t:          t,
		every:      every,
		done:       current,
		total:      total,
		start:      now,
		last:       now,
	}
}

type progressReader struct {
	io.ReadCloser
	t     progressTracker
	every time.Duration

	mu          sync.Mutex
	done, total int64
	start, last time.Time
	finished    bool
}

func (r *progressReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += int64(n)
	if err == io.EOF {
		r.finishLocked()
	} else if now := r.t.c.now(); now.Sub(r.last) >= r.every {
		r.last = now
		r.reportLocked(false)
	}
	return n, err
}

func (r *progressReader) Close() error {
	r.mu.Lock()
	r.finishLocked()
	r.mu.Unlock()
	return r.ReadCloser.Close()
}

func (r *progressReader) finishLocked() {
	if r.finished {
		return
	}
	r.finished = true
	r.reportLocked(true)
}

func (r *progressReader) reportLocked(final bool) {
	c := r.t.c
	if w := c.opts.Progress; w != nil {
		state := ""
		if final {
			state = " done"
			if r.total > 0 && r.done < r.total {
				state = " incomplete"
			}
		}
		if r.total > 0 {
			fmt.Fprintf(w, "fetch %s: %s / %s (%d%%)%s\n", r.t.loc.name, humanBytes(r.done), humanBytes(r.total), percent(r.done, r.total), state)
		} else {
			fmt.Fprintf(w, "fetch %s: %s%s\n", r.t.loc.name, humanBytes(r.done), state)
		}
		return
	}
	if final {
		return // download logs its own summary
	}
	fields := []zap.Field{
		zap.String("url", r.t.loc.display),
		zap.Int64("bytes", r.done),
		zap.Duration("elapsed", c.now().Sub(r.start)),
	}
	if r.total > 0 {
		fields = append(fields, zap.Int64("total", r.total), zap.Int("percent", percent(r.done, r.total)))
	}
	c.log.Info("download progress", fields...)
}

func percent(done, total int64) int {
	if total <= 0 {
		return 0
	}
	return int(done * 100 / total)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
