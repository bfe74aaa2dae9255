package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/readiness"
)

// Status is the whole daemon's status, as served on GET /v1/status.
type Status struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
	// Ready is Readiness.Ready.
	Ready bool `json:"ready"`
	// Readiness says whether this host serves M3 now, and why not.
	Readiness readiness.Verdict `json:"readiness"`
	// CPUCoreGuard is this host's decision on M3's CPU-id defect.
	CPUCoreGuard *cpucore.Decision `json:"cpuCoreGuard,omitempty"`
	// Disk is the filesystem holding the data dir; nil before the first
	// sample.
	Disk       *DiskStatus      `json:"disk,omitempty"`
	Etcd       EtcdStatus       `json:"etcd"`
	Containerd ContainerdStatus `json:"containerd"`
	Components []agent.Status   `json:"components"`
	M3         M3Status         `json:"m3"`
	// Cluster is the whole cluster as seen from this host; nil in
	// single-node mode.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// Rollout is the progress of the desired m3dbnode spec across the
	// hosts (this host alone in single-node mode).
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// StateErrors are values in etcd this host refuses (a cluster spec
	// that does not validate, controls that do not decode); it runs on
	// the last good values until they are repaired.
	StateErrors []StateError `json:"stateErrors,omitempty"`
	// Certs is the certificate of this host's that expires first; nil
	// before etcd's certificates are in place.
	Certs *CertsStatus `json:"certs,omitempty"`
}

// CertsStatus is the earliest-expiring of the certificates this host
// presents (etcd's member and client certificates, M3's, the join
// endpoint's). m3sup renews them between 2/3 and 3/4 of their lifetime;
// Warning is set from 30 days before expiry (or a tenth of the lifetime,
// if shorter), when renewal has not happened.
type CertsStatus struct {
	EarliestExpiry time.Time `json:"earliestExpiry"`
	Path           string    `json:"path"` // the certificate's file
	CommonName     string    `json:"commonName"`
	Serial         string    `json:"serial"`
	Count          int       `json:"count"` // certificates looked at
	Warning        string    `json:"warning,omitempty"`
	Error          string    `json:"error,omitempty"` // a certificate could not be read
}

// DiskStatus is the data dir's filesystem as last sampled (every few
// seconds). Level is ok, low (below disk.warn*) or full (below
// disk.fail*); Message says why when it is not ok.
type DiskStatus struct {
	Path       string    `json:"path"`
	SizeBytes  uint64    `json:"sizeBytes"`
	UsedBytes  uint64    `json:"usedBytes"`
	FreeBytes  uint64    `json:"freeBytes"`
	Inodes     uint64    `json:"inodes"`
	UsedInodes uint64    `json:"usedInodes"`
	FreeInodes uint64    `json:"freeInodes"`
	Level      string    `json:"level,omitempty"`
	Message    string    `json:"message,omitempty"`
	Error      string    `json:"error,omitempty"`
	SampledAt  time.Time `json:"sampledAt"`
}

// StateError is one value in etcd this host cannot use.
type StateError struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"`
	Error    string `json:"error"`
}

// RolloutStatus is the progress of the desired m3dbnode spec: how many
// hosts run it, healthy, and whether its rollout halted (a host's
// m3dbnode missed the rollout deadline on it and went back).
type RolloutStatus struct {
	// DesiredRevision names the desired release and dbnode settings (a
	// short hash, the same on every host); DesiredVersion is its release
	// version (or image).
	DesiredRevision string `json:"desiredRevision"`
	DesiredVersion  string `json:"desiredVersion"`
	// Hosts counts the dbnode hosts; OnDesired those running the desired
	// revision, healthy.
	Hosts     int  `json:"hosts"`
	OnDesired int  `json:"onDesired"`
	Halted    bool `json:"halted"`
	// Failure is why the rollout halted.
	Failure *RolloutFailure `json:"failure,omitempty"`
	// Message is one line for humans.
	Message string `json:"message"`
}

