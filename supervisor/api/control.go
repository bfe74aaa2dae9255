package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/m3sup/m3sup/supervisor/logrotate"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// Error kinds a Controller returns (wrapped); the server maps them to HTTP.
var (
	ErrInvalid  = errors.New("invalid")   // 400
	ErrConflict = errors.New("conflict")  // 409
	ErrNotFound = errors.New("not found") // 404
)

// ClusterDoc is the desired cluster spec with the etcd revision it was read
// at; `m3sup get cluster` prints it and `m3sup apply` sends it back, so a
// stale revision is refused.
type ClusterDoc struct {
	Revision int64        `json:"revision,omitempty" yaml:"revision,omitempty"`
	Spec     spec.Cluster `json:"spec" yaml:"spec"`
}

// ApplyResult says what an apply changed, or would change with dry-run.
type ApplyResult struct {
	Applied  bool     `json:"applied"`
	Revision int64    `json:"revision,omitempty"`
	Changes  []string `json:"changes"`
	// Restarts lists the components whose process would restart, with why.
	Restarts []string `json:"restarts"`
	// InPlace lists changes M3 applies without a restart (namespaces).
	InPlace []string `json:"inPlace,omitempty"`
}

// ControlResult is a component's control after restart/stop/start.
type ControlResult struct {
	Component string       `json:"component"`
	Control   spec.Control `json:"control"`
}

// Controller is what the server needs to change the daemon's desired state.
type Controller interface {
	Cluster(ctx context.Context) (ClusterDoc, error)
	// ApplyCluster validates doc and writes it if doc.Revision is still
	// current (0: whatever is current). dryRun only reports.
	ApplyCluster(ctx context.Context, doc ClusterDoc, dryRun bool) (ApplyResult, error)
	// Control performs "restart", "stop" or "start" on a component.
	Control(ctx context.Context, component, action string) (ControlResult, error)
	// LogPath is the host path of a component's log file.
	LogPath(component string) (string, error)
}

// errorBody is the JSON body of every API error.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	}
	writeJSON(w, code, errorBody{Error: err.Error()})
}

func (s *Server) controlRoutes(mux *http.ServeMux, c Controller) {
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		doc, err := c.Cluster(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, doc)
	})
	mux.HandleFunc("PUT /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		var doc ClusterDoc
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = spec.DecodeStrict(body, &doc)
		}
		if err != nil {
			writeError(w, Errorf(ErrInvalid, "invalid cluster spec:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  ")))
			return
		}
		dry, _ := strconv.ParseBool(r.URL.Query().Get("dryRun"))
		res, err := c.ApplyCluster(r.Context(), doc, dry)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/components/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		action := r.PathValue("action")
		if action != "restart" && action != "stop" && action != "start" {
			writeError(w, fmt.Errorf("action %q: must be restart, stop or start: %w", action, ErrNotFound))
			return
		}
		res, err := c.Control(r.Context(), r.PathValue("name"), action)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/components/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		path, err := c.LogPath(r.PathValue("name"))
		if err != nil {
			writeError(w, err)
			return
		}
		tail := -1
		if t := r.URL.Query().Get("tail"); t != "" {
			if tail, err = strconv.Atoi(t); err != nil || tail < 0 {
				writeError(w, fmt.Errorf("tail %q: must be a number >= 0: %w", t, ErrInvalid))
				return
			}
		}
		follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := streamLog(r.Context(), w, path, tail, follow); err != nil && !errors.Is(err, context.Canceled) {
			writeError(w, err)
		}
	})
}

// streamLog writes the last tail lines of path (all when tail < 0) and,
// with follow, whatever is appended until ctx ends. Lines missing from a
// live file just rotated are taken from path.1 (logrotate's newest rotated
// file); a follower continues across a rotation (logrotate.Follower) and
// across a file recreated by a restart.
func streamLog(ctx context.Context, w http.ResponseWriter, path string, tail int, follow bool) error {
	var fl *logrotate.Follower
	if follow { // before the tail is read: a rotation in between is seen
		fl = logrotate.NewFollower(path)
		defer fl.Close()
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		if !follow {
			return fmt.Errorf("no log yet at %s: %w", path, ErrNotFound)
		}
	} else if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	if f != nil {
		defer f.Close()
		off, err := writeTail(w, path, f, tail)
		if err != nil {
			return err
		}
		if follow {
			fl.SetOffset(off)
		}
	}
	if !follow {
		return nil
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := fl.Poll(w); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// writeTail writes the last n lines of the live log f (all when n < 0),
// preceded, when f holds fewer (it was just rotated), by the last lines of
// path.1, and returns the offset where f ended.
func writeTail(w io.Writer, path string, f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	start, have := int64(0), 0
	if n >= 0 {
		if start, have, err = logrotate.TailStart(f, size, n); err != nil {
			return 0, fmt.Errorf("read log: %w", err)
		}
	}
	if n < 0 || (have < n && start == 0) {
		if err := writeRotatedTail(w, path+".1", n-have); err != nil {
			return 0, err
		}
	}
	_, err = io.Copy(w, io.NewSectionReader(f, start, size-start))
	return size, err
}

// writeRotatedTail writes the last n lines of the rotated file path (all
// when n < 0); a missing file writes nothing.
func writeRotatedTail(w io.Writer, path string, n int) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	start := int64(0)
	if n >= 0 {
		if start, _, err = logrotate.TailStart(f, fi.Size(), n); err != nil {
			return fmt.Errorf("read rotated log: %w", err)
		}
	}
	_, err = io.Copy(w, io.NewSectionReader(f, start, fi.Size()-start))
	return err
}

// Cluster reads the desired cluster spec.
func (c *Client) Cluster(ctx context.Context) (ClusterDoc, error) {
	var doc ClusterDoc
	err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, &doc)
	return doc, err
}

// ApplyCluster sends a desired cluster spec.
func (c *Client) ApplyCluster(ctx context.Context, doc ClusterDoc, dryRun bool) (ApplyResult, error) {
	var res ApplyResult
	path := "/v1/cluster"
	if dryRun {
		path += "?dryRun=true"
	}
	err := c.do(ctx, http.MethodPut, path, doc, &res)
	return res, err
}

// Control asks for restart, stop or start of a component.
func (c *Client) Control(ctx context.Context, component, action string) (ControlResult, error) {
	var res ControlResult
	err := c.do(ctx, http.MethodPost, "/v1/components/"+component+"/"+action, nil, &res)
	return res, err
}

// Logs copies a component's log to w: the last tail lines (all when < 0),
// then, with follow, new lines until ctx ends.
func (c *Client) Logs(ctx context.Context, w io.Writer, component string, tail int, follow bool) error {
	q := fmt.Sprintf("?follow=%t", follow)
	if tail >= 0 {
		q += fmt.Sprintf("&tail=%d", tail)
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/components/"+component+"/logs"+q, nil, !follow)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	_, err = io.Copy(w, br)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
