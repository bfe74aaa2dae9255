package join_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/join"
)

// TestResume: a host with cluster.json is a joined host even without
// --join; a cluster.json without a join URL is an error, none is nothing.
func TestResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.json")
	if u, err := join.Resume(path, zap.NewNop()); err != nil || u != "" {
		t.Fatalf("no cluster.json: %v, join %q", err, u)
	}
	if err := os.WriteFile(path, []byte(`{"joinURL":"https://10.0.0.1:7443","role":"voter"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := join.Resume(path, zap.NewNop()); err != nil || u != "https://10.0.0.1:7443" {
		t.Fatalf("cluster.json: %v, join %q", err, u)
	}
	if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := join.Resume(path, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "no join URL") {
		t.Fatalf("cluster.json without a URL: %v", err)
	}
}

// TestClusterFileRoundTrip: what WriteClusterFile writes (0600) reads back
// the same; a missing file is os.ErrNotExist.
func TestClusterFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.json")
	if _, err := join.ReadClusterFile(path); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
	cf := join.ClusterFile{JoinURL: "https://10.0.0.1:7443", Role: join.RoleVoter, MemberID: 1 << 63,
		InitialCluster: "a=https://10.0.0.1:2380", Endpoints: []string{"https://10.0.0.1:2379"}}
	if err := join.WriteClusterFile(path, cf); err != nil {
		t.Fatal(err)
	}
	got, err := join.ReadClusterFile(path)
	if err != nil || got.JoinURL != cf.JoinURL || got.Role != cf.Role || got.MemberID != cf.MemberID ||
		got.InitialCluster != cf.InitialCluster || len(got.Endpoints) != 1 || got.Endpoints[0] != cf.Endpoints[0] {
		t.Fatalf("read back %+v, %v; wrote %+v", got, err, cf)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
}

// retryRig is a Joiner against a join endpoint over real TLS whose first
// refuse503 requests are answered 503 "another host is joining", on a
// fake clock that only the Joiner's waits move.
type retryRig struct {
	c        *cluster
	requests atomic.Int32
	now      time.Time
	waits    []time.Duration
	progress []string
	j        *join.Joiner
}

func newRetryRig(t *testing.T, refuse503 int32, token string) *retryRig {
	t.Helper()
	c := newCluster(t)
	r := &retryRig{c: c, now: time.Date(2026, 12, 4, 10, 32, 1, 0, time.UTC)}
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, LookupHost: fakeDNS})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.requests.Add(1) <= refuse503 {
			http.Error(w, "another host is joining (etcd learner 65 (not started) is not promoted yet; etcd admits one at a time); retry in a few seconds", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, req)
	}), cfg, &calls)
	if token == "" {
		token = c.token(t, time.Hour).Encode()
	}
	dir := t.TempDir()
	r.j = &join.Joiner{URL: srv.URL, Token: token, NodeName: "node-2", Advertise: "127.0.0.2",
		EtcdURLs:    func() (string, string, error) { return "https://127.0.0.2:2379", "https://127.0.0.2:2380", nil },
		PKIDir:      filepath.Join(dir, "pki"),
		ClusterFile: filepath.Join(dir, "cluster.json"),
		Logger:      zap.NewNop(),
		Timeout:     time.Minute,
		Progress:    func(msg string) { r.progress = append(r.progress, msg) },
		Now:         func() time.Time { return r.now },
		Rand:        func() float64 { return 0.5 },
		Wait: func(ctx context.Context, d time.Duration) error {
			r.waits = append(r.waits, d)
			r.now = r.now.Add(d)
			return ctx.Err()
		}}
	return r
}

// TestJoinerWaitsItsTurn: answered 503 "another host is joining" twice,
// the Joiner waits 0.75 s, then 1.5 s (equal jitter around 1 s doubling),
// saying why and until when, and joins at the third attempt.
func TestJoinerWaitsItsTurn(t *testing.T) {
	r := newRetryRig(t, 2, "")
	if err := r.j.Join(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := r.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if fmt.Sprint(r.waits) != "[750ms 1.5s]" {
		t.Errorf("waits %v, want [750ms 1.5s]", r.waits)
	}
	want := []string{
		"join refused: another host is joining; retrying in 800ms (attempt 1, gives up at 10:33:01)",
		"join refused: another host is joining; retrying in 1.5s (attempt 2, gives up at 10:33:01)",
	}
	if !slices.Equal(r.progress, want) {
		t.Errorf("progress %q, want %q", r.progress, want)
	}
	cf, err := join.ReadClusterFile(r.j.ClusterFile)
	if err != nil || cf.Role != join.RoleVoter || cf.MemberID != 101 {
		t.Fatalf("cluster file %+v, %v", cf, err)
	}
}

// TestJoinerPermanentRefusal: a refused token is not retried: one
// request, no wait, ErrRefused, nothing written.
func TestJoinerPermanentRefusal(t *testing.T) {
	r := newRetryRig(t, 0, "")
	tok, err := join.ParseToken(r.j.Token)
	if err != nil {
		t.Fatal(err)
	}
	r.j.Token = join.Token{CAHash: tok.CAHash, ID: tok.ID, Secret: strings.Repeat("a", len(tok.Secret))}.Encode()
	err = r.j.Join(testCtx(t))
	if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "invalid token") {
		t.Fatalf("bad token: %v", err)
	}
	if n := r.requests.Load(); n != 1 || len(r.waits) != 0 || len(r.progress) != 0 {
		t.Errorf("%d requests, waits %v, progress %q; want 1 request and no wait", n, r.waits, r.progress)
	}
	if _, err := os.Stat(r.j.ClusterFile); !os.IsNotExist(err) {
		t.Errorf("a refused join wrote %s: %v", r.j.ClusterFile, err)
	}
}

// TestJoinerGivesUp: refused for now at every attempt, the Joiner stops
// before an attempt would start after Timeout, naming the setting and the
// last refusal; a cancelled context ends the wait at once.
func TestJoinerGivesUp(t *testing.T) {
	r := newRetryRig(t, 1000, "")
	err := r.j.Join(testCtx(t))
	var se *join.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "cluster.joinTimeout 1m0s") {
		t.Fatalf("err %v; want the last 503 and the setting", err)
	}
	var total time.Duration
	for _, w := range r.waits {
		total += w
	}
	if n := r.requests.Load(); n != 9 || total != 56250*time.Millisecond {
		t.Errorf("%d requests over %v (waits %v); want 9 over 56.25s", n, total, r.waits)
	}
	if _, err := os.Stat(r.j.ClusterFile); !os.IsNotExist(err) {
		t.Errorf("a failed join wrote %s: %v", r.j.ClusterFile, err)
	}

	r = newRetryRig(t, 1000, "")
	ctx, cancel := context.WithCancel(testCtx(t))
	r.j.Wait = func(ctx context.Context, d time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	if err := r.j.Join(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
