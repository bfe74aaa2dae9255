package member

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/store"
)

// M3Etcd is how M3's containers reach etcd.
type M3Etcd struct {
	// Voters are the etcd voters' host:port in multi-host mode; nil on a
	// single node, whose M3 uses the local member.
	Voters []string
	// TLS is M3's client certificate as the containers see it (under
	// ContainerPKI); nil before etcd started.
	TLS *m3.EtcdTLS
}

// FollowVoters returns how M3 reaches etcd now: in multi-host mode, every
// etcd voter of now, which it also records in a joined host's cluster.json
// (so the host starts next time from the voters of now, not of its join:
// voters may have left since). A single node's answer never changes.
func (m *Member) FollowVoters(ctx context.Context) (M3Etcd, error) {
	if !m.o.MultiHost {
		return m.m3, nil
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	members, err := store.Members(mctx, m.etcd.Client())
	if err != nil {
		return M3Etcd{}, fmt.Errorf("list the etcd voters: %w", err)
	}
	var eps, urls []string
	for _, mb := range members {
		if mb.IsLearner {
			continue
		}
		for _, u := range mb.ClientURLs {
			if pu, err := url.Parse(u); err == nil {
				eps = append(eps, pu.Host)
				urls = append(urls, u)
			}
		}
	}
	if len(eps) == 0 {
		return M3Etcd{}, errors.New("list the etcd voters: none has a client URL")
	}
	path := m.o.Paths.ClusterFile
	cf, err := join.ReadClusterFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return M3Etcd{}, err
	}
	if cf != nil && !slices.Equal(cf.Endpoints, urls) {
		cf.Endpoints = urls
		if err := join.WriteClusterFile(path, *cf); err != nil {
			m.o.Logger.Warn("cannot record the current etcd voters in cluster.json", zap.Error(err))
		}
	}
	return M3Etcd{Voters: eps, TLS: m3TLS()}, nil
}
