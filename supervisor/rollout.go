package supervisor

import (
	"context"
	"slices"
	"strings"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
)

// rolloutStatus is the progress of the desired m3dbnode revision
// (cluster.Rollout.Progress). In multi-host mode (cs not nil) it also fills
// in each registered host's components and dbnode spec, as the hosts
// published them.
func (s *Supervisor) rolloutStatus(ctx context.Context, cs *api.ClusterStatus, ag *agent.Agent) *api.RolloutStatus {
	roll := s.rollout()
	if roll == nil {
		return nil
	}
	var comps cluster.Components
	if ag != nil {
		comps = ag
	}
	var dbHosts []string
	if cs != nil {
		for _, h := range cs.Hosts {
			if slices.Contains(h.Roles, string(cluster.RoleDBNode)) {
				dbHosts = append(dbHosts, h.Name)
			}
		}
	}
	p, errs := roll.Progress(ctx, cs != nil, dbHosts, comps)
	for _, err := range errs {
		cs.Error = strings.TrimPrefix(cs.Error+"; "+err.Error(), "; ")
	}
	if p == nil {
		return nil
	}
	if cs != nil {
		for i := range cs.Hosts {
			h := &cs.Hosts[i]
			if !slices.Contains(h.Roles, string(cluster.RoleDBNode)) {
				continue
			}
			hs, ok := p.States[h.Name]
			if !ok {
				continue
			}
			for _, c := range hs.Components {
				h.Components = append(h.Components, api.HostComponent{Name: c.Name, State: c.State, Healthy: c.Healthy, Version: c.Version})
			}
			h.DBNode = &api.HostDBNode{Revision: hs.DBNode.Revision, Version: hs.DBNode.Version, Digest: hs.DBNode.Digest,
				OnDesired: hs.OnRevision(p.DesiredRevision)}
		}
	}
	out := &api.RolloutStatus{DesiredRevision: p.DesiredRevision, DesiredVersion: p.DesiredVersion,
		Hosts: p.Hosts, OnDesired: p.OnDesired, Message: p.Message}
	if f := p.Failure; f != nil {
		out.Halted = true
		out.Failure = &api.RolloutFailure{Revision: f.Revision, Version: f.Version, Host: f.Host, Reason: f.Reason, At: f.At}
	}
	return out
}
