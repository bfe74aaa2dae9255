package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/oklog/run"
	"go.uber.org/zap"
)

// Automation is a multi-host host's share of running the cluster: it keeps
// the host registered (Registrar), campaigns for the placement controller
// (Controller: it inits the placement once replication-factor hosts are
// registered and adds later ones), and, once the controller leader has
// created the placement, runs AfterPlacement (the daemon's namespaces and
// readiness, which never create the placement themselves).
//
//	Run ─┬─ Registrar.Run
//	     ├─ Controller.Run
//	     └─ wait for the placement ─► AfterPlacement
//
// The first of the three to return ends the others; Run returns once all
// have, with the first one's error.
type Automation struct {
	Local  Local
	Host   Host // this host as the registry lists it
	RF     int  // replication factor at init
	Shards int  // shard count at init
	// Forget is the controller's Controller.Forget.
	Forget func(ctx context.Context, name string) error
	// AfterPlacement runs once the placement exists, until ctx ends.
	AfterPlacement func(ctx context.Context) error
}

// Run runs the automation until ctx ends or a part fails.
func (a *Automation) Run(ctx context.Context) error {
	l := a.Local
	log := l.logger()
	reg := &Registrar{Cli: l.Etcd, Host: a.Host, Logger: log.Named("registry")}
	ctl := &Controller{Cli: l.Etcd, M3: l.M3, Node: l.Node,
		RF: a.RF, Shards: a.Shards, Logger: log.Named("controller"), Forget: a.Forget,
		OnStep: func(st Step) {
			if st.Action.Mutates() || st.Err != nil {
				log.Info("cluster controller step", zap.String("action", st.Action.String()), zap.Error(st.Err))
			}
		}}
	var g run.Group
	for _, act := range []func(context.Context) error{
		reg.Run,
		ctl.Run,
		func(ctx context.Context) error {
			if !a.waitPlacement(ctx) {
				return nil
			}
			return a.AfterPlacement(ctx)
		},
	} {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return act(ctx) }, func(error) { cancel() })
	}
	return g.Run()
}

// waitPlacement waits until the controller leader has created the
// placement; false means ctx ended first.
func (a *Automation) waitPlacement(ctx context.Context) bool {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, exists, err := a.Local.M3.Placement(cctx)
		cancel()
		if err == nil && exists {
			return true
		}
		msg := fmt.Sprintf("waiting for %d hosts to register and the cluster controller to create the placement", a.RF)
		if err != nil {
			msg += " (coordinator: " + err.Error() + ")"
		}
		a.Local.progress(msg)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}
