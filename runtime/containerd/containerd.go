package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"go.uber.org/zap"
)

// Mode says where the containerd daemon comes from.
type Mode string

const (
	// ModeAuto uses Options.Address if set, else the host's containerd at
	// DefaultHostAddress if it answers, else a managed child.
	ModeAuto Mode = "auto"
	// ModeExternal connects to a daemon that m3sup does not own.
	ModeExternal Mode = "external"
	// ModeManaged runs containerd as a child process of m3sup.
	ModeManaged Mode = "managed"
)

// Defaults.
const (
	DefaultHostAddress = "/run/containerd/containerd.sock"
	DefaultNamespace   = "m3sup"
	DefaultSocketDir   = "/run/m3sup"
	DefaultBinary      = "containerd"
	socketName         = "containerd.sock"
)

// Timing of the connection to the daemon.
const (
	probeTimeout   = time.Second      // one ping of a daemon (auto mode, health checks)
	readyTimeout   = 15 * time.Second // managed child: spawn until it answers
	pingInterval   = 2 * time.Second  // Supervise: health check period
	stopGrace      = 10 * time.Second // managed child: SIGTERM until SIGKILL
	restartMin     = 100 * time.Millisecond
	restartMax     = 10 * time.Second
	grpcMaxBackoff = time.Second // reconnect delay of the gRPC channel
)

// Options configure a Runtime. The zero value is usable: auto mode, namespace
// "m3sup", managed state under /var/lib/m3sup/containerd.
type Options struct {
	// Address is an explicit containerd socket; it implies external mode.
	Address string
	// Mode is auto (default), external or managed.
	Mode Mode
	// Namespace is the containerd namespace of m3sup's containers.
	Namespace string
	// StateDir holds root/, state/, config.toml and containerd.log of the
	// managed daemon (for example <data-dir>/containerd).
	StateDir string
	// SocketDir holds the managed daemon's socket SocketDir/containerd.sock.
	SocketDir string
	// Binary is the containerd binary of managed mode, looked up in PATH.
	Binary string
	// PathDirs are put before PATH for the managed daemon, so it finds a
	// shim and runc that are not installed on the host (air-gap bundles).
	PathDirs []string
	// Logger receives the runtime's own events; nil means no logging.
	Logger *zap.Logger
}

