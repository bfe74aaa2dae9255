package m3

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Phase is a step of bringing a cluster up. Bootstrap walks them in order:
//
//	waiting-coordinator → placement → namespaces → bootstrapping → marking-ready → ready
//
// Observe reports the first phase whose condition does not hold yet.
type Phase string

// Phases, in order.
const (
	PhaseWaitingCoordinator Phase = "waiting-coordinator" // coordinator /health not answering
	PhasePlacement          Phase = "placement"           // no placement yet
	PhaseNamespaces         Phase = "namespaces"          // desired namespaces missing
	PhaseBootstrapping      Phase = "bootstrapping"       // shards not all AVAILABLE or nodes not bootstrapped
	PhaseMarkingReady       Phase = "marking-ready"       // namespaces not all READY
	PhaseReady              Phase = "ready"
)

// DefaultPoll is Bootstrap's poll interval when it is given none.
const DefaultPoll = 250 * time.Millisecond

// nodeHealthTimeout bounds one dbnode /health call, so one hung node does
// not stall a status read.
const nodeHealthTimeout = 3 * time.Second

// Desired is the cluster Bootstrap drives towards. Instances and the shard
// numbers are used only when no placement exists.
type Desired struct {
	NumShards         int
	ReplicationFactor int
	Instances         []Instance
	Namespaces        []Namespace
}

// Validate reports the first problem with d.
func (d Desired) Validate() error {
	if d.NumShards <= 0 || d.ReplicationFactor <= 0 {
		return fmt.Errorf("desired: num shards %d and replication factor %d must be positive", d.NumShards, d.ReplicationFactor)
	}
	if len(d.Instances) < d.ReplicationFactor {
		return fmt.Errorf("desired: %d instances cannot hold replication factor %d", len(d.Instances), d.ReplicationFactor)
	}
	if len(d.Namespaces) == 0 {
		// dbnodes bootstrap only once a namespace exists.
		return errors.New("desired: at least one namespace is required")
	}
	seen := make(map[string]bool)
	for _, ns := range d.Namespaces {
		if err := ns.Validate(); err != nil {
			return fmt.Errorf("desired: %w", err)
		}
		if seen[ns.Name] {
			return fmt.Errorf("desired: namespace %s listed twice", ns.Name)
		}
		seen[ns.Name] = true
	}
	return nil
}

// Progress is where a cluster stands. Bootstrap passes a fresh copy to
// report; callers may keep it.
type Progress struct {
	Phase       Phase
	Message     string
	ShardStates map[string]int  // shard replicas by state, over all instances
	Nodes       map[string]bool // node HTTP URL → /health says bootstrapped
	Namespaces  map[string]bool // name → READY

	// Set by Observe: the placement as seen.
	PlacementExists bool
	Instances       int

	// Set by Bootstrap only: what this call changed.
	PlacementCreated  bool
	NamespacesCreated []string
}

// NodesBootstrapped reports whether every observed node is bootstrapped.
// With no node to observe (a host that runs no m3dbnode) it is true: only
// the placement's shard states count then.
func (p Progress) NodesBootstrapped() bool {
	for _, ok := range p.Nodes {
		if !ok {
			return false
		}
	}
	return true
}

func (p Progress) clone() Progress {
	p.ShardStates = maps.Clone(p.ShardStates)
	p.Nodes = maps.Clone(p.Nodes)
	p.Namespaces = maps.Clone(p.Namespaces)
	p.NamespacesCreated = slices.Clone(p.NamespacesCreated)
	return p
}

// Observe reads the cluster's state once, for status display: coordinator
// health, placement shard states, namespaces and their READY status, and
// each node's /health. An unreachable node counts as not bootstrapped; an
// unreachable coordinator is an error, returned with the progress so far.
func (c *Client) Observe(ctx context.Context, nodeHealthURLs []string) (Progress, error) {
	pr := Progress{Phase: PhaseWaitingCoordinator}
	if err := c.CoordinatorHealthy(ctx); err != nil {
		pr.Message = err.Error()
		return pr, fmt.Errorf("observe: %w", err)
	}
	p, exists, err := c.Placement(ctx)
	if err != nil {
		pr.Message = err.Error()
		return pr, fmt.Errorf("observe: %w", err)
	}
	nss, err := c.Namespaces(ctx)
	if err != nil {
		pr.Message = err.Error()
		return pr, fmt.Errorf("observe: %w", err)
	}
	nodes, nodeMsg := c.nodeHealths(ctx, nodeHealthURLs)
	pr.Phase, pr.Message = assess(exists, p, nss, nodes)
	if nodeMsg != "" {
		pr.Message += "; " + nodeMsg
	}
	pr.ShardStates = p.ShardStates()
	pr.PlacementExists = exists
	pr.Instances = len(p.Instances)
	pr.Nodes = nodes
	pr.Namespaces = readiness(nss)
	return pr, nil
}

