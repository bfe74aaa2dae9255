package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CoordinatorPicker gives a host that runs no m3coordinator the API of a
// registered peer's (its Pick is an m3.Client Endpoint): it keeps the one
// it picked while that host stays registered with the role, and looks
// again at most every Recheck.
type CoordinatorPicker struct {
	Cli     *clientv3.Client
	Recheck time.Duration // zero means 5 s

	mu        sync.Mutex
	host, url string
	checked   time.Time
}

// Pick returns the base URL of the coordinator to use now.
func (p *CoordinatorPicker) Pick(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	term := p.Recheck
	if term == 0 {
		term = 5 * time.Second
	}
	if p.url != "" && time.Since(p.checked) < term {
		return p.url, nil
	}
	hosts, err := Hosts(ctx, p.Cli)
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
func chooseCoordinator(hosts []Host, current string) (name, url string, ok bool) {
	var first *Host
	for i := range hosts {
		h := &hosts[i]
		if !h.Has(RoleCoordinator) || h.Coordinator == "" {
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
