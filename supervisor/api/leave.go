package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Leaver decommissions this host (multi-host mode); cluster.Leaver
// implements it, and the daemon routes to it.
type Leaver interface {
	// Leave checks that this host may leave (it changes nothing when it
	// may not: ErrConflict with the reason), marks it leaving in etcd and
	// starts the leave. Calling it again while leaving is harmless.
	Leave(ctx context.Context) (LeaveResult, error)
	// LeaveDone waits until the leave finished (nil), failed, or ctx ended.
	LeaveDone(ctx context.Context) error
}

// Leave states in LeaveResult.State.
const (
	LeaveStateLeaving = "leaving" // accepted; the host is being decommissioned
	LeaveStateLeft    = "left"    // done; the daemon exits
)

// LeaveResult is the answer to POST /v1/leave.
type LeaveResult struct {
	Node string `json:"node"`
	// EtcdRole is voter (its etcd member is removed) or client (none runs).
	EtcdRole string `json:"etcdRole"`
	// InPlacement: the host's instance was in M3's placement when the leave
	// was accepted (the controller removes it; M3 streams its shards away).
	InPlacement bool   `json:"inPlacement"`
	State       string `json:"state"`
	Message     string `json:"message,omitempty"`
}

func leaveRoutes(mux *http.ServeMux, l Leaver) {
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		wait, _ := strconv.ParseBool(r.URL.Query().Get("wait"))
		res, err := l.Leave(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		if wait {
			if err := l.LeaveDone(r.Context()); err != nil {
				writeError(w, err)
				return
			}
			res.State, res.Message = LeaveStateLeft, "left the cluster; m3sup exits"
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// Leave asks the daemon to decommission this host. With wait it returns
// only once the host has left (or the leave failed) — that can take as
// long as M3 needs to stream the host's shards away, so no client timeout
// applies; bound it with ctx.
func (c *Client) Leave(ctx context.Context, wait bool) (LeaveResult, error) {
	path := "/v1/leave"
	if wait {
		path += "?wait=true"
	}
	resp, err := c.send(ctx, http.MethodPost, path, nil, !wait)
	if err != nil {
		return LeaveResult{}, err
	}
	defer resp.Body.Close()
	var out LeaveResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return LeaveResult{}, fmt.Errorf("decode %s: %w", path, err)
	}
	return out, nil
}
