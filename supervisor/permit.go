package supervisor

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
)

// permitGate is a planned-restart gate in multi-host mode (m3dbnode's, and
// m3coordinator's, so a new release also reaches the coordinators one host
// at a time): it takes the cluster-wide restart permit, only while every
// shard is AVAILABLE and, for m3dbnode, only while revision (the spec it
// restarts for) is not marked failed. The rollout actor gives the permit
// back once this host has settled. A host that already holds the permit
// (its other component, or a second planned restart before the first
// settled) restarts under it.
func (s *Supervisor) permitGate(revision string) func(context.Context) error {
	return func(ctx context.Context) error {
		// One component of this host at a time, so the host queues for the
		// permit once.
		select {
		case s.roll.permitSem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-s.roll.permitSem }()
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
		shards, notFailed := cluster.ShardsAvailable(c), cluster.NotFailed(e.Client(), revision)
		gate := func(ctx context.Context) error {
			if err := shards(ctx); err != nil {
				return err
			}
			return notFailed(ctx)
		}
		release, err := cluster.AcquirePermit(ctx, e.Client(), s.cfg.NodeName, gate)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.permitRelease = release
		s.mu.Unlock()
		s.roll.mu.Lock()
		s.roll.permitSince = time.Now()
		s.roll.mu.Unlock()
		s.log.Info("took the restart permit", zap.String("node", s.cfg.NodeName), zap.String("revision", revision))
		return nil
	}
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
