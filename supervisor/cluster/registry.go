package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RegistryPrefix holds one key per live host: RegistryPrefix + name, JSON
// Host, bound to the host's lease so a dead host's key vanishes.
const RegistryPrefix = "/m3sup/v1/registry/"

// DefaultRegistryTTL is the registry lease TTL a Registrar uses when given
// none.
const DefaultRegistryTTL = 10 * time.Second

// Role is what a host runs.
type Role string

// Roles.
const (
	RoleDBNode      Role = "dbnode"
	RoleCoordinator Role = "coordinator"
)

// Host is one registered host as the controller sees it.
type Host struct {
	Name           string `json:"name"` // the placement instance ID
	Roles          []Role `json:"roles"`
	IsolationGroup string `json:"isolationGroup,omitempty"`
	Weight         uint32 `json:"weight,omitempty"`   // zero means 100
	Endpoint       string `json:"endpoint,omitempty"` // dbnode host:port (tchannel, :9000)
	Hostname       string `json:"hostname,omitempty"`
	// Coordinator is the base URL of the host's m3coordinator API (a
	// coordinator host's), for hosts that run none.
	Coordinator string `json:"coordinator,omitempty"`
	// HoldsCA: the host holds the cluster CA (an etcd voter), so it can
	// issue join tokens and serve joins; JoinURL is its join endpoint when
	// it serves one (cluster.joinListen).
	HoldsCA bool   `json:"holdsCA,omitempty"`
	JoinURL string `json:"joinURL,omitempty"`
}

// Has reports whether h runs role r.
func (h Host) Has(r Role) bool { return slices.Contains(h.Roles, r) }

// Validate reports the first problem with h.
func (h Host) Validate() error {
	if h.Name == "" || strings.ContainsAny(h.Name, "/ \t\n") {
		return fmt.Errorf("host %q: name must be non-empty without slashes or spaces", h.Name)
	}
	if len(h.Roles) == 0 {
		return fmt.Errorf("host %q: at least one role is required", h.Name)
	}
	for _, r := range h.Roles {
		if r != RoleDBNode && r != RoleCoordinator {
			return fmt.Errorf("host %q: unknown role %q (want %q or %q)", h.Name, r, RoleDBNode, RoleCoordinator)
		}
	}
	if h.Has(RoleDBNode) {
		if h.IsolationGroup == "" {
			return fmt.Errorf("host %q: a dbnode host needs an isolation group", h.Name)
		}
		if _, _, err := splitEndpoint(h.Endpoint); err != nil {
			return fmt.Errorf("host %q: %w", h.Name, err)
		}
	}
	return nil
}

func splitEndpoint(ep string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("dbnode endpoint %q: %w", ep, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return "", 0, fmt.Errorf("dbnode endpoint %q: bad port", ep)
	}
	return host, uint32(p), nil
}

// ttlSeconds rounds a TTL up to whole seconds, at least one.
func ttlSeconds(ttl time.Duration) int64 {
	s := int64(math.Ceil(ttl.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// Register grants a lease of ttl and writes h's registry key under it. It
// starts nothing: the caller keeps the lease alive (Registrar does) or lets
// it expire.
func Register(ctx context.Context, cli *clientv3.Client, h Host, ttl time.Duration) (clientv3.LeaseID, error) {
	if err := h.Validate(); err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	b, err := json.Marshal(h)
	if err != nil {
		return 0, fmt.Errorf("register %s: %w", h.Name, err)
	}
	lease, err := cli.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return 0, fmt.Errorf("register %s: grant lease: %w", h.Name, err)
	}
	if _, err := cli.Put(ctx, RegistryPrefix+h.Name, string(b), clientv3.WithLease(lease.ID)); err != nil {
		// Best effort: an unrevoked lease expires on its own.
		_, _ = cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return 0, fmt.Errorf("register %s: %w", h.Name, err)
	}
	return lease.ID, nil
}

// Hosts returns every registered host, sorted by name. A key that does not
// decode is skipped: one bad host must not stop the controller.
func Hosts(ctx context.Context, cli *clientv3.Client) ([]Host, error) {
	resp, err := cli.Get(ctx, RegistryPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read host registry: %w", err)
	}
	out := make([]Host, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h Host
		if err := json.Unmarshal(kv.Value, &h); err != nil || h.Name != strings.TrimPrefix(string(kv.Key), RegistryPrefix) {
			continue
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Registrar keeps one host registered while it runs: it registers, keeps
// the lease alive, registers again under a new lease if the old one is lost
// (etcd unreachable for longer than TTL), and revokes the lease when ctx
// ends, so the host leaves the registry at once on a clean stop.
type Registrar struct {
	Cli    *clientv3.Client
	Host   Host
	TTL    time.Duration // zero means DefaultRegistryTTL
	Logger *zap.Logger   // nil means no logs
}

// Run registers and keeps the registration until ctx ends; it then returns
// nil. It returns an error only for a host that cannot be registered at all.
func (r *Registrar) Run(ctx context.Context) error {
	if err := r.Host.Validate(); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = DefaultRegistryTTL
	}
	delay := 250 * time.Millisecond
	for {
		lease, err := Register(ctx, r.Cli, r.Host, ttl)
		if err == nil {
			err = keepAlive(ctx, r.Cli, lease)
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				_, _ = r.Cli.Revoke(rctx, lease) // best effort: the lease expires anyway
				cancel()
				return nil
			}
			delay = 250 * time.Millisecond
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("host registration lost; registering again", zap.String("host", r.Host.Name), zap.Error(err), zap.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, ttl)
	}
}

// errLeaseLost: a keep-alive stream ended while its context was live.
var errLeaseLost = errors.New("lease lost")

// keepAlive refreshes lease until ctx ends or the lease is lost.
func keepAlive(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID) error {
	ch, err := cli.KeepAlive(ctx, lease)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	for range ch {
		// Drain: the channel closes when ctx ends or the lease is gone.
	}
	return errLeaseLost
}