// withDefaults fills in the zero fields.
func (o Options) withDefaults() Options {
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if o.Address != "" && o.Mode == ModeAuto {
		o.Mode = ModeExternal
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.StateDir == "" {
		o.StateDir = "/var/lib/m3sup/containerd"
	}
	if o.SocketDir == "" {
		o.SocketDir = DefaultSocketDir
	}
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	switch o.Mode {
	case "", ModeAuto, ModeManaged:
	case ModeExternal:
		if o.Address == "" {
			return errors.New("containerd options: mode external needs an address")
		}
	default:
		return fmt.Errorf("containerd options: unknown mode %q (want auto, external or managed)", o.Mode)
	}
	if o.Mode == ModeManaged && o.Address != "" {
		return errors.New("containerd options: an address implies mode external, not managed")
	}
	return nil
}

// Info describes the daemon the Runtime talks to.
type Info struct {
	Mode       Mode   `json:"mode"`
	Address    string `json:"address"`
	Version    string `json:"version,omitempty"`
	ManagedPID int    `json:"managedPID,omitempty"`
	Connected  bool   `json:"connected"`
}

// Runtime runs m3sup's containers in one containerd namespace.
//
// Lifecycle of the Runtime and, in managed mode, of its containerd child:
//
//	New ──Start──► starting ──answers──► running (Connected) ◄────────────┐
//	                  │                     │  child dies (Supervise)        │
//	                  ▼ error               ▼                                │
//	               (Start fails)         backoff 100ms·2ⁿ ≤ 10s ──respawn──┘
//	                                        │
//	   any state ──Close──► stopping (client closed, child SIGTERM→SIGKILL) ──► stopped
//
// In external mode there is no child: Supervise only records whether the
// daemon answers. Containers and shims are never stopped by Close.
type Runtime struct {
	opts      Options
	log       *zap.Logger
	pingEvery time.Duration // health check period (tests shorten it)

	mu      sync.Mutex
	started bool
	closed  bool
	client  *client.Client
	child   *child // managed mode only
	info    Info
	changed chan struct{} // closed and replaced whenever info changes

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	waiters   sync.WaitGroup // goroutines behind Wait channels
}

// New returns a Runtime configured by opts. It does no I/O; call Start.
func New(opts Options) *Runtime {
	opts = opts.withDefaults()
	return &Runtime{
		opts:      opts,
		log:       opts.Logger.Named("containerd"),
		pingEvery: pingInterval,
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// Start decides the mode, spawns the managed child if needed, waits until the
// daemon answers and connects the client.
func (r *Runtime) Start(ctx context.Context) error {
	if err := r.opts.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.started || r.closed {
		r.mu.Unlock()
		return errors.New("start containerd runtime: already started or closed")
	}
	r.started = true
	r.mu.Unlock()

	mode := r.opts.Mode
	addr := r.opts.Address
	if mode == ModeAuto {
		if v, ok := probe(ctx, DefaultHostAddress); ok {
			r.log.Info("using the host's containerd", zap.String("address", DefaultHostAddress), zap.String("version", v))
			mode, addr = ModeExternal, DefaultHostAddress
		} else {
			mode = ModeManaged
		}
	}
	if mode == ModeManaged {
		addr = r.managedAddress()
	}
	r.setInfo(func(i *Info) { i.Mode, i.Address = mode, addr })

	if mode == ModeManaged {
		if err := checkManagedHost(r.opts.Binary, r.opts.PathDirs); err != nil {
			return err
		}
		if err := r.startChild(ctx); err != nil {
			return err
		}
	}
	if err := r.connect(ctx, addr); err != nil {
		if mode == ModeManaged {
			return err
		}
		return fmt.Errorf("connect to containerd at %s: %w", addr, err)
	}
	info := r.Info()
	r.log.Info("containerd ready", zap.String("mode", string(info.Mode)), zap.String("address", info.Address),
		zap.String("version", info.Version), zap.Int("pid", info.ManagedPID))
	return nil
}

// checkManagedHost reports, in one line each, what managed mode lacks.
func checkManagedHost(binary string, pathDirs []string) error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("managed containerd needs root (running as uid %d): run m3sup as root or point it at a containerd socket", uid)
	}
	if _, err := exec.LookPath(binary); err != nil {
		return fmt.Errorf("%s not found in PATH: install it with `apt-get install -y containerd runc`", binary)
	}
	if _, err := exec.LookPath("runc"); err != nil && !inDirs("runc", pathDirs) {
		return errors.New("runc not found in PATH: install it with `apt-get install -y containerd runc`")
	}
	return nil
}

func inDirs(name string, dirs []string) bool {
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, name)); err == nil && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// newClient returns a client for addr; it does not dial yet.
func (r *Runtime) newClient(addr string) (*client.Client, error) {
	return client.New(addr,
		client.WithDefaultNamespace(r.opts.Namespace),
		client.WithDefaultRuntime(defaults.DefaultRuntime),
		client.WithTimeout(grpcMaxBackoff),
	)
}

