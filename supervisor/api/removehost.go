package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// HostRemover removes another host that is gone for good (multi-host
// mode); cluster.HostRemover implements it, and the daemon routes to it.
type HostRemover interface {
	// RemoveHost checks that host name may be removed (it changes nothing
	// when it may not: ErrConflict with the reason, ErrInvalid for a bad
	// name), marks it leaving, removes its etcd member and lets the
	// controller remove its instance. Calling it again is harmless: it
	// resumes or finishes an earlier call.
	RemoveHost(ctx context.Context, name string) (RemoveHostResult, error)
	// RemoveHostDone waits until host name is gone from the placement,
	// every shard is AVAILABLE and its records are deleted (nil), or ctx
	// ends.
	RemoveHostDone(ctx context.Context, name string) error
}

// Remove-host states in RemoveHostResult.State.
const (
	RemoveStateRemoving = "removing" // accepted; the instance is being removed
	RemoveStateRemoved  = "removed"  // done: no instance, no etcd member, no records
)

// RemoveHostResult is the answer to POST /v1/hosts/{name}/remove.
type RemoveHostResult struct {
	Node string `json:"node"`
	// EtcdRole is what the host was in etcd when the removal began: voter,
	// learner (its member is removed) or client (it had none).
	EtcdRole string `json:"etcdRole"`
	// EtcdMemberRemoved: this call removed the host's etcd member.
	EtcdMemberRemoved bool `json:"etcdMemberRemoved"`
	// InPlacement: the host's instance was in M3's placement when the
	// removal was accepted (the controller removes it; M3 streams its
	// shards from the other replicas).
	InPlacement bool   `json:"inPlacement"`
	State       string `json:"state"`
	Message     string `json:"message,omitempty"`
}

func removeHostRoutes(mux *http.ServeMux, rm HostRemover) {
	mux.HandleFunc("POST /v1/hosts/{name}/remove", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		wait, _ := strconv.ParseBool(r.URL.Query().Get("wait"))
		res, err := rm.RemoveHost(r.Context(), name)
		if err != nil {
			writeError(w, err)
			return
		}
		if wait && res.State != RemoveStateRemoved {
			if err := rm.RemoveHostDone(r.Context(), name); err != nil {
				writeError(w, err)
				return
			}
			res.State, res.Message = RemoveStateRemoved, "removed: its instance is out of the placement, every shard is AVAILABLE, its records are gone"
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// RemoveHost asks the daemon to remove host name, which is gone for good,
// from the cluster. With wait it returns only once the host is removed
// (or the removal failed) — as long as M3 needs to stream the host's
// shards from the other replicas, so no client timeout applies; bound it
// with ctx.
func (c *Client) RemoveHost(ctx context.Context, name string, wait bool) (RemoveHostResult, error) {
	path := "/v1/hosts/" + url.PathEscape(name) + "/remove"
	if wait {
		path += "?wait=true"
	}
	// Without wait the call still removes an etcd member after checking
	// every voter's health: no client timeout either.
	resp, err := c.send(ctx, http.MethodPost, path, nil, false)
	if err != nil {
		return RemoveHostResult{}, err
	}
	defer resp.Body.Close()
	var out RemoveHostResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return RemoveHostResult{}, fmt.Errorf("decode %s: %w", path, err)
	}
	return out, nil
}