// RolloutFailure is a revision that failed on a host.
type RolloutFailure struct {
	Revision string    `json:"revision"`
	Version  string    `json:"version"`
	Host     string    `json:"host"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// ClusterStatus is the multi-host view: the registered hosts (and those
// being removed), who leads
// the placement controller and who holds the m3dbnode restart permit.
// Shard states are in M3Status.
type ClusterStatus struct {
	Hosts []HostStatus `json:"hosts"`
	// ControllerLeader is the host leading the placement controller.
	ControllerLeader string `json:"controllerLeader,omitempty"`
	// PermitHolder is the host holding the m3dbnode restart permit, empty
	// when none does (PermitHeld tells a holder not yet named apart).
	PermitHolder string `json:"permitHolder,omitempty"`
	PermitHeld   bool   `json:"permitHeld"`
	Error        string `json:"error,omitempty"`
}

// HostStatus is one registered host, or one being removed with
// `m3sup remove-host` (RemovedBy).
type HostStatus struct {
	Name     string   `json:"name"`
	Endpoint string   `json:"endpoint,omitempty"`
	Roles    []string `json:"roles"`
	// EtcdRole is voter, learner or client (not an etcd member).
	EtcdRole string `json:"etcdRole"`
	// IsolationGroup and Weight are the host's M3 placement topology.
	IsolationGroup string `json:"isolationGroup,omitempty"`
	Weight         uint32 `json:"weight,omitempty"`
	// Leaving: `m3sup leave` runs on the host, or `m3sup remove-host`
	// removes it; it is being decommissioned.
	Leaving bool `json:"leaving,omitempty"`
	// HoldsCA: the host holds the cluster CA (it can issue join tokens);
	// JoinURL is the join endpoint it serves, if any.
	HoldsCA bool   `json:"holdsCA,omitempty"`
	JoinURL string `json:"joinURL,omitempty"`
	// RemovedBy: the host is gone for good and `m3sup remove-host` on
	// RemovedBy removes it; it is not registered (no Roles, no Endpoint).
	RemovedBy string `json:"removedBy,omitempty"`
	// DBNode is the m3dbnode spec the host runs, as it reports it.
	DBNode *HostDBNode `json:"dbnode,omitempty"`
	// Components are the host's components, as it reports them.
	Components []HostComponent `json:"components,omitempty"`
}

// HostDBNode is the m3dbnode spec one host runs.
type HostDBNode struct {
	Revision string `json:"revision,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
	// OnDesired: the desired revision, running and healthy.
	OnDesired bool `json:"onDesired"`
}

// HostComponent is one component of a host.
type HostComponent struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	Version string `json:"version,omitempty"`
}