// connect replaces the client by one for addr once the daemon answers.
func (r *Runtime) connect(ctx context.Context, addr string) error {
	c, err := r.newClient(addr)
	if err != nil {
		return fmt.Errorf("create containerd client for %s: %w", addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	v, err := c.Version(pctx)
	if err != nil {
		c.Close()
		return fmt.Errorf("ask containerd at %s for its version: %w", addr, err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		c.Close()
		return errClosed
	}
	old := r.client
	r.client = c
	r.info.Version = v.Version
	r.info.Connected = true
	r.notifyLocked()
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// probe reports whether a containerd daemon answers at addr, with its version.
func probe(ctx context.Context, addr string) (string, bool) {
	if fi, err := os.Stat(addr); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return "", false
	}
	c, err := client.New(addr, client.WithTimeout(probeTimeout))
	if err != nil {
		return "", false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		return "", false
	}
	return v.Version, true
}

var errClosed = errors.New("containerd runtime closed")

// Info returns what the Runtime knows of its daemon.
func (r *Runtime) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// setInfo changes info under the lock and wakes whoever waits for a change.
func (r *Runtime) setInfo(f func(*Info)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.info
	f(&r.info)
	if r.info != before {
		r.notifyLocked()
	}
}

func (r *Runtime) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// infoChanged returns a channel closed at the next change of Info.
func (r *Runtime) infoChanged() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// current returns the client, or an error once closed or before Start.
func (r *Runtime) current() (*client.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed
	}
	if r.client == nil {
		return nil, errors.New("containerd runtime not started")
	}
	return r.client, nil
}

// Supervise keeps the daemon connection healthy; it is a run.Group actor and
// returns nil when ctx is done or the Runtime is closed. In managed mode it
// respawns a child that died, with exponential backoff, and reconnects. In
// both modes it pings the daemon every few seconds and records Connected.
func (r *Runtime) Supervise(ctx context.Context) error {
	ticker := time.NewTicker(r.pingEvery)
	defer ticker.Stop()
	for {
		var childDone <-chan struct{}
		r.mu.Lock()
		if r.child != nil {
			childDone = r.child.done
		}
		r.mu.Unlock()

		select {
		case <-ctx.Done():
			return nil
		case <-r.done:
			return nil
		case <-ticker.C:
			r.ping(ctx)
		case <-childDone:
			r.restartChild(ctx)
		}
	}
}

// ping records whether the daemon answers.
func (r *Runtime) ping(ctx context.Context) {
	c, err := r.current()
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err = c.Version(pctx)
	ok := err == nil
	if was := r.Info().Connected; was != ok {
		if ok {
			r.log.Info("containerd answers again", zap.String("address", r.Info().Address))
		} else {
			r.log.Warn("containerd does not answer", zap.String("address", r.Info().Address), zap.Error(err))
		}
	}
	r.setInfo(func(i *Info) { i.Connected = ok })
}

// restartChild respawns the managed child after it died, with backoff,
// until it answers, ctx is done or the Runtime is closed.
func (r *Runtime) restartChild(ctx context.Context) {
	r.mu.Lock()
	ch := r.child
	closed := r.closed
	r.mu.Unlock()
	if closed || ch == nil {
		return
	}
	r.setInfo(func(i *Info) { i.Connected, i.ManagedPID = false, 0 })
	ranFor := ch.exitedAt.Sub(ch.startedAt)
	r.log.Error("managed containerd died; restarting it", zap.Int("pid", ch.pid),
		zap.Duration("ranFor", ranFor), zap.Error(ch.err), zap.String("logTail", tailFile(r.logPath(), 10)))

	var delay time.Duration
	for attempt := 1; ; attempt++ {
		delay = nextDelay(delay, ranFor)
		ranFor = 0
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-r.done:
			timer.Stop()
			return
		case <-timer.C:
		}
		err := r.startChild(ctx)
		if err == nil {
			err = r.connect(ctx, r.managedAddress())
		}
		if err == nil {
			info := r.Info()
			r.log.Info("managed containerd restarted", zap.Int("pid", info.ManagedPID), zap.Int("attempt", attempt))
			return
		}
		if errors.Is(err, errClosed) || ctx.Err() != nil {
			return
		}
		r.log.Error("restart managed containerd", zap.Int("attempt", attempt), zap.Duration("delay", delay), zap.Error(err))
	}
}

// nextDelay is the restart backoff: 100ms, doubling, capped at 10s. A child
// that ran at least the cap before dying starts the series again.
func nextDelay(prev, ranFor time.Duration) time.Duration {
	if prev <= 0 || ranFor >= restartMax {
		return restartMin
	}
	return min(2*prev, restartMax)
}

// Close closes the client, then stops the managed child (SIGTERM, up to 10s,
// then SIGKILL) and waits for it. Containers and shims keep running. It is
// idempotent.
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.done)
		c, ch := r.client, r.child
		r.client = nil
		r.info.Connected = false
		r.notifyLocked()
		r.mu.Unlock()

		var errs []error
		if c != nil {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close containerd client: %w", err))
			}
		}
		r.waiters.Wait()
		if ch != nil {
			if err := ch.stop(stopGrace); err != nil {
				errs = append(errs, err)
			}
			r.setInfo(func(i *Info) { i.ManagedPID = 0 })
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
