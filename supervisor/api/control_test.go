package api_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/logrotate"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// fakeController records what the server asked of it.
type fakeController struct {
	doc      api.ClusterDoc
	applied  []api.ClusterDoc
	dryRuns  int
	applyErr error
	controls []string
	logPath  string
}

func (f *fakeController) Cluster(context.Context) (api.ClusterDoc, error) { return f.doc, nil }

func (f *fakeController) ApplyCluster(_ context.Context, doc api.ClusterDoc, dry bool) (api.ApplyResult, error) {
	if f.applyErr != nil {
		return api.ApplyResult{}, f.applyErr
	}
	if dry {
		f.dryRuns++
		return api.ApplyResult{Changes: []string{"x"}, Restarts: []string{"m3coordinator"}}, nil
	}
	f.applied = append(f.applied, doc)
	return api.ApplyResult{Applied: true, Revision: doc.Revision + 1, Changes: []string{"x"}}, nil
}

func (f *fakeController) Control(_ context.Context, c, action string) (api.ControlResult, error) {
	if c != "m3dbnode" {
		return api.ControlResult{}, api.Errorf(api.ErrNotFound, "no component %q", c)
	}
	f.controls = append(f.controls, c+"/"+action)
	return api.ControlResult{Component: c, Control: spec.Control{RestartGeneration: 1}}, nil
}

func (f *fakeController) LogPath(c string) (string, error) {
	if c != "m3dbnode" {
		return "", api.Errorf(api.ErrNotFound, "no component %q", c)
	}
	return f.logPath, nil
}

func serveControl(t *testing.T, c api.Controller) *api.Client {
	t.Helper()
	path := filepath.Join(shortDir(t), "m3sup.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(api.Handlers{Provider: &fakeProvider{}, Controller: c}, zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return api.NewClient(path)
}

func TestApplyRoundTrip(t *testing.T) {
	fc := &fakeController{doc: api.ClusterDoc{Revision: 7}}
	c := serveControl(t, fc)
	ctx := context.Background()
	doc, err := c.Cluster(ctx)
	if err != nil || doc.Revision != 7 {
		t.Fatalf("Cluster: %+v, %v", doc, err)
	}
	res, err := c.ApplyCluster(ctx, doc, true)
	if err != nil || fc.dryRuns != 1 || len(fc.applied) != 0 || res.Restarts[0] != "m3coordinator" {
		t.Fatalf("dry run: %+v, %v (applied %d)", res, err, len(fc.applied))
	}
	res, err = c.ApplyCluster(ctx, doc, false)
	if err != nil || !res.Applied || len(fc.applied) != 1 || fc.applied[0].Revision != 7 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
}

func TestApplyErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		kind error
	}{{api.ErrInvalid}, {api.ErrConflict}, {api.ErrNotFound}} {
		fc := &fakeController{applyErr: api.Errorf(tc.kind, "m3.numShards: must be between 1 and 4096")}
		c := serveControl(t, fc)
		_, err := c.ApplyCluster(context.Background(), api.ClusterDoc{}, false)
		if !errors.Is(err, tc.kind) {
			t.Fatalf("want %v, got %v", tc.kind, err)
		}
		if err.Error() != "m3.numShards: must be between 1 and 4096" {
			t.Fatalf("message not passed through verbatim: %q", err)
		}
	}
}

