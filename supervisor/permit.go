package supervisor

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
)

// permitPoll is how often a permit holder checks whether its restarted
// m3dbnode has settled. A variable only so tests can shorten it.
var permitPoll = 500 * time.Millisecond

// dbnodePermitGate is m3dbnode's planned-restart gate in multi-host mode:
// it takes the cluster-wide restart permit (only while every shard is
// AVAILABLE) and starts the watcher that gives it back once the restarted
// node is bootstrapped and every shard is AVAILABLE again. A host that
// already holds the permit (a second planned restart before the first
// settled) restarts under it.
func (s *Supervisor) dbnodePermitGate(ctx context.Context) error {
	s.mu.Lock()
	held := s.permitRelease != nil
	e, c := s.etcd, s.m3
	s.mu.Unlock()
	if held {
		return nil
	}
	if e == nil || c == nil {
		return errors.New("restart permit: etcd or M3 not connected yet")
	}
	release, err := cluster.AcquirePermit(ctx, e.Client(), s.cfg.NodeName, cluster.ShardsAvailable(c))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.permitRelease = release
	s.mu.Unlock()
	s.log.Info("took the restart permit", zap.String("node", s.cfg.NodeName))
	go s.releasePermitWhenSettled(ctx)
	return nil
}

// dbnodeSettled reports whether m3dbnode runs the desired spec, healthy
// (bootstrapped), with no planned restart pending: the restart the permit
// was taken for is done as far as this host goes — or it was called off
// because a newer desired state no longer asks for it (the agent then goes
// back from waiting to running on the old, still desired, spec). While the
// restart is pending or under way the agent reports waiting, stopping,
// starting or an unhealthy running process, never a healthy running one.
// An m3dbnode the operator stopped keeps the permit until it runs again:
// its replicas are down, so no other host may restart its own.
func dbnodeSettled(st agent.Status) bool {
	return st.State == agent.StateRunning && st.Healthy && st.DesiredActive && st.SpecHash == st.DesiredHash
}

// releasePermitWhenSettled waits until the restarted m3dbnode is
// bootstrapped and every shard is AVAILABLE, then releases the permit
// once. If ctx ends first (the supervisor stops) it releases the permit
// too; a host that dies instead loses it with its lease.
func (s *Supervisor) releasePermitWhenSettled(ctx context.Context) {
	defer s.releasePermit(context.WithoutCancel(ctx))
	tick := time.NewTicker(permitPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		ag, c := s.agent, s.m3
		s.mu.Unlock()
		if ag == nil || c == nil {
			continue
		}
		st, ok := ag.Status(DBNode)
		if !ok || !dbnodeSettled(st) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cluster.ShardsAvailable(c)(cctx)
		cancel()
		if err == nil {
			return
		}
	}
}

// releasePermit gives the restart permit back if this host holds it.
func (s *Supervisor) releasePermit(ctx context.Context) {
	s.mu.Lock()
	release := s.permitRelease
	s.permitRelease = nil
	s.mu.Unlock()
	if release == nil {
		return
	}
	if err := release(ctx); err != nil {
		s.log.Warn("release the restart permit", zap.Error(err))
		return
	}
	s.log.Info("released the restart permit", zap.String("node", s.cfg.NodeName))
}
