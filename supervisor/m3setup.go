package supervisor

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// m3Setup drives M3's own set-up through the coordinator API: the
// placement (single-node mode; in multi-host mode the cluster controller
// owns it), the namespaces and their readiness, and later changes of the
// desired M3 topology. Nothing here restarts a process.
//
// It reaches the daemon only through its fields: the M3 client, this
// host's m3dbnode /health URLs and the phase reporter (PhaseReady marks the
// host's set-up done in status).
type m3Setup struct {
	M3    *m3.Client
	Nodes []string // this host's m3dbnode /health URLs, if it runs one
	// Node, DBNodeListen and MultiHost shape this host's placement instance.
	Node         string
	DBNodeListen string
	MultiHost    bool
	ReadyTimeout time.Duration // one bounded m3.Bootstrap
	// Phase reports the daemon's phase (bootstrapping, ready) and message.
	Phase  func(phase, msg string)
	Logger *zap.Logger

	// ready: the set-up finished once (bootstrap phases are no longer
	// reported then).
	ready atomic.Bool
}

// Run drives the set-up until the cluster is ready (retrying with
// backoff), then applies every later change of the desired M3 topology
// from updates: new namespaces are created and marked ready, changed
// retentions are updated in place. It returns when ctx ends.
func (u *m3Setup) Run(ctx context.Context, desired spec.Cluster, updates <-chan spec.Cluster) error {
	start := time.Now()
	delay := time.Second
	first := true
	for {
		d, err := u.desired(desired)
		if err != nil {
			return err
		}
		if !first {
			u.updateRetentions(ctx, d)
		}
		if err := u.bootstrap(ctx, d); err == nil {
			if first {
				u.ready.Store(true)
				base, _ := u.M3.Base(ctx)
				u.Phase(PhaseReady, fmt.Sprintf("M3 accepts writes on %s (took %s)", base, time.Since(start).Round(100*time.Millisecond)))
				first = false
			} else {
				u.Phase(PhaseReady, "desired M3 topology applied")
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
		u.Logger.Warn("M3 cluster set-up did not finish; retrying", zap.Error(err), zap.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil
		case desired = <-updates:
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// desired is the M3 topology this host's set-up drives towards.
func (u *m3Setup) desired(desired spec.Cluster) (m3.Desired, error) {
	inst, err := placementInstance(u.Node, desired.M3.IsolationGroup, desired.M3.Zone, u.DBNodeListen)
	if err != nil {
		return m3.Desired{}, err
	}
	d := m3.Desired{
		NumShards:         desired.M3.NumShards,
		ReplicationFactor: desired.M3.ReplicationFactor,
		Instances:         []m3.Instance{inst},
	}
	if u.MultiHost {
		// The cluster controller owns the placement (it exists before
		// the set-up runs, so Bootstrap leaves it as is); the instances only
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
func (u *m3Setup) bootstrap(ctx context.Context, d m3.Desired) error {
	ctx, cancel := context.WithTimeout(ctx, u.ReadyTimeout)
	defer cancel()
	var lastPhase m3.Phase
	_, err := m3.Bootstrap(ctx, u.M3, d, u.Nodes, 50*time.Millisecond, func(p m3.Progress) {
		if p.Phase == m3.PhaseReady {
			return
		}
		if !u.ready.Load() {
			u.Phase(PhaseBootstrapping, string(p.Phase)+phaseDetail(p))
		}
		if p.Phase != lastPhase {
			lastPhase = p.Phase
			u.Logger.Info("M3 "+string(p.Phase), zap.String("detail", p.Message))
		}
	})
	return err
}

// updateRetentions changes the retention of existing namespaces in place.
func (u *m3Setup) updateRetentions(ctx context.Context, d m3.Desired) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	have, err := u.M3.Namespaces(cctx)
	if err != nil {
		u.Logger.Warn("read namespaces", zap.Error(err))
		return
	}
	for _, ns := range d.Namespaces {
		cur, ok := have[ns.Name]
		if !ok || cur.Retention == ns.Retention {
			continue
		}
		if err := u.M3.UpdateNamespaceRetention(cctx, ns.Name, ns.Retention); err != nil {
			u.Logger.Error("update namespace retention", zap.String("namespace", ns.Name), zap.Error(err))
			continue
		}
		u.Logger.Info("namespace retention updated", zap.String("namespace", ns.Name),
			zap.Duration("from", cur.Retention), zap.Duration("to", ns.Retention))
	}
}

func phaseDetail(p m3.Progress) string {
	if p.Message == "" {
		return ""
	}
	return ": " + p.Message
}

// placementInstance is this host's entry in the M3 placement.
func placementInstance(nodeName, isolationGroup, zone, listenAddress string) (m3.Instance, error) {
	hp := dialAddr(listenAddress)
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return m3.Instance{}, fmt.Errorf("dbnode.listenAddress %q: %w", listenAddress, err)
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		return m3.Instance{}, fmt.Errorf("dbnode.listenAddress %q: bad port: %w", listenAddress, err)
	}
	return m3.Instance{ID: nodeName, IsolationGroup: isolationGroup, Zone: zone, Weight: 100, Endpoint: hp, Hostname: host, Port: uint32(p)}, nil
}
