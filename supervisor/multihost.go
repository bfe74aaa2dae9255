package supervisor

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/oklog/run"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// registeredHost is this host as the cluster registry lists it: its roles
// (cluster.roles), and on its advertise address its dbnode endpoint and
// coordinator URL for the roles it has; its isolation group and weight from
// cluster.isolationGroup and cluster.weight (by default its node name and
// 100: one group per host).
func (s *Supervisor) registeredHost() (cluster.Host, error) {
	adv, cc := s.cfg.Cluster.Advertise, s.cfg.Cluster
	h := cluster.Host{Name: s.cfg.NodeName, IsolationGroup: cc.IsolationGroup, Weight: cc.Weight, Hostname: adv}
	s.mu.Lock()
	h.HoldsCA = s.ca != nil
	s.mu.Unlock()
	if h.HoldsCA && cc.JoinListen != "" {
		_, port, err := net.SplitHostPort(cc.JoinListen)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("cluster.joinListen %q: %w", cc.JoinListen, err)
		}
		h.JoinURL = "https://" + net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleDBNode) {
		_, port, err := net.SplitHostPort(s.cfg.DBNode.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("dbnode listen address %q: %w", s.cfg.DBNode.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleDBNode)
		h.Endpoint = net.JoinHostPort(adv, port)
	}
	if cc.HasRole(config.RoleCoordinator) {
		_, port, err := net.SplitHostPort(s.cfg.Coordinator.ListenAddress)
		if err != nil {
			return cluster.Host{}, fmt.Errorf("coordinator listen address %q: %w", s.cfg.Coordinator.ListenAddress, err)
		}
		h.Roles = append(h.Roles, cluster.RoleCoordinator)
		h.Coordinator = "http://" + net.JoinHostPort(adv, port)
	}
	return h, nil
}

// runMultiHost is the cluster automation of a multi-host host: it keeps the
// host registered, campaigns for the placement controller (which inits the
// placement once replication-factor hosts are registered and adds later
// ones), and drives namespaces and readiness like runCluster, but never
// creates the placement itself.
func (s *Supervisor) runMultiHost(ctx context.Context, cli *clientv3.Client, c *m3.Client, desired spec.Cluster, updates <-chan spec.Cluster) error {
	h, err := s.registeredHost()
	if err != nil {
		return err
	}
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		r := &cluster.Registrar{Cli: cli, Host: h, Logger: s.log.Named("registry")}
		g.Add(func() error { return r.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		ctl := &cluster.Controller{Cli: cli, M3: c, Node: s.cfg.NodeName,
			RF: desired.M3.ReplicationFactor, Shards: desired.M3.NumShards, Logger: s.log.Named("controller"),
			Forget: func(ctx context.Context, name string) error { return forgetHost(ctx, cli, name, s.cfg.NodeName) },
			OnStep: func(st cluster.Step) {
				if st.Action.Mutates() || st.Err != nil {
					s.log.Info("cluster controller step", zap.String("action", st.Action.String()), zap.Error(st.Err))
				}
			}}
		g.Add(func() error { return ctl.Run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if !s.waitPlacement(ctx, c, desired.M3.ReplicationFactor) {
				return nil
			}
			return s.runCluster(ctx, c, desired, updates)
		}, func(error) { cancel() })
	}
	return g.Run()
}

// waitPlacement waits until the controller leader has created the
// placement; false means ctx ended first.
func (s *Supervisor) waitPlacement(ctx context.Context, c *m3.Client, rf int) bool {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, exists, err := c.Placement(cctx)
		cancel()
		if err == nil && exists {
			return true
		}
		msg := fmt.Sprintf("waiting for %d hosts to register and the cluster controller to create the placement", rf)
		if err != nil {
			msg += " (coordinator: " + err.Error() + ")"
		}
		s.setPhase(PhaseBootstrapping, msg)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}
