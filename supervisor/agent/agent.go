// Package agent keeps this host's M3 components running: it adopts or
// replaces containers left by an earlier m3sup, starts what is missing,
// observes exits through the runtime's Wait and restarts crashed components
// with backoff. It decides; the runtime does.
package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/restart"
)

// Runtime is what the agent needs from a container runtime.
type Runtime interface {
	Run(ctx context.Context, spec runtime.Spec) (runtime.Status, error)
	Wait(ctx context.Context, id string) (<-chan runtime.Exit, error)
	Stop(ctx context.Context, id string, timeout time.Duration) (runtime.Exit, error)
	Remove(ctx context.Context, id string) error
	List(ctx context.Context) ([]runtime.Status, error)
}

// Component is one process this host must run.
type Component struct {
	Name        string        // "m3dbnode", "m3coordinator"
	Version     string        // release version, for status
	Spec        runtime.Spec  // container spec; Spec.Labels get owner/component/hash added
	Hash        string        // hash of everything that shapes the container
	StopTimeout time.Duration // SIGTERM → SIGKILL
	Listen      []string      // host:port addresses it binds, checked before a fresh start
}

// State is a component's lifecycle state.
//
//	            Run ok                exit (unplanned)
//	starting ───────────► running ─────────────────► backoff ──┐
//	   ▲                    │  ▲                      │ delay   │ ≥N quick exits
//	   └────────────────────┼──┼──────────────────────┘         ▼
//	                        │  └── adopted at start         crash-loop ──► starting
//	          shutdown      ▼
//	                     stopping ──► stopped
type State string

const (
	StateStarting  State = "starting"
	StateRunning   State = "running"
	StateBackoff   State = "backoff"
	StateCrashLoop State = "crash-loop"
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"
)

// Exit describes the last exit of a component.
type Exit struct {
	Code uint32    `json:"code"`
	At   time.Time `json:"at"`
}

