package bundle

import (
	"fmt"
	"github.com/dustin/go-humanize"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	getter "github.com/hashicorp/go-getter/v2"
	"go.uber.org/zap"
)

// Progress reporting intervals: a redrawn bar when Options.Progress is a
// terminal, a line per interval when it is another writer, or a log line
// when there is no such writer.
const (
	progressBarEvery    = 200 * time.Millisecond
	progressWriterEvery = time.Second
	progressLogEvery    = 5 * time.Second
)

// progressIsTerminal decides whether w gets the single-line bar (redrawn
// with \r) rather than one line per interval: w is a character device, as
// the command line decides for os.Stdout. Tests replace it.
var progressIsTerminal = func(w io.Writer) bool {
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

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
	bar := false
	if w := t.c.opts.Progress; w != nil {
		every = progressWriterEvery
		if progressIsTerminal(w) {
			every, bar = progressBarEvery, true
		}
	}
	now := t.c.now()
	return &progressReader{
		ReadCloser: stream,
		t:          t,
		every:      every,
		bar:        bar,
		done:       current,
		initial:    current,
		total:      total,
		start:      now,
		last:       now,
	}
}

type progressReader struct {
	io.ReadCloser
	t     progressTracker
	every time.Duration
	bar   bool // redraw one terminal line instead of printing lines

	mu                   sync.Mutex
	done, initial, total int64
	start, last          time.Time
	drawn                int  // width of the bar line last drawn
	header               bool // the bar's header line is out
	finished             bool
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
		if r.bar {
			r.drawBarLocked(w, final)
			return
		}
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

// barWidth is the number of cells of the bar itself; with the figures the
// line stays within 80 columns.
const barWidth = 28

// drawBarLocked redraws the terminal line, below a header line naming the
// file:
//
//	fetch m3_1.5.0_linux_amd64.tar.gz (28.7 MiB)
//	[============>               ]  45%  12.9/28.7 MiB  85.3 MB/s  ETA 0:02
//
// and ends it with a newline once the transfer is over. MB/s is 10^6
// bytes a second, averaged since the start; the ETA follows from it.
func (r *progressReader) drawBarLocked(w io.Writer, final bool) {
	if !r.header {
		r.header = true
		if r.total > 0 {
			fmt.Fprintf(w, "fetch %s (%s)\n", r.t.loc.name, humanBytes(r.total))
		} else {
			fmt.Fprintf(w, "fetch %s\n", r.t.loc.name)
		}
	}
	elapsed := r.t.c.now().Sub(r.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(r.done-r.initial) / s
	}
	var b strings.Builder
	if r.total > 0 {
		p := min(r.done*100/r.total, 100)
		fill := int(min(r.done, r.total) * barWidth / r.total)
		b.WriteByte('[')
		b.WriteString(strings.Repeat("=", fill))
		if fill < barWidth {
			b.WriteByte('>')
			b.WriteString(strings.Repeat(" ", barWidth-fill-1))
		}
		fmt.Fprintf(&b, "] %3d%%  %s", p, sizePair(r.done, r.total))
	} else {
		b.WriteString(humanBytes(r.done))
	}
	fmt.Fprintf(&b, "  %s", formatRate(rate))
	switch {
	case final && r.total > 0 && r.done < r.total:
		b.WriteString("  incomplete")
	case final:
		fmt.Fprintf(&b, "  done %s", elapsed.Round(100*time.Millisecond))
	case r.total > 0 && rate > 0:
		eta := time.Duration(float64(r.total-r.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, "  ETA %s", formatETA(eta))
	case r.total > 0:
		b.WriteString("  ETA --:--")
	}
	line := b.String()
	// Overwrite what the previous, possibly longer, line left.
	pad := ""
	if n := len(line); n < r.drawn {
		pad = strings.Repeat(" ", r.drawn-n)
	}
	r.drawn = len(line)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(w, "\r%s%s%s", line, pad, end)
}

// sizePair is "13.5/30.0 MiB": both in the unit of the total.
func sizePair(done, total int64) string {
	if total < 1024 {
		return fmt.Sprintf("%d/%d B", done, total)
	}
	div, unit := 1024.0, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB", "PiB", "EiB"} {
		if float64(total) < div*1024 {
			break
		}
		div *= 1024
		unit = u
	}
	return fmt.Sprintf("%.1f/%.1f %s", float64(done)/div, float64(total)/div, unit)
}

func formatRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f GB/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f MB/s", bps/1e6)
	default:
		return fmt.Sprintf("%.0f kB/s", bps/1e3)
	}
}

// formatETA is m:ss, or h:mm:ss from an hour on.
func formatETA(d time.Duration) string {
	s := int64(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

func percent(done, total int64) int {
	if total <= 0 {
		return 0
	}
	return int(done * 100 / total)
}

// humanBytes is n in binary units, like "28.7 MiB".
func humanBytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }
