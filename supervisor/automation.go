package supervisor

import (
	"context"
	"fmt"
	"net"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// registeredHost is this host as the cluster registry lists it: its roles
// (cluster.roles), and on its advertise address its dbnode endpoint and
// coordinator URL for the roles it has; its isolation group and weight from
// cluster.isolationGroup and cluster.weight (by default its node name and
// 100: one group per host). A host that holds the cluster CA (holdsCA)
// and sets cluster.joinListen also lists its join endpoint.
func registeredHost(cfg config.Config, holdsCA bool) (cluster.Host, error) {
	adv, cc := cfg.Cluster.Advertise, cfg.Cluster
	h := cluster.Host{Name: cfg.NodeName, IsolationGroup: cc.IsolationGroup, Weight: cc.Weight, Hostname: adv, HoldsCA: holdsCA}
	if h.HoldsCA && cc.JoinListen != "" {
		_, port, err := net.SplitHostPort(cc.JoinListen)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("cluster.joinListen %q: %w", cc.JoinListen, err)
		}
		h.JoinURL = "https://" + net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleDBNode) {
		_, port, err := net.SplitHostPort(cfg.DBNode.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("dbnode listen address %q: %w", cfg.DBNode.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleDBNode)
		h.Endpoint = net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleCoordinator) {
		_, port, err := net.SplitHostPort(cfg.Coordinator.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("coordinator listen address %q: %w", cfg.Coordinator.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleCoordinator)
		h.Coordinator = "http://" + net.JoinHostPort(adv, port)
	}
	return h, nil
}

// runMultiHost is the cluster automation of a multi-host host
// (cluster.Automation): registered as registeredHost, campaigning for the
// placement controller, and, once the placement exists, namespaces and
// readiness as the M3 set-up drives them.
func (s *Supervisor) runMultiHost(ctx context.Context, local cluster.Local, holdsCA bool, desired spec.Cluster, updates <-chan spec.Cluster, setup *m3Setup) error {
	h, err := registeredHost(s.cfg, holdsCA)
	if err != nil {
		return err
	}
	_, remover := s.leave.parts()
	a := &cluster.Automation{Local: local, Host: h, RF: desired.M3.ReplicationFactor, Shards: desired.M3.NumShards,
		Forget:         remover.Forget,
		AfterPlacement: func(ctx context.Context) error { return setup.Run(ctx, desired, updates) }}
	return a.Run(ctx)
}
