package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/cluster"
)

// coordinatorPicker gives a host that runs no m3coordinator the API of a
// registered peer's: it keeps the one it picked while that host stays
// registered with the role, and looks again at most every few seconds.
type coordinatorPicker struct {
	cli  *clientv3.Client
	self string

	mu        sync.Mutex
	host, url string
	checked   time.Time
	recheck   time.Duration // zero means 5 s
}

func (p *coordinatorPicker) pick(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	term := p.recheck
	if term == 0 {
		term = 5 * time.Second
	}
	if p.url != "" && time.Since(p.checked) < term {
		return p.url, nil
	}
	hosts, err := cluster.Hosts(ctx, p.cli)
	if err != nil {
		if p.url != "" {
			return p.url, nil // etcd hiccup: keep the last one
		}
		return "", fmt.Errorf("read the host registry: %w", err)
	}
	host, url, ok := chooseCoordinator(hosts, p.host)
	if !ok {
		return "", errors.New("no registered host runs an m3coordinator (cluster.roles)")
	}
	p.host, p.url, p.checked = host, url, time.Now()
	return url, nil
}

// chooseCoordinator keeps current while it is registered with the
// coordinator role and a URL; else it takes the first such host by name.
func chooseCoordinator(hosts []cluster.Host, current string) (name, url string, ok bool) {
	var first *cluster.Host
	for i := range hosts {
		h := &hosts[i]
		if !h.Has(cluster.RoleCoordinator) || h.Coordinator == "" {
			continue
		}
		if h.Name == current {
			return h.Name, h.Coordinator, true
		}
		if first == nil || h.Name < first.Name {
			first = h
		}
	}
	if first == nil {
		return "", "", false
	}
	return first.Name, first.Coordinator, true
}
