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

// plan fetches the desired release (once per release spec, and only when a
// component runs its binaries), pulls the components' images (once per
// reference) and renders the components of a desired state; with write it
// also materializes them.
//
// A desired m3dbnode spec marked failed is replaced by the last good one
// (cluster.Rollout.Effective), and the rollout records which revision the
// rendered m3dbnode runs.
func (s *Supervisor) plan(ctx context.Context, lay layout, ch store.Change, etcdHostPort string, write bool) ([]agent.Component, error) {
	roll := s.rollout()
	if roll != nil {
		ch.Cluster = roll.Effective(ctx, ch.Cluster)
	}
	rel, err := s.release(ctx, lay, ch.Cluster.Release, needsRelease(ch.Cluster))
	if err != nil {
		return nil, err
	}
	if err := s.pullImages(ctx, ch.Cluster); err != nil {
		return nil, err
	}
	if write && s.multiHost() {
		s.mu.Lock()
		m := s.member
		s.mu.Unlock()
		if m != nil {
			if me, err := m.FollowVoters(ctx); err == nil {
				s.mu.Lock()
				s.m3Etcd = me
				s.mu.Unlock()
			} else if ctx.Err() == nil {
				s.log.Warn("M3's configs keep the etcd voters they had (their etcd clients follow the member list anyway)", zap.Error(err))
			}
		}
	}
	r, err := s.render(lay, ch.Cluster, ch.Controls, rel, etcdHostPort)
	if err != nil {
		return nil, err
	}
	if roll != nil {
		roll.Record(r.dbHash, r.dbRevision)
	}
	if write {
		if err := materialize(r); err != nil {
			return nil, err
		}
	}
	return r.comps, nil
}

// release returns the fetched and unpacked release for r, fetching it only
// when this process has not done so yet. When no component needs the
// binaries (every one runs an image) nothing is fetched: the release then
// only names the version.
func (s *Supervisor) release(ctx context.Context, lay layout, r spec.Release, need bool) (release, error) {
	s.mu.Lock()
	rel, ok := s.releases[r]
	s.mu.Unlock()
	if ok && (rel.Dir != "" || !need) {
		return rel, nil
	}
	var err error
	if need {
		rel, err = s.fetchRelease(ctx, lay, r)
	} else {
		rel = release{Version: r.Version}
	}
	if err != nil {
		return rel, err
	}
	s.mu.Lock()
	if s.releases == nil {
		s.releases = map[spec.Release]release{}
	}
	s.releases[r] = rel
	s.mu.Unlock()
	return rel, nil
}

// applyChange turns one desired-state change into agent updates (which
// restart exactly the components whose hash changed) and a cluster update
// (namespaces change through M3's API, restarting nothing).
func (s *Supervisor) applyChange(ctx context.Context, lay layout, ch store.Change, etcdHostPort string, ag *agent.Agent, cluster chan spec.Cluster) {
	start := time.Now()
	defer func() { s.status.metrics.reconcile.Observe(time.Since(start).Seconds()) }()
	comps, err := s.plan(ctx, lay, ch, etcdHostPort, true)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("cannot apply the desired state; keeping the current one", zap.Int64("revision", ch.Revision), zap.Error(err))
			s.status.setMessage(fmt.Sprintf("desired state at revision %d not applied: %v", ch.Revision, err))
		}
		return
	}
	if err := ag.Update(comps); err != nil {
		s.log.Error("update components", zap.Error(err))
	}
	select {
	case <-cluster:
	default:
	}
	cluster <- ch.Cluster
}

// everyShardAvailable is m3dbnode's planned-restart gate: only while every
// shard of every instance is AVAILABLE can the cluster afford a node down.
// A lone host before its placement exists loses nothing to a restart.
func (s *Supervisor) everyShardAvailable(ctx context.Context) error {
	s.mu.Lock()
	c := s.m3
	s.mu.Unlock()
	return c.WaitAllAvailable(ctx, 250*time.Millisecond, true)
}

// dbnodeBootstrapped is m3dbnode's health: its /health says bootstrapped.
func (s *Supervisor) dbnodeBootstrapped(ctx context.Context) error {
	s.mu.Lock()
	nodes := s.nodes
	s.mu.Unlock()
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

// coordinatorHealthy is m3coordinator's health: its /health answers.
func (s *Supervisor) coordinatorHealthy(ctx context.Context) error {
	s.mu.Lock()
	c := s.m3
	s.mu.Unlock()
	return c.CoordinatorHealthy(ctx)
}
