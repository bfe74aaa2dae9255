package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/readiness"
)

// Status implements api.Provider.
func (s *Supervisor) Status(ctx context.Context) api.Status {
	s.mu.Lock()
	st := api.Status{
		Node:    s.cfg.NodeName,
		Version: s.opts.Version,
		Phase:   s.phase,
		Message: s.message,
	}
	st.StateErrors = slices.Clone(s.stateErrs.cur)
	etcd, rt, ag, client := s.etcd, s.rt, s.agent, s.m3
	s.mu.Unlock()
	if g := s.cpuGuard.Load(); g != nil {
		d := g.decision
		st.CPUCoreGuard = &d
	}

	st.Etcd.State = "starting"
	if etcd != nil {
		st.Etcd.State = "running"
		st.Etcd.Endpoint = etcd.Endpoint()
		st.Etcd.Leader = etcd.IsLeader()
		if s.multiHost() {
			st.Etcd.Role = "voter"
			if !etcd.Member() {
				st.Etcd.Role = "client" // no member here; Endpoint is a voter's
			}
		}
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
	st.M3.Phase = "waiting"
	if client != nil {
		p, errText := s.observeM3Status(ctx)
		st.M3 = m3Status(p, errText)
		if s.isReady() {
			st.M3.Phase = "ready"
		}
	}
	if etcd != nil && s.multiHost() {
		st.Cluster = clusterStatus(ctx, etcd.Client())
	}
	if etcd != nil {
		st.Rollout = s.rolloutStatus(ctx, st.Cluster, ag)
	}
	// Last: the components' state as of now, not as of before the M3 look.
	if ag != nil {
		st.Components = ag.Statuses()
	}
	st.Readiness = s.judge(st.Components)
	st.Ready = st.Readiness.Ready
	return st
}

// verdict is whether this host serves M3 now (see package readiness).
func (s *Supervisor) verdict() readiness.Verdict {
	s.mu.Lock()
	ag := s.agent
	s.mu.Unlock()
	var comps []agent.Status
	if ag != nil {
		comps = ag.Statuses()
	}
	return s.judge(comps)
}

func (s *Supervisor) judge(comps []agent.Status) readiness.Verdict {
	s.mu.Lock()
	everReady, setup := s.ready, phaseLine(s.phase, s.message)
	s.mu.Unlock()
	return readiness.Judge(everReady, setup, comps)
}

// observeM3Status looks at M3 briefly: status and metrics must answer at
// once, so when M3 is slow (e.g. its etcd client reconnecting after an m3sup
// restart) the last observation stands in, marked stale.
func (s *Supervisor) observeM3Status(ctx context.Context) (m3.Progress, string) {
	s.mu.Lock()
	client, nodes := s.m3, s.nodes
	last, lastErr, failedAt := s.lastObserved, s.lastObserveErr, s.lastObserveFail
	s.mu.Unlock()
	if client == nil {
		return m3.Progress{}, "not started"
	}
	// After a failed look, answer from the last observation for a second
	// rather than make every status call wait on an unresponsive M3.
	if !failedAt.IsZero() && time.Since(failedAt) < time.Second {
		return last, "stale: " + lastErr
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	p, err := client.Observe(cctx, nodes)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastObserved, s.lastObserveFail = p, time.Time{}
		return p, ""
	}
	s.lastObserveErr, s.lastObserveFail = err.Error(), time.Now()
	if s.lastObserved.Phase != "" {
		return s.lastObserved, "stale: " + err.Error()
	}
	return p, err.Error()
}

// observeM3 is observeM3Status for metrics: ok when anything was observed.
func (s *Supervisor) observeM3(ctx context.Context) (m3.Progress, bool) {
	p, _ := s.observeM3Status(ctx)
	return p, p.Phase != ""
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
	if v := s.verdict(); !v.Ready {
		return errors.New(v.Reason)
	}
	s.mu.Lock()
	client, nodes, phase := s.m3, s.nodes, s.phase
	s.mu.Unlock()
	if client == nil {
		return fmt.Errorf("phase %s", phase)
	}
	p, err := client.Observe(ctx, nodes)
	if err != nil {
		return err
	}
	// The one M3 judgement (m3.Observe's phase): placement, every shard
	// AVAILABLE, every node bootstrapped, every namespace ready.
	if p.Phase != m3.PhaseReady {
		return fmt.Errorf("%s: %s", p.Phase, p.Message)
	}
	return nil
}

// clusterStatus reads the multi-host view from etcd: the registered hosts
// with their etcd role (and hosts being removed with remove-host), the controller leader and the permit holder.
func clusterStatus(ctx context.Context, cli *clientv3.Client) *api.ClusterStatus {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := &api.ClusterStatus{Hosts: []api.HostStatus{}}
	var errs []error
	members := map[string]string{} // member name → voter or learner
	if ml, err := cli.MemberList(cctx); err == nil {
		for _, m := range ml.Members {
			role := "voter"
			if m.IsLearner {
				role = "learner"
			}
			members[m.Name] = role
		}
	} else {
		errs = append(errs, err)
	}
	hosts, err := cluster.Hosts(cctx, cli)
	if err != nil {
		errs = append(errs, err)
	}
	leaving, err := cluster.LeavingHosts(cctx, cli)
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range hosts {
		_, isLeaving := leaving[h.Name]
		hs := api.HostStatus{Name: h.Name, Endpoint: h.Endpoint, Roles: []string{}, EtcdRole: "client",
			IsolationGroup: h.IsolationGroup, Weight: h.Weight, Leaving: isLeaving}
		if r, ok := members[h.Name]; ok {
			hs.EtcdRole = r
		}
		hs.HoldsCA, hs.JoinURL = h.HoldsCA, h.JoinURL
		for _, r := range h.Roles {
			hs.Roles = append(hs.Roles, string(r))
		}
		out.Hosts = append(out.Hosts, hs)
	}
	for name, l := range leaving {
		if l.RemovedBy == "" || slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
			continue // a host that leaves itself is registered until it left
		}
		hs := api.HostStatus{Name: name, Roles: []string{}, EtcdRole: "client", Leaving: true, RemovedBy: l.RemovedBy}
		if r, ok := members[name]; ok {
			hs.EtcdRole = r
		}
		out.Hosts = append(out.Hosts, hs)
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Name < out.Hosts[j].Name })
	if leader, ok, err := cluster.ControllerLeader(cctx, cli); err != nil {
		errs = append(errs, err)
	} else if ok {
		out.ControllerLeader = leader
	}
	if holder, held, err := cluster.PermitHolder(cctx, cli); err != nil {
		errs = append(errs, err)
	} else {
		out.PermitHolder, out.PermitHeld = holder, held
	}
	if err := errors.Join(errs...); err != nil {
		out.Error = err.Error()
	}
	return out
}
