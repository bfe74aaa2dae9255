package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// desiredComponents turns one desired-state change into this host's
// components, in three steps: fetch what it needs (the release, once per
// release spec and only when a component runs its binaries, and the images,
// once per reference: artifacts), render the components (render.Components:
// pure), then write their directories and files (materialize).
//
// A desired m3dbnode spec marked failed is replaced by the last good one
// (cluster.Rollout.Effective), and the rollout records which revision the
// rendered m3dbnode runs.
func (s *Supervisor) desiredComponents(ctx context.Context, ch store.Change, etcdHostPort string) ([]agent.Component, error) {
	roll := s.parts.load().roll
	if roll != nil {
		ch.Cluster = roll.Effective(ctx, ch.Cluster)
	}
	rel, err := s.art.fetch(ctx, ch.Cluster)
	if err != nil {
		return nil, err
	}
	s.followVoters(ctx)
	in := s.renderInput(ch.Cluster, ch.Controls, rel, etcdHostPort)
	r, err := s.render(in)
	if err != nil {
		return nil, err
	}
	if roll != nil {
		roll.Record(r.DBNodeHash, dbRevision(in, r))
	}
	if err := materialize(r); err != nil {
		return nil, err
	}
	s.attachChecks(r.Components, in)
	return r.Components, nil
}

// followVoters updates how M3 reaches etcd to the voters of now
// (multi-host mode), for the configs rendered next.
func (s *Supervisor) followVoters(ctx context.Context) {
	if !s.multiHost() {
		return
	}
	m := s.parts.load().member
	if m == nil {
		return
	}
	me, err := m.FollowVoters(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("M3's configs keep the etcd voters they had (their etcd clients follow the member list anyway)", zap.Error(err))
		}
		return
	}
	s.parts.update(func(u *up) { u.m3Etcd = me })
}

// applyChange turns one desired-state change into agent updates (which
// restart exactly the components whose hash changed) and a cluster update
// (namespaces change through M3's API, restarting nothing). It reports
// whether the change was applied: one that was not (a fetch failed, the
// data dir is full so its configs cannot be written) is logged here and
// the caller tries it again.
func (s *Supervisor) applyChange(ctx context.Context, ch store.Change, etcdHostPort string, ag *agent.Agent, cluster chan spec.Cluster) bool {
	start := time.Now()
	defer func() { s.status.metrics.reconcile.Observe(time.Since(start).Seconds()) }()
	comps, err := s.desiredComponents(ctx, ch, etcdHostPort)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("cannot apply the desired state; keeping the current one", zap.Int64("revision", ch.Revision), zap.Error(err))
			s.status.setMessage(fmt.Sprintf("desired state at revision %d not applied: %v", ch.Revision, err))
		}
		return false
	}
	if err := ag.Update(comps); err != nil {
		s.log.Error("update components", zap.Error(err))
	}
	select {
	case <-cluster:
	default:
	}
	cluster <- ch.Cluster
	return true
}

// everyShardAvailable is m3dbnode's planned-restart gate: only while every
// shard of every instance is AVAILABLE can the cluster afford a node down.
// A lone host before its placement exists loses nothing to a restart.
func (s *Supervisor) everyShardAvailable(ctx context.Context) error {
	c := s.parts.load().m3
	return c.WaitAllAvailable(ctx, 250*time.Millisecond, true)
}

// dbnodeBootstrapped is m3dbnode's health: its /health says bootstrapped.
func (s *Supervisor) dbnodeBootstrapped(ctx context.Context) error {
	nodes := s.parts.load().nodes
	for _, u := range nodes {
		h, err := m3.NodeHealth(ctx, nil, u)
		if err != nil {
			return err
		}
		if !h.Bootstrapped {
			return errors.New("not bootstrapped")
		}
	}
	return nil
}

// dbnodeAnswers is m3dbnode's liveness: its /health answers, bootstrapped
// or not (a bootstrap answers all along).
func (s *Supervisor) dbnodeAnswers(ctx context.Context) error {
	for _, u := range s.parts.load().nodes {
		if _, err := m3.NodeHealth(ctx, nil, u); err != nil {
			return err
		}
	}
	return nil
}

// coordinatorHealthy is m3coordinator's health: its /health answers.
func (s *Supervisor) coordinatorHealthy(ctx context.Context) error {
	c := s.parts.load().m3
	return c.CoordinatorHealthy(ctx)
}