// EtcdStatus describes the embedded etcd member.
type EtcdStatus struct {
	State string `json:"state"`
	// Role, in multi-host mode: voter (an etcd member runs here) or client
	// (none does; Endpoint is a voter's).
	Role     string `json:"role,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Leader   bool   `json:"leader"`
	Members  int    `json:"members,omitempty"`
	DBSize   int64  `json:"dbSize,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ContainerdStatus describes the container runtime connection.
type ContainerdStatus struct {
	Mode      string `json:"mode"`
	Address   string `json:"address,omitempty"`
	Version   string `json:"version,omitempty"`
	Connected bool   `json:"connected"`
	PID       int    `json:"pid,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// M3Status describes the M3 cluster as seen through the coordinator API.
type M3Status struct {
	Phase             string            `json:"phase"`
	Message           string            `json:"message,omitempty"`
	PlacementExists   bool              `json:"placementExists"`
	Instances         int               `json:"instances"`
	Shards            map[string]int    `json:"shards,omitempty"`
	Namespaces        []NamespaceStatus `json:"namespaces,omitempty"`
	NodesBootstrapped bool              `json:"nodesBootstrapped"`
	Error             string            `json:"error,omitempty"`
}

// NamespaceStatus is one M3 namespace.
type NamespaceStatus struct {
	Name      string `json:"name"`
	Ready     bool   `json:"ready"`
	Retention string `json:"retention,omitempty"`
}

// Provider is what the server reads from the daemon.
type Provider interface {
	Status(ctx context.Context) Status
	// Ready returns nil when the M3 cluster accepts writes.
	Ready(ctx context.Context) error
}

// Server serves the local API.
type Server struct {
	http *http.Server
	what string // what Serve's errors say it served
}

// Handlers are the parts of the daemon the server serves. Provider is
// required; any other part left nil is a route not served.
type Handlers struct {
	Provider    Provider            // GET /v1/status, /healthz, /readyz
	Controller  Controller          // the desired-state and component routes
	Tokens      Tokens              // /v1/tokens
	Leaver      Leaver              // POST /v1/leave
	HostRemover HostRemover         // POST /v1/hosts/{name}/remove
	Backupper   Backupper           // GET /v1/backup
	Metrics     prometheus.Gatherer // GET /metrics
}

// NewServer builds the handlers: /v1/status, /healthz and /readyz, and the
// routes of every other part h has.
func NewServer(h Handlers, log *zap.Logger) *Server {
	p := h.Provider
	mux := http.NewServeMux()
	s := &Server{what: "local API"}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, p.Status(r.Context()))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := p.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	if h.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(h.Metrics, promhttp.HandlerOpts{}))
	}
	if h.Controller != nil {
		s.controlRoutes(mux, h.Controller)
	}
	if h.Tokens != nil {
		tokenRoutes(mux, h.Tokens)
	}
	if h.Leaver != nil {
		leaveRoutes(mux, h.Leaver)
	}
	if h.HostRemover != nil {
		removeHostRoutes(mux, h.HostRemover)
	}
	if h.Backupper != nil {
		mux.Handle("GET /v1/backup", BackupHandler(h.Backupper))
	}
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("api")),
	}
	return s
}

// NewMetricsServer serves GET /metrics from g and nothing else: the
// optional TCP listener Prometheus scrapes (config metrics.listen). It is
// the same registry as the local API's /metrics; every other path is 404,
// every other method 405.
func NewMetricsServer(g prometheus.Gatherer, log *zap.Logger) *Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return &Server{what: "metrics", http: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("metrics")),
	}}
}

// Serve serves on ln until Shutdown; it returns nil after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s on %s: %w", s.what, ln.Addr(), err)
	}
	return nil
}

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// ErrNotRunning means no daemon answers on the socket.
var ErrNotRunning = errors.New("m3sup is not running")

// ErrAlreadyRunning means another daemon answers on the socket.
var ErrAlreadyRunning = errors.New("another m3sup is already running")

// Listen opens the unix socket at path, readable and writable by root only
// (the socket 0600, a directory it has to create 0700). A stale socket left
// by a crashed daemon is replaced; a live one, or a file that is not a
// socket, is an error.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	// Only a dir created here is made 0700: an existing one may be shared
	// (/run, /tmp) and must keep its mode; the socket's 0600 guards it there.
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket dir: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict socket dir: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket; remove it or choose another api.socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("listen on %s: %w", path, ErrAlreadyRunning)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Client talks to the daemon over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.get(ctx, "/v1/status", &s)
	return s, err
}

// Ready returns nil when the daemon reports the cluster ready.
func (c *Client) Ready(ctx context.Context) error {
	return c.get(ctx, "/readyz", nil)
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// do sends a JSON request and decodes a JSON answer into out (nil: discard).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// send performs a request; a non-2xx answer becomes an error carrying the
// server's message and its kind (ErrInvalid, ErrConflict, ErrNotFound).
func (c *Client) send(ctx context.Context, method, path string, in any, timeout bool) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://m3sup"+path, body)
	if err != nil {
		return nil, err
	}
	hc := c.http
	if !timeout {
		hc = &http.Client{Transport: c.http.Transport}
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%w (no daemon on %s)", ErrNotRunning, c.socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("cannot reach m3sup on %s: permission denied (run as root)", c.socket)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	var eb errorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	kind := error(nil)
	switch resp.StatusCode {
	case http.StatusBadRequest:
		kind = ErrInvalid
	case http.StatusConflict:
		kind = ErrConflict
	case http.StatusNotFound:
		kind = ErrNotFound
	}
	if kind != nil {
		return nil, &kindError{msg: msg, kind: kind}
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
}

// kindError is an error with a kind (ErrInvalid, ErrConflict, ErrNotFound)
// whose message is only its own text.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// Errorf returns an error with the given message that matches kind.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}
