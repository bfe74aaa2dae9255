package supervisor

import (
	"sync"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/member"
	"github.com/m3sup/m3sup/supervisor/store"
)

// up is what runNode has brought up on this host so far, in the order it
// brings it up; a zero field is not up yet.
type up struct {
	// etcd, store and member: this host's etcd (member.Start).
	etcd   *store.Etcd
	store  *store.Store
	member *member.Member
	// m3Etcd is how M3 reaches etcd (member.FollowVoters).
	m3Etcd member.M3Etcd
	// m3 is M3 as this host drives it; nodes the local m3dbnode's /health
	// URLs (none on a coordinator-only host).
	m3    *m3.Client
	nodes []string
	// roll is this host's rolling changes, revert and restart permit.
	roll *cluster.Rollout
	// agent runs the components.
	agent *agent.Agent
}

// parts publishes up to the API handlers and the reconcile path, which run
// on other goroutines than runNode. It owns its lock.
type parts struct {
	mu sync.Mutex
	up up
}

// load returns what is up now.
func (p *parts) load() up {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// update changes what is up, under the lock.
func (p *parts) update(f func(*up)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.up)
}
