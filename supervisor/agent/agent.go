package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/logrotate"
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

// Component is the desired state of one process this host runs.
type Component struct {
	Name        string        // "m3dbnode", "m3coordinator"
	Version     string        // release version, for status
	Spec        runtime.Spec  // container spec; Spec.Labels get owner/component/hash added
	Hash        string        // hash of everything that shapes the container
	StopTimeout time.Duration // SIGTERM → SIGKILL
	Listen      []string      // host:port addresses it binds, checked before a fresh start

	// Stopped: the operator wants it stopped (m3sup stop).
	Stopped bool
	// RestartGeneration: a change asks for a restart (m3sup restart).
	RestartGeneration int64
	// Gate, if set, must return nil before a planned restart stops the
	// running process (m3dbnode: every shard AVAILABLE). It may block.
	Gate func(ctx context.Context) error
	// Healthy, if set, reports whether a started process serves (m3dbnode:
	// bootstrapped). The agent polls it after every start.
	Healthy func(ctx context.Context) error
	// Alive, if set, reports whether a started process still answers at
	// all (m3dbnode and m3coordinator: /health answers, bootstrapped or
	// not). The agent asks every Options.LiveInterval for as long as the
	// process runs. A process that answered once and then stays quiet for
	// UnhealthyAfter (zero: never) is restarted with reason "unhealthy";
	// one that never answered is still starting and is left alone (see
	// liveness).
	Alive          func(ctx context.Context) error
	UnhealthyAfter time.Duration
}

// State is a component's lifecycle state.
//
//	             Run ok              exit (unplanned)
//	starting ───────────► running ───────────────► backoff ──► starting
//	   ▲                   │   ▲                      │
//	   │   spec changed    │   └─ adopted at start    └─ ≥N quick exits: crash-loop
//	   │                   ▼
//	   └──── stopping ◄── waiting (gate: e.g. every shard AVAILABLE)
//	            │
//	            └──► stopped   (m3sup stop, or shutdown)
type State string

const (
	StateStarting  State = "starting"
	StateRunning   State = "running"
	StateBackoff   State = "backoff"
	StateCrashLoop State = "crash-loop"
	StateWaiting   State = "waiting"
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"
)

// States lists every State, for metrics.
var States = []State{StateStarting, StateRunning, StateBackoff, StateCrashLoop, StateWaiting, StateStopping, StateStopped}

// Restart reasons, for status and metrics.
const (
	ReasonCrash  = "crash"
	ReasonSpec   = "spec-change"
	ReasonManual = "manual"
	// ReasonUnhealthy: the process stopped answering its liveness probe
	// (Component.Alive) for Component.UnhealthyAfter; the agent killed it.
	ReasonUnhealthy = "unhealthy"
)

// Exit describes the last exit of a component.
type Exit struct {
	Code uint32    `json:"code"`
	At   time.Time `json:"at"`
	// Reason is one line a person can act on: for a Go crash the runtime's
	// panic, fatal error or signal line and the frame that crashed (see
	// Options.CrashReason), else the exit code and how the process ended.
	Reason string `json:"reason"`
	// LogTail is the last lines the process wrote before it exited.
	LogTail []string `json:"logTail,omitempty"`
}

// Status is the observable state of one component.
type Status struct {
	Name          string    `json:"name"`
	State         State     `json:"state"`
	Healthy       bool      `json:"healthy"`
	PID           uint32    `json:"pid,omitempty"`
	StartedAt     time.Time `json:"startedAt,omitzero"`
	Restarts      int       `json:"restarts"`
	LastReason    string    `json:"lastRestartReason,omitempty"`
	Version       string    `json:"version"`
	Adopted       bool      `json:"adopted"`
	SpecHash      string    `json:"specHash"`
	LastExit      *Exit     `json:"lastExit,omitempty"`
	Message       string    `json:"message,omitempty"`
	LogTail       []string  `json:"logTail,omitempty"`
	NextStart     time.Time `json:"nextStart,omitzero"`
	BackoffDelay  string    `json:"backoffDelay,omitempty"`
	StateSince    time.Time `json:"stateSince"`
	DesiredHash   string    `json:"desiredHash"`
	DesiredActive bool      `json:"desiredRunning"`
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
	// HealthInterval is how often Healthy is polled until it passes.
	HealthInterval time.Duration
	// LiveInterval is how often Alive is asked while a process runs
	// (default 2s); one probe waits at most min(LiveInterval, 3s).
	LiveInterval time.Duration
	// OnChange is called (without locks held) after any status change.
	OnChange func(Status)
	// OnRestart is called for every restart with its reason.
	OnRestart func(component, reason string)
	// CrashReason reads what one run of a component wrote (its log since
	// it started, across a rotation, at most the last crashWindow bytes:
	// logrotate.ReadSince) and returns one line
	// saying how it crashed, if it can tell; nil keeps exit codes only.
	CrashReason func(output []byte) (string, bool)
}

