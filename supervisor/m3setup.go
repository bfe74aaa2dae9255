package supervisor

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// runCluster drives M3's own set-up through the coordinator API until the
// cluster is ready (retrying with backoff), then applies every later change
// of the desired M3 topology: new namespaces are created and marked ready,
// changed retentions are updated in place. Nothing here restarts a process.
func (s *Supervisor) runCluster(ctx context.Context, c *m3.Client, desired spec.Cluster, updates <-chan spec.Cluster) error {
	start := time.Now()
	delay := time.Second
	first := true
	for {
		d, err := s.m3Desired(desired)
		if err != nil {
			return err
		}
		if !first {
			s.updateRetentions(ctx, c, d)
		}
		if err := s.bootstrap(ctx, c, d); err == nil {
			if first {
				s.mu.Lock()
				s.ready = true
				s.mu.Unlock()
				base, _ := c.Base(ctx)
				s.setPhase(PhaseReady, fmt.Sprintf("M3 accepts writes on %s (took %s)", base, time.Since(start).Round(100*time.Millisecond)))
				first = false
			} else {
				s.setPhase(PhaseReady, "desired M3 topology applied")
			}
			delay = time.Second
			select {
			case <-ctx.Done():
				return nil
			case desired = <-updates:
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("M3 cluster set-up did not finish; retrying", zap.Error(err), zap.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil
		case desired = <-updates:
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// m3Desired is the M3 topology this host's controller drives towards.
func (s *Supervisor) m3Desired(desired spec.Cluster) (m3.Desired, error) {
	inst, err := placementInstance(s.cfg.NodeName, desired.M3.IsolationGroup, desired.M3.Zone, s.cfg.DBNode.ListenAddress)
	if err != nil {
		return m3.Desired{}, err
	}
	d := m3.Desired{
		NumShards:         desired.M3.NumShards,
		ReplicationFactor: desired.M3.ReplicationFactor,
		Instances:         []m3.Instance{inst},
	}
	if s.multiHost() {
		// The cluster controller owns the placement (it exists before
		// runCluster runs, so Bootstrap leaves it as is); the instances only
		// satisfy Desired's validation.
		d.Instances = make([]m3.Instance, d.ReplicationFactor)
		for i := range d.Instances {
			d.Instances[i] = inst
			d.Instances[i].ID = fmt.Sprintf("%s-%d", inst.ID, i)
		}
	}
	for _, ns := range desired.M3.Namespaces {
		d.Namespaces = append(d.Namespaces, m3.Namespace{
			Name:         ns.Name,
			Retention:    ns.Retention.D(),
			BlockSize:    ns.BlockSize.D(),
			BufferPast:   ns.BufferPast.D(),
			BufferFuture: ns.BufferFuture.D(),
			IndexEnabled: ns.IndexEnabled,
		})
	}
	return d, nil
}

// bootstrap runs one bounded m3.Bootstrap, reporting its progress.
func (s *Supervisor) bootstrap(ctx context.Context, c *m3.Client, d m3.Desired) error {
	s.mu.Lock()
	nodes := s.nodes
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Cluster.ReadyTimeout.D())
	defer cancel()
	var lastPhase m3.Phase
	_, err := m3.Bootstrap(ctx, c, d, nodes, 50*time.Millisecond, func(p m3.Progress) {
		if p.Phase == m3.PhaseReady {
			return
		}
		if !s.isReady() {
			s.setPhase(PhaseBootstrapping, string(p.Phase)+phaseDetail(p))
		}
		if p.Phase != lastPhase {
			lastPhase = p.Phase
			s.log.Info("M3 "+string(p.Phase), zap.String("detail", p.Message))
		}
	})
	return err
}

// updateRetentions changes the retention of existing namespaces in place.
func (s *Supervisor) updateRetentions(ctx context.Context, c *m3.Client, d m3.Desired) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	have, err := c.Namespaces(cctx)
	if err != nil {
		s.log.Warn("read namespaces", zap.Error(err))
		return
	}
	for _, ns := range d.Namespaces {
		cur, ok := have[ns.Name]
		if !ok || cur.Retention == ns.Retention {
			continue
		}
		if err := c.UpdateNamespaceRetention(cctx, ns.Name, ns.Retention); err != nil {
			s.log.Error("update namespace retention", zap.String("namespace", ns.Name), zap.Error(err))
			continue
		}
		s.log.Info("namespace retention updated", zap.String("namespace", ns.Name),
			zap.Duration("from", cur.Retention), zap.Duration("to", ns.Retention))
	}
}

func phaseDetail(p m3.Progress) string {
	if p.Message == "" {
		return ""
	}
	return ": " + p.Message
}
