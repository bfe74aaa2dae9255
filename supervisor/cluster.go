package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// runCluster drives M3's own bring-up through the coordinator API until the
// cluster is ready, retrying with backoff, then idles until ctx is done.
func (s *Supervisor) runCluster(ctx context.Context, c *m3.Client, desired spec.Cluster) error {
	inst, err := placementInstance(s.cfg.NodeName, desired.M3.IsolationGroup, desired.M3.Zone, s.cfg.DBNode.ListenAddress)
	if err != nil {
		return err
	}
	d := m3.Desired{
		NumShards:         desired.M3.NumShards,
		ReplicationFactor: desired.M3.ReplicationFactor,
		Instances:         []m3.Instance{inst},
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
	s.mu.Lock()
	nodes := s.nodes
	s.mu.Unlock()

	s.setPhase(PhaseBootstrapping, "waiting for the coordinator")
	start := time.Now()
	delay := time.Second
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, s.cfg.Cluster.ReadyTimeout.D())
		var lastPhase m3.Phase
		prog, err := m3.Bootstrap(attemptCtx, c, d, nodes, 250*time.Millisecond, func(p m3.Progress) {
			s.mu.Lock()
			s.m3prog = p
			s.phase, s.message = PhaseBootstrapping, string(p.Phase)+phaseDetail(p)
			s.mu.Unlock()
			if p.Phase != lastPhase {
				lastPhase = p.Phase
				s.log.Info("M3 "+string(p.Phase), zap.String("detail", p.Message))
			}
		})
		cancel()
		if err == nil {
			s.mu.Lock()
			s.m3prog = prog
			s.ready = true
			s.mu.Unlock()
			s.metrics.ready.Set(1)
			s.setPhase(PhaseReady, fmt.Sprintf("M3 accepts writes on %s (took %s)", c.BaseURL, time.Since(start).Round(100*time.Millisecond)))
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("M3 cluster bootstrap did not finish; retrying", zap.Error(err), zap.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
	<-ctx.Done()
	return nil
}

func phaseDetail(p m3.Progress) string {
	if p.Message == "" {
		return ""
	}
	return ": " + p.Message
}

// Status implements api.Provider.
func (s *Supervisor) Status(ctx context.Context) api.Status {
	s.mu.Lock()
	st := api.Status{
		Node:    s.cfg.NodeName,
		Version: s.opts.Version,
		Phase:   s.phase,
		Message: s.message,
		Ready:   s.ready,
	}
	etcd, rt, ag, client, nodes := s.etcd, s.rt, s.agent, s.m3, s.nodes
	s.mu.Unlock()

	st.Etcd.State = "starting"
	if etcd != nil {
		st.Etcd.State = "running"
		st.Etcd.Endpoint = etcd.Endpoint()
		st.Etcd.Leader = etcd.IsLeader()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if ml, err := etcd.Client().MemberList(cctx); err == nil {
			st.Etcd.Members = len(ml.Members)
		} else {
			st.Etcd.Error = err.Error()
		}
		if sr, err := etcd.Client().Status(cctx, etcd.Endpoint()); err == nil {
			st.Etcd.DBSize = sr.DbSize
		}
		cancel()
	}
	if rt != nil {
		info := rt.Info()
		st.Containerd = api.ContainerdStatus{Mode: string(info.Mode), Address: info.Address, Version: info.Version,
			Connected: info.Connected, PID: info.ManagedPID, Namespace: s.cfg.Runtime.Containerd.Namespace}
	} else {
		st.Containerd.Mode = "starting"
	}
	if ag != nil {
		st.Components = ag.Statuses()
	}
	st.M3.Phase = "waiting"
	if client != nil {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		p, err := client.Observe(cctx, nodes)
		cancel()
		if err != nil {
			st.M3.Error = err.Error()
		}
		st.M3 = m3Status(p, st.M3.Error)
		if s.isReady() {
			st.M3.Phase = "ready"
		}
	}
	return st
}

func m3Status(p m3.Progress, errText string) api.M3Status {
	out := api.M3Status{Phase: string(p.Phase), Message: p.Message, Shards: p.ShardStates, Error: errText,
		PlacementExists: p.PlacementExists, Instances: p.Instances, NodesBootstrapped: p.NodesBootstrapped()}
	for name, ready := range p.Namespaces {
		out.Namespaces = append(out.Namespaces, api.NamespaceStatus{Name: name, Ready: ready})
	}
	sort.Slice(out.Namespaces, func(i, j int) bool { return out.Namespaces[i].Name < out.Namespaces[j].Name })
	return out
}

func (s *Supervisor) isReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// Ready implements api.Provider: the cluster accepts writes when bootstrap
// finished and, right now, the coordinator answers, every shard is AVAILABLE,
// every node is bootstrapped and every namespace is ready.
func (s *Supervisor) Ready(ctx context.Context) error {
	s.mu.Lock()
	ready, client, nodes, phase := s.ready, s.m3, s.nodes, s.phase
	s.mu.Unlock()
	if !ready || client == nil {
		return fmt.Errorf("phase %s", phase)
	}
	p, err := client.Observe(ctx, nodes)
	if err != nil {
		return err
	}
	if !p.PlacementExists {
		return errors.New("no placement")
	}
	for state, n := range p.ShardStates {
		if state != "AVAILABLE" && n > 0 {
			return fmt.Errorf("%d shards %s", n, state)
		}
	}
	if !p.NodesBootstrapped() {
		return errors.New("not every node is bootstrapped")
	}
	for name, r := range p.Namespaces {
		if !r {
			return fmt.Errorf("namespace %s not ready", name)
		}
	}
	return nil
}