// assess is the pure decision: the first phase whose condition does not
// hold, and a one-line summary.
func assess(placementExists bool, p Placement, nss map[string]NamespaceInfo, nodes map[string]bool) (Phase, string) {
	if !placementExists {
		return PhasePlacement, "no placement"
	}
	if len(nss) == 0 {
		return PhaseNamespaces, "no namespaces"
	}
	shards := shardSummary(p)
	booted := 0
	for _, ok := range nodes {
		if ok {
			booted++
		}
	}
	nodeSummary := fmt.Sprintf("%d/%d nodes bootstrapped", booted, len(nodes))
	if !p.AllAvailable() || booted < len(nodes) {
		return PhaseBootstrapping, shards + "; " + nodeSummary
	}
	var notReady []string
	for name, info := range nss {
		if !info.Ready() {
			notReady = append(notReady, name)
		}
	}
	if len(notReady) > 0 {
		sort.Strings(notReady)
		return PhaseMarkingReady, "namespaces not ready: " + strings.Join(notReady, ", ")
	}
	return PhaseReady, shards + "; " + nodeSummary + "; all namespaces ready"
}

// shardSummary is e.g. "shards: 64/192 AVAILABLE, 128 INITIALIZING".
func shardSummary(p Placement) string {
	states := p.ShardStates()
	total := 0
	for _, n := range states {
		total += n
	}
	parts := []string{fmt.Sprintf("shards: %d/%d %s", states[ShardAvailable], total, ShardAvailable)}
	others := make([]string, 0, len(states))
	for s := range states {
		if s != ShardAvailable {
			others = append(others, s)
		}
	}
	sort.Strings(others)
	for _, s := range others {
		parts = append(parts, fmt.Sprintf("%d %s", states[s], s))
	}
	return strings.Join(parts, ", ")
}

func readiness(nss map[string]NamespaceInfo) map[string]bool {
	out := make(map[string]bool, len(nss))
	for name, info := range nss {
		out[name] = info.Ready()
	}
	return out
}

// nodeHealths asks every node; failures count as not bootstrapped and are
// summarised in the returned message.
func (c *Client) nodeHealths(ctx context.Context, urls []string) (map[string]bool, string) {
	out := make(map[string]bool, len(urls))
	var errs []string
	for _, u := range urls {
		hctx, cancel := context.WithTimeout(ctx, nodeHealthTimeout)
		h, err := NodeHealth(hctx, c.httpClient(), u)
		cancel()
		if err != nil {
			errs = append(errs, err.Error())
		}
		out[u] = err == nil && h.OK && h.Bootstrapped
	}
	return out, strings.Join(errs, "; ")
}

// bootstrapper carries one Bootstrap call's state.
type bootstrapper struct {
	c      *Client
	poll   time.Duration
	report func(Progress)
	pr     Progress
}

// set records phase and message and reports when either changed.
func (b *bootstrapper) set(ph Phase, msg string) {
	if ph == b.pr.Phase && msg == b.pr.Message {
		return
	}
	b.pr.Phase, b.pr.Message = ph, msg
	if b.report != nil {
		b.report(b.pr.clone())
	}
}

// until calls step every poll interval until it reports done. Transient
// errors (coordinator unreachable or 5xx) are shown in the message and
// retried; other errors end the wait.
func (b *bootstrapper) until(ctx context.Context, step func() (bool, error)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		done, err := step()
		switch {
		case err != nil && transient(err) && ctx.Err() == nil:
			b.set(b.pr.Phase, "retrying: "+err.Error())
		case err != nil:
			if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
				return fmt.Errorf("%w (last: %v)", ctxErr, err)
			}
			return err
		case done:
			return nil
		}
		t.Reset(b.poll)
	}
}

// Bootstrap drives the cluster behind c to d, one phase at a time, and
// returns nil once it is ready:
//
//  1. waits until the coordinator's /health answers;
//  2. creates the placement only if none exists (an existing one is left
//     exactly as it is, whatever d says);
//  3. creates the namespaces of d that are missing (existing ones are not
//     changed);
//  4. waits until every shard of every instance is AVAILABLE and every
//     node in nodeHealthURLs says bootstrapped;
//  5. marks every namespace that is not READY ready, retrying until M3
//     agrees.
//
// Run on a ready cluster it only reads. It polls every poll (DefaultPoll if
// zero), calls report on every change of phase or message, and retries
// transient coordinator errors. Other errors, and ctx ending, end it.
func Bootstrap(ctx context.Context, c *Client, d Desired, nodeHealthURLs []string, poll time.Duration, report func(Progress)) (Progress, error) {
	if err := d.Validate(); err != nil {
		return Progress{}, fmt.Errorf("bootstrap: %w", err)
	}
	if poll <= 0 {
		poll = DefaultPoll
	}
	b := &bootstrapper{c: c, poll: poll, report: report}
	steps := []struct {
		phase Phase
		msg   string
		run   func(context.Context, Desired, []string) error
	}{
		{PhaseWaitingCoordinator, "waiting for coordinator " + pathHealth, b.waitCoordinator},
		{PhasePlacement, "checking placement", b.ensurePlacement},
		{PhaseNamespaces, "checking namespaces", b.ensureNamespaces},
		{PhaseBootstrapping, "waiting for shards and nodes", b.waitBootstrapped},
		{PhaseMarkingReady, "marking namespaces ready", b.markReady},
	}
	for _, s := range steps {
		b.set(s.phase, s.msg)
		if err := s.run(ctx, d, nodeHealthURLs); err != nil {
			return b.pr.clone(), fmt.Errorf("bootstrap: %s: %w", s.phase, err)
		}
	}
	b.set(PhaseReady, "cluster ready")
	return b.pr.clone(), nil
}

