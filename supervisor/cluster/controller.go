package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// ElectionPrefix is the etcd election the controllers campaign in.
const ElectionPrefix = "/m3sup/v1/controller"

// Controller defaults.
const (
	DefaultControllerInterval = 5 * time.Second
	DefaultControllerTTL      = 10 * time.Second
)

// errLostLeadership: this controller's election key is gone (its session
// lease expired); it must not act again until it wins a new election.
var errLostLeadership = errors.New("controller lost its leadership")

// Controller is the cluster's one placement driver. Every host runs one;
// the etcd election lets one act at a time.
//
//	          ┌──────────── session lost (lease expired, etcd unreachable) ───┐
//	          ▼                                                               │
//	start → campaigning ──won──► leading: observe → Plan → act one step → wait ┘
//	          │                      │ (ticker or registry change)
//	          └───── ctx done ───────┴──► revoke lease (resigns) → stopped
//
// A leader whose session is lost stops at once: its context is cancelled,
// so an in-flight coordinator call is abandoned, and before every change it
// checks in etcd that its election key still exists. A successor starts
// from what etcd and the placement say; the only leader memory is when an
// absent host was last seen, and losing it delays a removal, never hastens
// one.
type Controller struct {
	Cli  *clientv3.Client
	M3   *m3.Client
	Node string // this host; the election value

	RF          int           // replication factor at init
	Shards      int           // shard count at init
	RemoveAfter time.Duration // zero means DefaultRemoveAfter
	Interval    time.Duration // re-observe period; zero means DefaultControllerInterval
	TTL         time.Duration // election session lease; zero means DefaultControllerTTL

	// Forget drops a host removed with `m3sup remove-host` once its
	// instance is out of the placement and every shard is AVAILABLE
	// (Forgettable): the caller's per-host state (its etcd member, its
	// keys), then, last, ForgetOps. It must be idempotent. Nil runs
	// ForgetOps alone.
	Forget func(ctx context.Context, name string) error

	Now    func() time.Time // nil means time.Now
	Logger *zap.Logger      // nil means no logs
	// OnStep, if set, is called by the leader after every step (status,
	// tests). It must not block.
	OnStep func(Step)
}

// Step is what the leader did in one round.
type Step struct {
	Node   string
	Action Action
	Err    error // reading state or performing Action failed
}

func (c *Controller) log() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

func (c *Controller) ttl() time.Duration {
	if c.TTL <= 0 {
		return DefaultControllerTTL
	}
	return c.TTL
}

