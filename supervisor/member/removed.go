package member

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"time"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// Removed turns the removal of this host's etcd member (cause wraps
// store.ErrMemberRemoved: `m3sup remove-host` ran while this host was down
// or cut off) into the refusal left records (cluster.LeftRecord), naming
// the remover when the other voters can tell (LookupRemoval).
func (o Options) Removed(ctx context.Context, left cluster.LeftRecord, cause error) error {
	return left.MemberRemoved(cause, func() (cluster.Removed, error) { return o.LookupRemoval(ctx) }, o.Logger)
}

// LookupRemoval asks the other voters (cluster.json's endpoints, this
// host's own left out), as an etcd client, who removed this host and when
// (cluster.LookupRemoval).
func (o Options) LookupRemoval(ctx context.Context) (cluster.Removed, error) {
	cf, err := join.ReadClusterFile(o.Paths.ClusterFile)
	if err != nil {
		return cluster.Removed{}, err
	}
	own, _, _ := o.AdvertisedURLs()
	eps := slices.DeleteFunc(slices.Clone(cf.Endpoints), func(u string) bool { return u == own })
	if len(eps) == 0 {
		return cluster.Removed{}, errors.New("no other etcd voter known in " + o.Paths.ClusterFile)
	}
	dir := o.Paths.PKI
	e, err := store.ConnectCluster(ctx, store.ClientOptions{
		Endpoints:    eps,
		CAFile:       filepath.Join(dir, pki.CACertFile),
		CertFile:     filepath.Join(dir, pki.ClientCertFile),
		KeyFile:      filepath.Join(dir, pki.ClientKeyFile),
		StartTimeout: 10 * time.Second,
		Logger:       o.Logger,
	})
	if err != nil {
		return cluster.Removed{}, err
	}
	defer e.Close()
	return cluster.LookupRemoval(ctx, e.Client(), o.NodeName)
}