// Status is the observable state of one component.
type Status struct {
	Name       string    `json:"name"`
	State      State     `json:"state"`
	PID        uint32    `json:"pid,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	Restarts   int       `json:"restarts"`
	Version    string    `json:"version"`
	Adopted    bool      `json:"adopted"`
	SpecHash   string    `json:"specHash"`
	LastExit   *Exit     `json:"lastExit,omitempty"`
	Message    string    `json:"message,omitempty"`
	LogTail    []string  `json:"logTail,omitempty"`
	NextStart  time.Time `json:"nextStart,omitzero"`
	StateSince time.Time `json:"stateSince"`
}

// Options configures an Agent.
type Options struct {
	Logger *zap.Logger
	// KeepRunning leaves containers running when the agent stops, so a later
	// m3sup adopts them (systemd KillMode=process style upgrades).
	KeepRunning bool
	// Policy is the restart policy; zero fields take defaults.
	Policy restart.Policy
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// OnChange is called (without locks held) after any status change.
	OnChange func(Status)
}

// Agent runs a set of components. Create with New; Run once.
type Agent struct {
	rt   Runtime
	opts Options
	log  *zap.Logger

	mu     sync.Mutex
	status map[string]*Status
}

// New returns an agent over rt.
func New(rt Runtime, opts Options) *Agent {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Agent{rt: rt, opts: opts, log: opts.Logger, status: map[string]*Status{}}
}

// Statuses returns a copy of every component's status, sorted by name.
func (a *Agent) Statuses() []Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Status, 0, len(a.status))
	for _, s := range a.status {
		c := *s
		c.LogTail = append([]string(nil), s.LogTail...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status returns one component's status.
func (a *Agent) Status(name string) (Status, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.status[name]
	if !ok {
		return Status{}, false
	}
	return *s, true
}

func (a *Agent) update(name string, f func(*Status)) {
	a.mu.Lock()
	s := a.status[name]
	prev := s.State
	f(s)
	if s.State != prev {
		s.StateSince = a.opts.Now()
	}
	c := *s
	a.mu.Unlock()
	if a.opts.OnChange != nil {
		a.opts.OnChange(c)
	}
}

// Run reconciles the containers with comps and keeps them running until ctx
// is done; then it stops them (unless KeepRunning) and returns. It returns an
// error early only for problems a restart cannot fix (a port held by another
// process, a runtime that cannot list containers).
func (a *Agent) Run(ctx context.Context, comps []Component) error {
	for i := range comps {
		c := &comps[i]
		if c.Spec.Labels == nil {
			c.Spec.Labels = map[string]string{}
		}
		c.Spec.Labels[runtime.LabelOwner] = runtime.OwnerValue
		c.Spec.Labels[runtime.LabelComponent] = c.Name
		c.Spec.Labels[runtime.LabelSpecHash] = c.Hash
		c.Spec.Labels[runtime.LabelVersion] = c.Version
		a.mu.Lock()
		a.status[c.Name] = &Status{Name: c.Name, State: StateStarting, Version: c.Version, SpecHash: c.Hash, StateSince: a.opts.Now()}
		a.mu.Unlock()
	}
	adopted, err := a.adopt(ctx, comps)
	if err != nil {
		return err
	}
	for _, c := range comps {
		if _, ok := adopted[c.Name]; ok {
			continue
		}
		for _, addr := range c.Listen {
			if err := checkPortFree(addr); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
		}
	}

	var wg sync.WaitGroup
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, ok := adopted[c.Name]
			a.runComponent(ctx, c, st, ok)
		}()
	}
	wg.Wait()
	return nil
}

// adopt inspects the containers an earlier m3sup left: a running container
// whose spec hash matches is taken over; every other m3sup container is
// removed, so no component ever has two containers.
func (a *Agent) adopt(ctx context.Context, comps []Component) (map[string]runtime.Status, error) {
	list, err := a.rt.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	byName := map[string]Component{}
	for _, c := range comps {
		byName[c.Name] = c
	}
	adopted := map[string]runtime.Status{}
	for _, st := range list {
		if st.Labels[runtime.LabelOwner] != runtime.OwnerValue {
			a.log.Warn("ignoring container not created by m3sup", zap.String("container", st.ID))
			continue
		}
		name := st.Labels[runtime.LabelComponent]
		c, known := byName[name]
		switch {
		case !known:
			a.log.Info("removing container that belongs to no component", zap.String("container", st.ID), zap.String("component", name))
		case st.ID != c.Spec.ID:
			a.log.Info("removing container with an unexpected id", zap.String("container", st.ID), zap.String("component", name))
		case st.Labels[runtime.LabelSpecHash] != c.Hash:
			a.log.Info("replacing container: its spec changed", zap.String("component", name),
				zap.String("old", short(st.Labels[runtime.LabelSpecHash])), zap.String("new", short(c.Hash)))
		case st.State != runtime.StateRunning:
			a.log.Info("replacing container: its task is not running", zap.String("component", name), zap.String("state", string(st.State)))
		default:
			a.log.Info("adopted running container", zap.String("component", name), zap.Uint32("pid", st.PID))
			adopted[name] = st
			continue
		}
		stopTimeout := 10 * time.Second
		if known {
			stopTimeout = c.StopTimeout
		}
		if _, err := a.rt.Stop(ctx, st.ID, stopTimeout); err != nil {
			return nil, fmt.Errorf("remove stale container %s: %w", st.ID, err)
		}
	}
	return adopted, nil
}

func (a *Agent) runComponent(ctx context.Context, c Component, adopted runtime.Status, isAdopted bool) {
	log := a.log.With(zap.String("component", c.Name))
	tr := restart.NewTracker(a.opts.Policy)
	var exitCh <-chan runtime.Exit
	waitCtx, cancelWait := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWait()

	if isAdopted {
		ch, err := a.rt.Wait(waitCtx, c.Spec.ID)
		if err == nil {
			exitCh = ch
			tr.Started(a.opts.Now())
			a.update(c.Name, func(s *Status) {
				s.State, s.PID, s.Adopted, s.StartedAt, s.Message = StateRunning, adopted.PID, true, a.opts.Now(), "adopted from an earlier m3sup"
			})
		} else {
			log.Warn("cannot watch adopted container; replacing it", zap.Error(err))
			_ = a.rt.Remove(ctx, c.Spec.ID)
		}
	}

	for {
		if exitCh == nil {
			if ctx.Err() != nil {
				break
			}
			a.update(c.Name, func(s *Status) { s.State, s.NextStart, s.Adopted = StateStarting, time.Time{}, false })
			st, err := a.rt.Run(ctx, c.Spec)
			if err == nil {
				exitCh, err = a.rt.Wait(waitCtx, c.Spec.ID)
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				_ = a.rt.Remove(context.WithoutCancel(ctx), c.Spec.ID)
				d := tr.Exited(a.opts.Now())
				log.Error("start failed", zap.Error(err), zap.Duration("retry_in", d.Delay))
				a.enterBackoff(c.Name, d, fmt.Sprintf("start failed: %v", err), nil)
				if !sleepCtx(ctx, d.Delay) {
					break
				}
				continue
			}
			tr.Started(a.opts.Now())
			log.Info("started", zap.Uint32("pid", st.PID))
			a.update(c.Name, func(s *Status) {
				s.State, s.PID, s.StartedAt, s.Message = StateRunning, st.PID, a.opts.Now(), ""
			})
		}

		select {
		case <-ctx.Done():
		case ex := <-exitCh:
			exitCh = nil
			if ctx.Err() != nil {
				break
			}
			if ex.Err != nil {
				log.Warn("lost track of the process; checking again", zap.Error(ex.Err))
			}
			tail := tailLines(c.Spec.LogPath, 20)
			_ = a.rt.Remove(context.WithoutCancel(ctx), c.Spec.ID)
			d := tr.Exited(a.opts.Now())
			msg := fmt.Sprintf("exited with code %d", ex.Code)
			log.Error(fmt.Sprintf("%s %s; restarting in %s (attempt %d); last log lines:\n  %s",
				c.Name, msg, d.Delay.Round(time.Millisecond), d.Attempt, strings.Join(tail, "\n  ")))
			a.enterBackoff(c.Name, d, msg, &Exit{Code: ex.Code, At: ex.At})
			a.update(c.Name, func(s *Status) { s.LogTail = tail })
			if !sleepCtx(ctx, d.Delay) {
				break
			}
			continue
		}
		break
	}

	// Shutdown.
	if a.opts.KeepRunning {
		log.Info("leaving container running for the next m3sup")
		a.update(c.Name, func(s *Status) { s.State, s.Message = StateStopped, "left running" })
		return
	}
	a.update(c.Name, func(s *Status) { s.State = StateStopping })
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.StopTimeout+10*time.Second)
	defer cancel()
	ex, err := a.rt.Stop(stopCtx, c.Spec.ID, c.StopTimeout)
	if err != nil {
		log.Error("stop failed", zap.Error(err))
	} else {
		log.Info("stopped", zap.Uint32("exit_code", ex.Code))
	}
	a.update(c.Name, func(s *Status) { s.State, s.PID = StateStopped, 0 })
}

func (a *Agent) enterBackoff(name string, d restart.Decision, msg string, ex *Exit) {
	a.update(name, func(s *Status) {
		s.State = StateBackoff
		if d.CrashLoop {
			s.State = StateCrashLoop
		}
		s.PID = 0
		s.Restarts++
		s.Message = msg
		s.NextStart = a.opts.Now().Add(d.Delay)
		if ex != nil {
			s.LastExit = ex
		}
	})
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// tailLines returns up to n last lines of a log file.
func tailLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(fi.Size()-window, io.SeekStart)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return lines
}

// checkPortFree reports a listen address already held by another process.
func checkPortFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("address %s is already in use by another process", addr)
		}
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l.Close()
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