// crashWindow bounds how much of a run's log is read after an exit.
const crashWindow = 8 << 20

// Agent runs a fixed set of components. Create with New; Run once; Update
// any time while it runs.
type Agent struct {
	rt   Runtime
	opts Options
	log  *zap.Logger

	mu      sync.Mutex
	status  map[string]*Status
	mailbox map[string]chan Component
	// probed is when each component's loop last asked its process whether
	// it is alive (Observing).
	probed map[string]time.Time
}

// New returns an agent over rt.
func New(rt Runtime, opts Options) *Agent {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 250 * time.Millisecond
	}
	if opts.LiveInterval <= 0 {
		opts.LiveInterval = 2 * time.Second
	}
	return &Agent{rt: rt, opts: opts, log: opts.Logger, status: map[string]*Status{}, mailbox: map[string]chan Component{},
		probed: map[string]time.Time{}}
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

// Observing reports whether the agent still watches its components: every
// running component with a liveness probe (Component.Alive) was asked
// within stale of now. The error names the first that was not. A
// component that is not running, or entered running within stale, or
// waits for its restart gate (its loop is in the gate), is not counted.
// systemd's watchdog needs this as well as the daemon's own loop.
func (a *Agent) Observing(now time.Time, stale time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.probed))
	for name := range a.probed {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		st, at := a.status[name], a.probed[name]
		if st == nil || st.State != StateRunning || now.Sub(st.StateSince) < stale {
			continue
		}
		if since := now.Sub(at); since >= stale {
			return fmt.Errorf("%s has not been asked whether it is alive for %s", name, since.Round(time.Second))
		}
	}
	return nil
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

// Update hands the agent new desired components. It never blocks: a
// component's loop sees only the latest desired state. Names the agent does
// not run are ignored (and reported).
func (a *Agent) Update(comps []Component) error {
	var unknown []string
	for _, c := range comps {
		c = labelled(c)
		a.mu.Lock()
		box, ok := a.mailbox[c.Name]
		if ok {
			a.status[c.Name].DesiredHash = c.Hash
			a.status[c.Name].DesiredActive = !c.Stopped
		}
		a.mu.Unlock()
		if !ok {
			unknown = append(unknown, c.Name)
			continue
		}
		select {
		case <-box:
		default:
		}
		box <- c
	}
	if len(unknown) > 0 {
		return fmt.Errorf("update: unknown components %s", strings.Join(unknown, ", "))
	}
	return nil
}

