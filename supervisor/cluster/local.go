package cluster

import (
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// Local is how the multi-host types (Permit, Rollout, Automation) reach the
// host they run on: plain values and the clients the daemon connected,
// never the daemon itself.
type Local struct {
	Node    string           // this host's name: its registry key and placement instance ID
	DataDir string           // the host's data dir; rollout.json is kept there
	Etcd    *clientv3.Client // the cluster's etcd
	M3      *m3.Client       // the coordinator API this host uses (its own or a peer's)
	Logger  *zap.Logger      // nil means no logs
	// Progress, if set, reports what this host waits for while the cluster
	// comes together (the daemon shows it as its bootstrapping phase).
	Progress func(msg string)
}

func (l Local) logger() *zap.Logger {
	if l.Logger == nil {
		return zap.NewNop()
	}
	return l.Logger
}

func (l Local) progress(msg string) {
	if l.Progress != nil {
		l.Progress(msg)
	}
}

// Components is this host's node agent as the rollout sees it: the status
// of one component by name, and of all of them.
type Components interface {
	Status(name string) (agent.Status, bool)
	Statuses() []agent.Status
}

// Component names, as the daemon gives them to the agent (also their
// container ids).
const (
	DBNodeComponent      = "m3dbnode"
	CoordinatorComponent = "m3coordinator"
)
