package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/m3sup/m3sup/runtime"
)

// signal wakes every waiter on each poke: poke closes the current channel
// and replaces it, so a waiter that took the channel before checking its
// condition cannot miss an event.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) poke() {
	s.mu.Lock()
	close(s.ch)
	s.ch = make(chan struct{})
	s.mu.Unlock()
}

// waitLimit bounds every wait in these tests; nothing normally takes more
// than a few milliseconds.
const waitLimit = 5 * time.Second

// waitFor returns once cond holds, re-checking it on every poke of sig (and
// on a short tick, for state that changes without a poke); it fails the test
// after waitLimit.
func waitFor(t testing.TB, sig *signal, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		ch := sig.wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		}
	}
}

// call is one recorded Runtime call.
type call struct {
	Op      string // "run", "wait", "stop", "remove", "list"
	ID      string
	Labels  map[string]string // run: the container's labels
	Timeout time.Duration     // stop
}

func (c call) String() string { return c.Op + " " + c.ID }

type fakeCtr struct {
	st      runtime.Status
	exit    *runtime.Exit
	waiters map[chan runtime.Exit]func() bool // channel → stop its AfterFunc
}

// fakeRuntime is an in-memory Runtime. It behaves like the containerd one
// where the agent can tell (Run of an existing ID fails, Wait delivers at
// once for an exited task, Stop and Remove delete the container and tolerate
// a missing one) and lets a test crash tasks, fail Runs and seed containers.
// Every call is recorded and pokes sig.
type fakeRuntime struct {
	sig *signal

	mu      sync.Mutex
	pid     uint32
	ctrs    map[string]*fakeCtr
	calls   []call
	runErrs map[string][]error
	listErr error
}

func newFakeRuntime(sig *signal) *fakeRuntime {
	return &fakeRuntime{sig: sig, pid: 1000, ctrs: map[string]*fakeCtr{}, runErrs: map[string][]error{}}
}

var _ Runtime = (*fakeRuntime)(nil)

func (f *fakeRuntime) record(c call) {
	f.calls = append(f.calls, c)
}

func (f *fakeRuntime) Run(ctx context.Context, spec runtime.Spec) (runtime.Status, error) {
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	labels := make(map[string]string, len(spec.Labels))
	for k, v := range spec.Labels {
		labels[k] = v
	}
	f.record(call{Op: "run", ID: spec.ID, Labels: labels})
	if errs := f.runErrs[spec.ID]; len(errs) > 0 {
		f.runErrs[spec.ID] = errs[1:]
		return runtime.Status{}, errs[0]
	}
	if _, ok := f.ctrs[spec.ID]; ok {
		return runtime.Status{}, fmt.Errorf("run %s: container already exists", spec.ID)
	}
	f.pid++
	st := runtime.Status{ID: spec.ID, Labels: labels, State: runtime.StateRunning, PID: f.pid}
	f.ctrs[spec.ID] = &fakeCtr{st: st, waiters: map[chan runtime.Exit]func() bool{}}
	return st, nil
}

func (f *fakeRuntime) Wait(ctx context.Context, id string) (<-chan runtime.Exit, error) {
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{Op: "wait", ID: id})
	c, ok := f.ctrs[id]
	if !ok {
		return nil, fmt.Errorf("wait for %s: %w", id, runtime.ErrNotFound)
	}
	ch := make(chan runtime.Exit, 1)
	if c.exit != nil {
		ch <- *c.exit
		close(ch)
		return ch, nil
	}
	// Like the real runtime, a done ctx ends the wait with Err set.
	c.waiters[ch] = context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := c.waiters[ch]; ok {
			delete(c.waiters, ch)
			ch <- runtime.Exit{Err: ctx.Err()}
			close(ch)
		}
	})
	return ch, nil
}

// exitLocked ends c's task with code and tells its waiters.
func (f *fakeRuntime) exitLocked(c *fakeCtr, code uint32) runtime.Exit {
	if c.exit != nil {
		return *c.exit
	}
	ex := runtime.Exit{Code: code, At: time.Unix(1_700_000_000, 0)}
	c.exit = &ex
	c.st.State, c.st.ExitCode, c.st.ExitedAt = runtime.StateStopped, code, ex.At
	for ch, stop := range c.waiters {
		stop()
		delete(c.waiters, ch)
		ch <- ex
		close(ch)
	}
	return ex
}

func (f *fakeRuntime) Stop(ctx context.Context, id string, timeout time.Duration) (runtime.Exit, error) {
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{Op: "stop", ID: id, Timeout: timeout})
	c, ok := f.ctrs[id]
	if !ok {
		return runtime.Exit{}, nil
	}
	ex := f.exitLocked(c, 143) // SIGTERM
	delete(f.ctrs, id)
	return ex, nil
}

func (f *fakeRuntime) Remove(ctx context.Context, id string) error {
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{Op: "remove", ID: id})
	if c, ok := f.ctrs[id]; ok {
		f.exitLocked(c, 137) // SIGKILL
		delete(f.ctrs, id)
	}
	return nil
}

func (f *fakeRuntime) List(ctx context.Context) ([]runtime.Status, error) {
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{Op: "list"})
	if f.listErr != nil {
		return nil, f.listErr
	}
	out := make([]runtime.Status, 0, len(f.ctrs))
	for _, c := range f.ctrs {
		out = append(out, c.st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Test controls.

// seed adds a container an earlier m3sup left behind.
func (f *fakeRuntime) seed(st runtime.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &fakeCtr{st: st, waiters: map[chan runtime.Exit]func() bool{}}
	if st.State != runtime.StateRunning {
		c.exit = &runtime.Exit{Code: st.ExitCode, At: st.ExitedAt}
	}
	f.ctrs[st.ID] = c
}

// crash makes id's running task exit with code, as if the process died.
// The container stays until the agent removes it.
func (f *fakeRuntime) crash(t testing.TB, id string, code uint32) {
	t.Helper()
	defer f.sig.poke()
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok || c.exit != nil {
		t.Fatalf("crash %s: no running task", id)
	}
	f.exitLocked(c, code)
}

// failRun makes the next len(errs) Runs of id fail with errs, in order.
func (f *fakeRuntime) failRun(id string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runErrs[id] = append(f.runErrs[id], errs...)
}

// mark returns the number of calls so far, for since.
func (f *fakeRuntime) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// since returns the calls for id (every id if "") recorded after mark m.
func (f *fakeRuntime) since(m int, id string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls[m:] {
		if id == "" || c.ID == id {
			out = append(out, c)
		}
	}
	return out
}

// ops returns the operations of calls, "op id" each, for comparisons.
func ops(calls []call) []string {
	out := make([]string, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.String())
	}
	return out
}

// count returns how many op calls id got (every id if "").
func (f *fakeRuntime) count(op, id string) int {
	n := 0
	for _, c := range f.since(0, id) {
		if c.Op == op {
			n++
		}
	}
	return n
}

// pidOf returns the PID of id's current container (0 if none runs).
func (f *fakeRuntime) pidOf(id string) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.ctrs[id]; ok && c.exit == nil {
		return c.st.PID
	}
	return 0
}

func (f *fakeRuntime) exists(id string) bool {
	_, ok := f.container(id)
	return ok
}

// container returns id's container status, running or not.
func (f *fakeRuntime) container(id string) (runtime.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if !ok {
		return runtime.Status{}, false
	}
	return c.st, true
}

// waiting reports whether anyone waits on id's task (the agent watches it).
func (f *fakeRuntime) waiting(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	return ok && len(c.waiters) > 0
}

var errBoom = errors.New("boom")