// Run campaigns, leads while elected and campaigns again after losing the
// session, until ctx ends; it then resigns and returns nil.
func (c *Controller) Run(ctx context.Context) error {
	if c.Cli == nil || c.M3 == nil || c.Node == "" {
		return errors.New("cluster controller: etcd client, m3 client and node name are required")
	}
	delay := 250 * time.Millisecond
	for {
		err := c.term(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log().Warn("cluster controller term ended; campaigning again", zap.Error(err), zap.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, c.ttl())
	}
}

// term is one session: campaign, then lead until the session or ctx ends.
func (c *Controller) term(ctx context.Context) error {
	s, err := concurrency.NewSession(c.Cli, concurrency.WithTTL(int(ttlSeconds(c.ttl()))), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("controller session: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // ends the term the moment the lease is no longer refreshed
		defer wg.Done()
		select {
		case <-s.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
		// Revoking the lease deletes the election key: the successor need
		// not wait for the TTL. A lost session's lease is gone already.
		s.Orphan()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = c.Cli.Revoke(rctx, s.Lease())
		rcancel()
	}()

	e := concurrency.NewElection(s, ElectionPrefix)
	if err := e.Campaign(sctx, c.Node); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	// Campaign does not notice its own key vanishing with an expired lease.
	if err := c.stillLeader(sctx, e); err != nil {
		return err
	}
	c.log().Info("cluster controller leading", zap.String("node", c.Node))
	err = c.lead(sctx, e)
	c.log().Info("cluster controller stopped leading", zap.String("node", c.Node), zap.Error(err))
	return err
}

// stillLeader checks in etcd that e's key, created at e.Rev(), exists.
func (c *Controller) stillLeader(ctx context.Context, e *concurrency.Election) error {
	resp, err := c.Cli.Get(ctx, e.Key())
	if err != nil {
		return fmt.Errorf("check leadership: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != e.Rev() {
		return errLostLeadership
	}
	return nil
}

// lead steps on every tick and every registry change until ctx ends or
// leadership is lost.
func (c *Controller) lead(ctx context.Context, e *concurrency.Election) error {
	interval := c.Interval
	if interval <= 0 {
		interval = DefaultControllerInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	watch := c.Cli.Watch(ctx, RegistryPrefix, clientv3.WithPrefix())
	leaving := c.Cli.Watch(ctx, LeavingPrefix, clientv3.WithPrefix())
	seen := sightings{}
	last := ""
	for {
		a, err := c.step(ctx, e, seen)
		if errors.Is(err, errLostLeadership) || ctx.Err() != nil {
			if err == nil {
				err = ctx.Err()
			}
			return err
		}
		if c.OnStep != nil {
			c.OnStep(Step{Node: c.Node, Action: a, Err: err})
		}
		switch {
		case err != nil:
			c.log().Warn("cluster controller step failed", zap.Stringer("action", a), zap.Error(err))
		case a.Mutates() || a.String() != last:
			c.log().Info("cluster controller", zap.Stringer("action", a))
		}
		last = a.String()

		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			if watch == nil {
				watch = c.Cli.Watch(ctx, RegistryPrefix, clientv3.WithPrefix())
			}
			if leaving == nil {
				leaving = c.Cli.Watch(ctx, LeavingPrefix, clientv3.WithPrefix())
			}
		case _, ok := <-watch:
			if !ok {
				watch = nil // re-watch on the next tick, not in a tight loop
			}
		case _, ok := <-leaving:
			if !ok {
				leaving = nil
			}
		}
	}
}

// step observes, plans and performs at most one placement change.
func (c *Controller) step(ctx context.Context, e *concurrency.Election, seen sightings) (Action, error) {
	hosts, err := Hosts(ctx, c.Cli)
	if err != nil {
		return Action{Kind: KindWait, Reason: "registry unreadable"}, err
	}
	leaving, err := LeavingHosts(ctx, c.Cli)
	if err != nil {
		return Action{Kind: KindWait, Reason: "leaving hosts unreadable"}, err
	}
	p, exists, err := c.M3.Placement(ctx)
	if err != nil {
		return Action{Kind: KindWait, Reason: "placement unreadable"}, fmt.Errorf("read placement: %w", err)
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	seen.update(now, hosts, p)
	removeAfter := c.RemoveAfter
	if removeAfter <= 0 {
		removeAfter = DefaultRemoveAfter
	}
	a := Plan(
		Topology{RF: c.RF, Shards: c.Shards, Hosts: hosts, RemoveAfter: removeAfter, Leaving: slices.Sorted(maps.Keys(leaving))},
		Observed{PlacementExists: exists, Placement: p, LastSeen: seen, Now: now},
	)
	if !a.Mutates() {
		return a, c.forget(ctx, e, Forgettable(leaving, hosts, p, exists))
	}
	if err := c.stillLeader(ctx, e); err != nil {
		return a, err
	}
	return a, c.perform(ctx, a)
}

// forget finishes the removal of hosts removed with `m3sup remove-host`
// whose instance is gone (a remove-host that was not waited for, or whose
// caller died, ends here).
func (c *Controller) forget(ctx context.Context, e *concurrency.Election, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := c.stillLeader(ctx, e); err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		var err error
		if c.Forget != nil {
			err = c.Forget(ctx, name)
		} else {
			_, err = c.Cli.Txn(ctx).Then(ForgetOps(name)...).Commit()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("forget removed host %s: %w", name, err))
			continue
		}
		c.log().Info("removed host forgotten: its instance is gone and every shard is AVAILABLE", zap.String("host", name))
	}
	return errors.Join(errs...)
}

// perform makes one placement change. Answers meaning "already done" (a
// predecessor's call landed) count as success: the next step re-reads.
func (c *Controller) perform(ctx context.Context, a Action) error {
	var err error
	switch a.Kind {
	case KindInit:
		err = c.M3.InitPlacement(ctx, c.Shards, c.RF, a.Instances)
		if errors.Is(err, m3.ErrAlreadyExists) {
			err = nil
		}
	case KindAdd:
		err = addInstance(ctx, c.M3, a.Instances[0])
	case KindRemove:
		err = removeInstance(ctx, c.M3, a.ID)
		if errors.Is(err, m3.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", a.Kind, err)
	}
	return nil
}

// ControllerLeader returns the node leading the placement controller, if
// any.
func ControllerLeader(ctx context.Context, cli *clientv3.Client) (node string, ok bool, err error) {
	resp, err := cli.Get(ctx, ElectionPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithLimit(1))...)
	if err != nil {
		return "", false, fmt.Errorf("read controller leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}
