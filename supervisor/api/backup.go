package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Backupper writes a backup of the cluster's brain (supervisor/backup's
// tar.gz) to w.
type Backupper interface {
	Backup(ctx context.Context, w io.Writer) error
}

// BackupHandler serves GET /v1/backup: the backup file as application/gzip.
// An error before the first byte is an ordinary API error; one after it
// aborts the response, so a client never mistakes a cut-off backup for a
// whole one.
func BackupHandler(b Backupper) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "m3sup-" + time.Now().UTC().Format("20060102T150405Z") + ".tar.gz"
		lw := &lazyWriter{w: w, start: func() {
			w.Header().Set("Content-Type", "application/gzip")
			w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
			w.WriteHeader(http.StatusOK)
		}}
		err := b.Backup(r.Context(), lw)
		switch {
		case err == nil && !lw.started:
			lw.start()
		case err != nil && !lw.started:
			writeError(w, fmt.Errorf("backup: %w", err))
		case err != nil:
			panic(http.ErrAbortHandler) // the status is sent; cut the body short
		}
	})
}

// lazyWriter sends the success headers with the first byte.
type lazyWriter struct {
	w       io.Writer
	start   func()
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.start()
	}
	return l.w.Write(p)
}

// Backup streams a backup from the daemon (GET /v1/backup) into w. It
// returns an error, and w holds a partial file, unless the whole backup
// arrived.
func (c *Client) Backup(ctx context.Context, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/backup", nil, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("receive backup: %w", err)
	}
	return nil
}