func TestControlAndLogs(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "m3dbnode.log")
	var lines []string
	for i := range 50 {
		lines = append(lines, "line "+strings.Repeat("x", i%7)+string(rune('a'+i%26)))
	}
	if err := os.WriteFile(logPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fc := &fakeController{logPath: logPath}
	c := serveControl(t, fc)
	ctx := context.Background()
	if _, err := c.Control(ctx, "m3dbnode", "restart"); err != nil || fc.controls[0] != "m3dbnode/restart" {
		t.Fatalf("control: %v %v", err, fc.controls)
	}
	if _, err := c.Control(ctx, "nope", "stop"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown component: %v", err)
	}
	if _, err := c.Control(ctx, "m3dbnode", "explode"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown action: %v", err)
	}
	for _, n := range []int{0, 1, 5, 50, 80} {
		var buf bytes.Buffer
		if err := c.Logs(ctx, &buf, "m3dbnode", n, false); err != nil {
			t.Fatal(err)
		}
		want := lines[max(0, len(lines)-n):]
		got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if n == 0 {
			if buf.Len() != 0 {
				t.Fatalf("tail 0 printed %q", buf.String())
			}
			continue
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("tail %d: got %d lines %q…", n, len(got), got[0])
		}
	}
	var all bytes.Buffer
	if err := c.Logs(ctx, &all, "m3dbnode", -1, false); err != nil || strings.Count(all.String(), "\n") != 50 {
		t.Fatalf("whole log: %v, %d lines", err, strings.Count(all.String(), "\n"))
	}

	// Follow: lines appended after the call arrive; cancelling ends it.
	fctx, cancel := context.WithCancel(ctx)
	r, w := newPipe()
	done := make(chan error, 1)
	go func() { done <- c.Logs(fctx, w, "m3dbnode", 1, true); w.Close() }()
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("appended later\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !r.waitFor("appended later", 5*time.Second) {
		t.Fatalf("follow did not deliver the new line; got %q", r.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow after cancel: %v", err)
	}
}

// pipeBuf is a writer the test can wait on.
type pipeBuf struct {
	ch  chan string
	buf strings.Builder
}

func newPipe() (*pipeBuf, *pipeBuf) { p := &pipeBuf{ch: make(chan string, 100)}; return p, p }

func (p *pipeBuf) Write(b []byte) (int, error) { p.ch <- string(b); return len(b), nil }
func (p *pipeBuf) Close() error                { return nil }
func (p *pipeBuf) String() string              { return p.buf.String() }

func (p *pipeBuf) waitFor(s string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case chunk := <-p.ch:
			p.buf.WriteString(chunk)
			if strings.Contains(p.buf.String(), s) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// TestLogsAcrossRotation: `logs --tail` reaches into the newest rotated
// file when the live one was just rotated, and `logs -f` started before a
// rotation prints what comes after it, once.
func TestLogsAcrossRotation(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "m3dbnode.log")
	out, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644) // as the shim holds it
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	write := func(s string) {
		t.Helper()
		if _, err := out.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("one\ntwo\nthree\n")
	c := serveControl(t, &fakeController{logPath: logPath})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := newPipe()
	done := make(chan error, 1)
	go func() { done <- c.Logs(ctx, w, "m3dbnode", 1, true) }()
	if !r.waitFor("three\n", 5*time.Second) {
		t.Fatalf("follow: no tail; got %q", r.String())
	}
	write("four\n")
	if !r.waitFor("four\n", 5*time.Second) {
		t.Fatalf("follow: no new line; got %q", r.String())
	}
	write("five\n")
	if _, err := logrotate.Rotate(logPath, logrotate.Policy{MaxSize: 1, MaxFiles: 3}); err != nil {
		t.Fatal(err)
	}
	write("six\n")
	if !r.waitFor("six\n", 5*time.Second) {
		t.Fatalf("follow across a rotation: got %q", r.String())
	}
	if got := r.String(); got != "three\nfour\nfive\nsix\n" {
		t.Fatalf("follow across a rotation printed %q, want each line once in order", got)
	}
	cancel()
	<-done

	for _, tc := range []struct {
		tail int
		want string
	}{
		{1, "six\n"},
		{3, "four\nfive\nsix\n"},
		{-1, "one\ntwo\nthree\nfour\nfive\nsix\n"},
	} {
		var buf bytes.Buffer
		if err := c.Logs(context.Background(), &buf, "m3dbnode", tc.tail, false); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tc.want {
			t.Errorf("tail %d after a rotation = %q, want %q", tc.tail, buf.String(), tc.want)
		}
	}
}