func (b *bootstrapper) waitCoordinator(ctx context.Context, _ Desired, _ []string) error {
	return b.until(ctx, func() (bool, error) {
		if err := b.c.CoordinatorHealthy(ctx); err != nil {
			if ctx.Err() != nil {
				return false, err
			}
			b.set(PhaseWaitingCoordinator, "waiting for coordinator: "+err.Error())
			return false, nil
		}
		return true, nil
	})
}

func (b *bootstrapper) ensurePlacement(ctx context.Context, d Desired, _ []string) error {
	return b.until(ctx, func() (bool, error) {
		p, exists, err := b.c.Placement(ctx)
		if err != nil {
			return false, err
		}
		if exists {
			b.pr.ShardStates = p.ShardStates()
			b.set(PhasePlacement, fmt.Sprintf("placement exists (version %d, %d instances); left as is", p.Version, len(p.Instances)))
			return true, nil
		}
		err = b.c.InitPlacement(ctx, d.NumShards, d.ReplicationFactor, d.Instances)
		if errors.Is(err, ErrAlreadyExists) {
			return false, nil // created concurrently: read it on the next round
		}
		if err != nil {
			return false, err
		}
		b.pr.PlacementCreated = true
		b.set(PhasePlacement, fmt.Sprintf("placement created: %d shards, replication factor %d, %d instances",
			d.NumShards, d.ReplicationFactor, len(d.Instances)))
		return true, nil
	})
}

func (b *bootstrapper) ensureNamespaces(ctx context.Context, d Desired, _ []string) error {
	return b.until(ctx, func() (bool, error) {
		nss, err := b.c.Namespaces(ctx)
		if err != nil {
			return false, err
		}
		for _, ns := range d.Namespaces {
			if _, ok := nss[ns.Name]; ok {
				continue
			}
			err := b.c.AddNamespace(ctx, ns)
			if err != nil && !errors.Is(err, ErrAlreadyExists) {
				return false, err
			}
			if err == nil {
				b.pr.NamespacesCreated = append(b.pr.NamespacesCreated, ns.Name)
				b.set(PhaseNamespaces, "namespace created: "+ns.Name)
			}
		}
		nss, err = b.c.Namespaces(ctx)
		if err != nil {
			return false, err
		}
		b.pr.Namespaces = readiness(nss)
		for _, ns := range d.Namespaces {
			if _, ok := nss[ns.Name]; !ok {
				return false, nil
			}
		}
		return true, nil
	})
}

func (b *bootstrapper) waitBootstrapped(ctx context.Context, _ Desired, urls []string) error {
	return b.until(ctx, func() (bool, error) {
		p, exists, err := b.c.Placement(ctx)
		if err != nil {
			return false, err
		}
		if !exists {
			return false, fmt.Errorf("GET %s: placement disappeared", pathPlacement)
		}
		nodes, nodeMsg := b.c.nodeHealths(ctx, urls)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		b.pr.ShardStates = p.ShardStates()
		b.pr.Nodes = nodes
		booted := 0
		for _, ok := range nodes {
			if ok {
				booted++
			}
		}
		msg := fmt.Sprintf("%s; %d/%d nodes bootstrapped", shardSummary(p), booted, len(nodes))
		if nodeMsg != "" {
			msg += "; " + nodeMsg
		}
		b.set(PhaseBootstrapping, msg)
		return p.AllAvailable() && booted == len(nodes), nil
	})
}

func (b *bootstrapper) markReady(ctx context.Context, _ Desired, _ []string) error {
	return b.until(ctx, func() (bool, error) {
		nss, err := b.c.Namespaces(ctx)
		if err != nil {
			return false, err
		}
		b.pr.Namespaces = readiness(nss)
		names := slices.Sorted(maps.Keys(nss))
		var waiting []string
		for _, name := range names {
			if nss[name].Ready() {
				continue
			}
			ready, err := b.c.MarkReady(ctx, name)
			if err != nil {
				return false, err
			}
			b.pr.Namespaces[name] = ready
			if !ready {
				waiting = append(waiting, name)
			}
		}
		if len(waiting) > 0 {
			b.set(PhaseMarkingReady, "waiting for nodes to serve: "+strings.Join(waiting, ", "))
			return false, nil
		}
		return true, nil
	})
}
