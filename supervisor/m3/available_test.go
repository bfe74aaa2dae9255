package m3

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAllAvailable: the one "is every shard AVAILABLE?" check says why not.
func TestAllAvailable(t *testing.T) {
	ctx := context.Background()
	nf := &stub{status: 404, body: `{"status":"error","error":"placement does not exist"}`}
	if err := nf.client(t).AllAvailable(ctx); !errors.Is(err, ErrNoPlacement) || !errors.Is(err, ErrShardsMoving) {
		t.Errorf("no placement: %v", err)
	}
	moving := &stub{status: 200, body: placementJSON} // one AVAILABLE, one INITIALIZING
	err := moving.client(t).AllAvailable(ctx)
	if !errors.Is(err, ErrShardsMoving) || errors.Is(err, ErrNoPlacement) || !strings.Contains(err.Error(), "1 AVAILABLE, 1 INITIALIZING") {
		t.Errorf("shards moving: %v", err)
	}
	avail := &stub{status: 200, body: strings.ReplaceAll(placementJSON, ShardInitializing, ShardAvailable)}
	if err := avail.client(t).AllAvailable(ctx); err != nil {
		t.Errorf("every shard AVAILABLE: %v", err)
	}
	bad := &stub{status: 500, body: `{"status":"error","error":"etcd"}`}
	if err := bad.client(t).AllAvailable(ctx); err == nil || errors.Is(err, ErrShardsMoving) {
		t.Errorf("read error: %v", err)
	}
}

// TestWaitAllAvailable: the wait returns once the check passes (or, when
// allowed, once there is no placement), else when ctx ends.
func TestWaitAllAvailable(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := placementJSON
		if calls.Add(1) >= 3 {
			body = strings.ReplaceAll(placementJSON, ShardInitializing, ShardAvailable)
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL}
	if err := c.WaitAllAvailable(context.Background(), time.Millisecond, false); err != nil || calls.Load() != 3 {
		t.Fatalf("wait: %v after %d looks, want nil after 3", err, calls.Load())
	}

	nf := &stub{status: 404, body: `{"status":"error","error":"placement does not exist"}`}
	if err := nf.client(t).WaitAllAvailable(context.Background(), time.Millisecond, true); err != nil {
		t.Fatalf("no placement, allowed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := nf.client(t).WaitAllAvailable(ctx, time.Millisecond, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no placement, not allowed: %v", err)
	}
}

func TestCoordinatorWritable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		body   string
		wantOK bool
	}{
		{"every namespace writable", 200, `{"readyReads":[{"id":"default"}],"readyWrites":[{"id":"default"}]}`, true},
		{"session not yet initialised: no namespaces", 200, `{}`, false},
		{"one namespace not writable", 200, `{"readyWrites":[{"id":"a"}],"notReadyWrites":[{"id":"b"}]}`, false},
		{"error", 500, `{"error":"M3DB session not yet initialized"}`, false},
	} {
		s := &stub{status: tc.code, body: tc.body}
		err := s.client(t).CoordinatorWritable(context.Background())
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: err %v, want ok %t", tc.name, err, tc.wantOK)
		}
		if s.path != "/ready" {
			t.Errorf("%s: asked %s, want /ready", tc.name, s.path)
		}
	}
}