func labelled(c Component) Component {
	labels := make(map[string]string, len(c.Spec.Labels)+4)
	for k, v := range c.Spec.Labels {
		labels[k] = v
	}
	labels[runtime.LabelOwner] = runtime.OwnerValue
	labels[runtime.LabelComponent] = c.Name
	labels[runtime.LabelSpecHash] = c.Hash
	labels[runtime.LabelVersion] = c.Version
	c.Spec.Labels = labels
	return c
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

// Run reconciles the containers with comps and keeps them converged until
// ctx is done; then it stops them (unless KeepRunning) and returns. It
// returns an error early only for problems a restart cannot fix (a port held
// by another process, a runtime that cannot list containers).
func (a *Agent) Run(ctx context.Context, comps []Component) error {
	for i := range comps {
		comps[i] = labelled(comps[i])
		c := comps[i]
		a.mu.Lock()
		a.status[c.Name] = &Status{Name: c.Name, State: StateStarting, Version: c.Version, SpecHash: c.Hash,
			StateSince: a.opts.Now(), DesiredHash: c.Hash, DesiredActive: !c.Stopped}
		a.mailbox[c.Name] = make(chan Component, 1)
		a.mu.Unlock()
	}
	adopted, err := a.adopt(ctx, comps)
	if err != nil {
		return err
	}
	for _, c := range comps {
		if _, ok := adopted[c.Name]; ok || c.Stopped {
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
		a.mu.Lock()
		box := a.mailbox[c.Name]
		a.mu.Unlock()
		st, isAdopted := adopted[c.Name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &loop{a: a, box: box, desired: c, log: a.log.With(zap.String("component", c.Name)), tr: restart.NewTracker(a.opts.Policy)}
			l.run(ctx, st, isAdopted)
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
		case c.Stopped:
			a.log.Info("stopping container: the component is stopped in the desired state", zap.String("component", name))
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

// loop is one component's reconcile loop: the only goroutine that touches
// that component's container.
type loop struct {
	a       *Agent
	box     <-chan Component
	desired Component
	log     *zap.Logger
	tr      *restart.Tracker

	// observed
	running    bool
	runHash    string
	runGen     int64
	exitCh     <-chan runtime.Exit
	cancelWait context.CancelFunc
	retryAt    <-chan time.Time // backoff timer; nil when none
	healthTick <-chan time.Time // non-nil until Healthy passes
	liveTick   <-chan time.Time // non-nil while the process runs and has Alive
	live       liveness
	healthy    bool // Healthy passed for this run
	startedAt  time.Time
	logStart   logrotate.Position // the end of the log when this run started
	planned    string             // reason of a planned restart in progress
	waiting    bool               // status says waiting: a planned restart is gated
}

func (l *loop) run(ctx context.Context, adopted runtime.Status, isAdopted bool) {
	name := l.desired.Name
	l.runGen = l.desired.RestartGeneration
	if isAdopted {
		l.logStart = logrotate.Mark(l.desired.Spec.LogPath)
		if err := l.watch(ctx); err == nil {
			l.running, l.runHash = true, l.desired.Hash
			l.tr.Started(l.a.opts.Now())
			l.startedAt = l.a.opts.Now()
			l.a.update(name, func(s *Status) {
				s.State, s.PID, s.Adopted, s.StartedAt, s.SpecHash, s.Message = StateRunning, adopted.PID, true, l.startedAt, l.runHash, "adopted from an earlier m3sup"
				s.Healthy = l.desired.Healthy == nil
			})
			l.startHealth()
			l.startLive()
		} else {
			l.log.Warn("cannot watch adopted container; replacing it", zap.Error(err))
			_ = l.a.rt.Remove(ctx, l.desired.Spec.ID)
		}
	}
	if l.desired.Stopped {
		l.a.update(name, func(s *Status) { s.State, s.Message = StateStopped, "stopped by the operator" })
	}

	for {
		l.converge(ctx)
		if ctx.Err() != nil {
			break
		}
		health, live := l.healthTick, l.liveTick
		select {
		case <-ctx.Done():
		case d := <-l.box:
			l.desired = d
		case ex := <-l.exitCh:
			l.exited(ctx, ex)
		case <-l.retryAt:
			l.retryAt = nil
		case <-health:
			l.checkHealth(ctx)
		case <-live:
			l.checkLive(ctx)
		}
		if ctx.Err() != nil {
			break
		}
	}
	l.shutdown(ctx)
}

// converge takes one step towards the desired state; it is called after
// every event.
func (l *loop) converge(ctx context.Context) {
	d := l.desired
	switch {
	case d.Stopped && l.running:
		l.stop(ctx, "stopped by the operator")
		l.a.update(d.Name, func(s *Status) {
			s.State, s.Message, s.NextStart = StateStopped, "stopped by the operator", time.Time{}
		})
	case d.Stopped:
		if l.retryAt != nil {
			l.retryAt = nil
			l.a.update(d.Name, func(s *Status) {
				s.State, s.Message, s.NextStart = StateStopped, "stopped by the operator", time.Time{}
			})
		}
	case l.running && (l.runHash != d.Hash || l.runGen != d.RestartGeneration):
		reason := ReasonSpec
		if l.runHash == d.Hash {
			reason = ReasonManual
		}
		if d.Gate != nil {
			l.waiting = true
			l.a.update(d.Name, func(s *Status) {
				s.State, s.Message = StateWaiting, "planned restart ("+reason+") waits for the cluster to afford it"
			})
			if err := d.Gate(ctx); err != nil {
				if ctx.Err() == nil {
					l.log.Warn("planned restart gate failed; will retry", zap.Error(err))
					l.retryAt = time.After(time.Second)
				}
				return
			}
			// A newer desired state may have arrived while waiting.
			select {
			case nd := <-l.box:
				l.desired, d = nd, nd
				if d.Stopped || (l.runHash == d.Hash && l.runGen == d.RestartGeneration) {
					// The newer desired state no longer asks for this restart.
					if !d.Stopped {
						l.waiting = false
						l.a.update(d.Name, func(s *Status) { s.State, s.Message = StateRunning, "" })
					}
					l.converge(ctx)
					return
				}
				reason = ReasonSpec
				if l.runHash == d.Hash {
					reason = ReasonManual
				}
			default:
			}
		}
		l.waiting = false
		l.log.Info("planned restart", zap.String("reason", reason), zap.String("old", short(l.runHash)), zap.String("new", short(d.Hash)))
		l.stop(ctx, "planned restart")
		l.planned = reason
		l.tr = restart.NewTracker(l.a.opts.Policy) // a new spec starts with a clean record
		l.retryAt = nil
		l.start(ctx)
	case l.running && l.waiting:
		// The gate refused and, meanwhile, the desired state went back to
		// what runs: the restart is off.
		l.waiting = false
		l.a.update(d.Name, func(s *Status) { s.State, s.Message = StateRunning, "" })
	case !l.running && l.retryAt != nil && (l.runHash != d.Hash || l.runGen != d.RestartGeneration):
		// A component waiting out a backoff got a new spec or a restart
		// request: try it at once, with a clean record.
		l.retryAt = nil
		l.tr = restart.NewTracker(l.a.opts.Policy)
		l.start(ctx)
	case !l.running && l.retryAt == nil:
		if l.runHash != "" && l.runHash != d.Hash && l.tr.Failures() > 0 {
			// A crash-looping component got a new spec: try it at once.
			l.tr = restart.NewTracker(l.a.opts.Policy)
		}
		l.start(ctx)
	}
}

func (l *loop) start(ctx context.Context) {
	d := l.desired
	if ctx.Err() != nil {
		return
	}
	l.a.update(d.Name, func(s *Status) {
		s.State, s.NextStart, s.Adopted, s.BackoffDelay = StateStarting, time.Time{}, false, ""
	})
	// The spec and generation tried last, even if they fail to start.
	l.runHash, l.runGen = d.Hash, d.RestartGeneration
	l.logStart = logrotate.Mark(d.Spec.LogPath)
	st, err := l.a.rt.Run(ctx, d.Spec)
	if err == nil {
		err = l.watch(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		_ = l.a.rt.Remove(context.WithoutCancel(ctx), d.Spec.ID)
		l.backoff(fmt.Sprintf("start failed: %v", err), nil, ReasonCrash)
		l.log.Error("start failed", zap.Error(err))
		return
	}
	now := l.a.opts.Now()
	l.tr.Started(now)
	l.running, l.startedAt = true, now
	reason := l.planned
	l.planned = ""
	l.log.Info("started", zap.Uint32("pid", st.PID))
	l.a.update(d.Name, func(s *Status) {
		s.State, s.PID, s.StartedAt, s.SpecHash, s.Healthy, s.Message = StateRunning, st.PID, now, d.Hash, d.Healthy == nil, ""
		s.Version = d.Version // what runs now, e.g. after an upgrade
		if reason != "" {
			s.Restarts++
			s.LastReason = reason
			s.Message = "restarted: " + reason
		}
	})
	if reason != "" && l.a.opts.OnRestart != nil {
		l.a.opts.OnRestart(d.Name, reason)
	}
	l.startHealth()
	l.startLive()
}

// watch subscribes to the running task's exit.
func (l *loop) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := l.a.rt.Wait(wctx, l.desired.Spec.ID)
	if err != nil {
		cancel()
		return err
	}
	l.exitCh, l.cancelWait = ch, cancel
	return nil
}

func (l *loop) unwatch() {
	if l.cancelWait != nil {
		l.cancelWait()
	}
	l.exitCh, l.cancelWait, l.healthTick, l.liveTick = nil, nil, nil, nil
}

func (l *loop) startHealth() {
	l.healthy = l.desired.Healthy == nil
	if l.desired.Healthy == nil {
		l.healthTick = nil
		return
	}
	l.healthTick = time.After(0)
}

// startLive starts asking a new process whether it is alive.
func (l *loop) startLive() {
	l.live = liveness{}
	if l.desired.Alive == nil {
		l.liveTick = nil
		return
	}
	l.liveTick = time.After(l.a.opts.LiveInterval)
}

// liveProbeTimeout bounds one liveness probe: the component's loop waits
// for it (a hung process accepts connections and never answers).
const liveProbeTimeout = 3 * time.Second

// unhealthyStopTimeout is how long a process declared unhealthy gets
// between SIGTERM and SIGKILL: it stopped answering, so it will not shut
// down cleanly (a stopped or deadlocked process never handles SIGTERM).
const unhealthyStopTimeout = 5 * time.Second

// checkLive asks the running process whether it is alive and acts on the
// verdict (liveness): a process quiet for UnhealthyAfter is killed and
// started again through the restart policy, with reason "unhealthy".
func (l *loop) checkLive(ctx context.Context) {
	d := l.desired
	pctx, cancel := context.WithTimeout(ctx, min(l.a.opts.LiveInterval, liveProbeTimeout))
	err := d.Alive(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := l.a.opts.Now()
	l.a.mu.Lock()
	l.a.probed[d.Name] = now
	l.a.mu.Unlock()
	wasQuiet := !l.live.failingSince.IsZero()
	switch l.live.observe(now, err, d.UnhealthyAfter) {
	case liveAnswering:
		if wasQuiet {
			l.log.Info(d.Name + " answers its health check again")
			healthy := l.healthy
			l.a.update(d.Name, func(s *Status) { s.Healthy, s.Message = healthy, "" })
		}
	case liveFailing:
		if !wasQuiet {
			after := "never restarted for it (UnhealthyAfter is 0)"
			if d.UnhealthyAfter > 0 {
				after = fmt.Sprintf("restarted if it stays quiet for %s", d.UnhealthyAfter)
			}
			l.log.Warn(fmt.Sprintf("%s does not answer its health check: %v; %s", d.Name, err, after))
			l.a.update(d.Name, func(s *Status) { s.Healthy, s.Message = false, "not answering its health check: "+err.Error() })
		}
	case liveDead:
		l.restartUnhealthy(ctx, now, err)
		return
	}
	l.liveTick = time.After(l.a.opts.LiveInterval)
}

// restartUnhealthy kills a process that stopped answering and schedules its
// next start through the restart policy, like a crash.
func (l *loop) restartUnhealthy(ctx context.Context, now time.Time, probeErr error) {
	d := l.desired
	msg := fmt.Sprintf("unhealthy: no answer to its health check for %s (%v)", l.live.quietFor(now).Round(time.Second), probeErr)
	ex := l.stopIn(ctx, msg, min(d.StopTimeout, unhealthyStopTimeout))
	tail := logrotate.Tail(d.Spec.LogPath, 20)
	dec := l.backoff(msg, &Exit{Code: ex.Code, At: now, Reason: msg, LogTail: tail}, ReasonUnhealthy)
	l.a.update(d.Name, func(s *Status) { s.LogTail = tail })
	l.log.Error(fmt.Sprintf("%s %s; killed it; restarting in %s (attempt %d); full output in %s",
		d.Name, msg, dec.Delay.Round(time.Millisecond), dec.Attempt, d.Spec.LogPath))
}

func (l *loop) checkHealth(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := l.desired.Healthy(hctx)
	cancel()
	if err != nil {
		l.healthTick = time.After(l.a.opts.HealthInterval)
		return
	}
	l.healthTick, l.healthy = nil, true
	took := l.a.opts.Now().Sub(l.startedAt).Round(time.Millisecond)
	l.log.Info("healthy", zap.Duration("after_start", took))
	if !l.live.failingSince.IsZero() { // healthy, yet quiet on its liveness probe since
		return
	}
	l.a.update(l.desired.Name, func(s *Status) { s.Healthy = true })
}

// exited handles an unplanned exit: record it, remove the container and
// schedule the next start.
func (l *loop) exited(ctx context.Context, ex runtime.Exit) {
	d := l.desired
	l.unwatch()
	l.running = false
	if ex.Err != nil && ctx.Err() == nil {
		l.log.Warn("lost track of the process", zap.Error(ex.Err))
	}
	tail := logrotate.Tail(d.Spec.LogPath, 20)
	_ = l.a.rt.Remove(context.WithoutCancel(ctx), d.Spec.ID)
	msg, crashed := l.exitReason(ex.Code)
	dec := l.backoff(msg, &Exit{Code: ex.Code, At: ex.At, Reason: msg, LogTail: tail}, ReasonCrash)
	l.a.update(d.Name, func(s *Status) { s.LogTail = tail })
	next := fmt.Sprintf("restarting in %s (attempt %d)", dec.Delay.Round(time.Millisecond), dec.Attempt)
	if dec.CrashLoop {
		next = fmt.Sprintf("crash-loop: next try in %s (attempt %d)", dec.Delay.Round(time.Millisecond), dec.Attempt)
	}
	if crashed {
		// The reason says it all; the goroutine dump is in the log file.
		l.log.Error(fmt.Sprintf("%s crashed: %s (exit code %d); %s; full output in %s", d.Name, msg, ex.Code, next, d.Spec.LogPath))
		return
	}
	l.log.Error(fmt.Sprintf("%s %s; %s; last log lines:\n  %s",
		d.Name, msg, next, strings.Join(tail, "\n  ")))
}

// exitReason says how the last run ended: a Go crash's own line when the
// run's output holds one, else the exit code (and the signal it means).
func (l *loop) exitReason(code uint32) (reason string, crashed bool) {
	if f := l.a.opts.CrashReason; f != nil {
		if out := logrotate.ReadSince(l.desired.Spec.LogPath, l.logStart, crashWindow); len(out) > 0 {
			if r, ok := f(out); ok {
				return r, true
			}
		}
	}
	if code > 128 && code < 128+65 {
		if name := signalName(syscall.Signal(code - 128)); name != "" {
			return fmt.Sprintf("exited with code %d (killed by %s)", code, name), false
		}
	}
	return fmt.Sprintf("exited with code %d", code), false
}

// signalName is a signal's SIG name, or "" for one without a common name.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGILL:
		return "SIGILL"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return ""
}

func (l *loop) backoff(msg string, ex *Exit, reason string) restart.Decision {
	d := l.tr.Exited(l.a.opts.Now())
	l.retryAt = time.After(d.Delay)
	name := l.desired.Name
	l.a.update(name, func(s *Status) {
		s.State = StateBackoff
		if d.CrashLoop {
			s.State = StateCrashLoop
		}
		s.PID, s.Healthy = 0, false
		s.Restarts++
		s.LastReason = reason
		s.Message = msg
		s.NextStart = l.a.opts.Now().Add(d.Delay)
		s.BackoffDelay = d.Delay.Round(time.Millisecond).String()
		if ex != nil {
			s.LastExit = ex
		}
	})
	if l.a.opts.OnRestart != nil {
		l.a.opts.OnRestart(name, reason)
	}
	return d
}

// stop ends the running process (SIGTERM, then SIGKILL after StopTimeout)
// and removes its container.
func (l *loop) stop(ctx context.Context, why string) {
	l.stopIn(ctx, why, l.desired.StopTimeout)
}

// stopIn is stop with SIGKILL after timeout; it returns how the process
// exited.
func (l *loop) stopIn(ctx context.Context, why string, timeout time.Duration) runtime.Exit {
	d := l.desired
	l.unwatch()
	l.running, l.waiting = false, false
	l.a.update(d.Name, func(s *Status) { s.State, s.Message, s.Healthy = StateStopping, why, false })
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+10*time.Second)
	defer cancel()
	ex, err := l.a.rt.Stop(stopCtx, d.Spec.ID, timeout)
	if err != nil {
		l.log.Error("stop failed", zap.Error(err))
	} else {
		l.log.Info("stopped", zap.Uint32("exit_code", ex.Code), zap.String("why", why))
	}
	l.a.update(d.Name, func(s *Status) { s.PID = 0 })
	return ex
}

func (l *loop) shutdown(ctx context.Context) {
	name := l.desired.Name
	if !l.running {
		l.a.update(name, func(s *Status) { s.State = StateStopped })
		return
	}
	if l.a.opts.KeepRunning {
		l.unwatch()
		l.log.Info("leaving container running for the next m3sup")
		l.a.update(name, func(s *Status) { s.State, s.Message = StateStopped, "left running" })
		return
	}
	l.stop(ctx, "m3sup is shutting down")
	l.a.update(name, func(s *Status) { s.State = StateStopped })
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
