package supervisor

// A host removed with `m3sup remove-host` while it was down may come back:
// its machine powers on and `m3sup run` starts on its old data dir. It
// refuses to run, like a host that left (exit status 4, ErrHostLeft):
//
//	m3sup run on the old data dir
//	→ a voter: its etcd member does not start, etcd's peers refuse it
//	(store.ErrMemberRemoved); a client-only host, or a voter whose member
//	did start: its tombstone (cluster.RemovedHost) is read before it
//	registers or starts M3
//	→ refuseRemoved: <dataDir>/left.json with Removed and RemovedBy
//	→ m3sup exits with ErrHostLeft; from now on checkNotLeft refuses
//	before etcd is reached.
//
// A voter whose member was removed learns who removed it, and when, from
// the other voters (cluster.json's endpoints) as an etcd client: its
// tombstone, or, while the removal is still under way, its leaving record.
// Joining again under the same name with a new data dir and a new token
// (`m3sup run --join`) is consent: the join endpoint clears the tombstone.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// checkNotRemoved refuses to go on when this host has a tombstone: it was
// removed with `m3sup remove-host` and came back on its old data dir.
func (s *Supervisor) checkNotRemoved(ctx context.Context, lay layout, cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, ok, err := cluster.RemovedHost(ctx, cli, s.cfg.NodeName)
	if err != nil {
		return fmt.Errorf("check whether this host was removed: %w", err)
	}
	if !ok {
		return nil
	}
	return s.refuseRemoved(lay, r)
}

// memberRemoved turns the removal of this host's etcd member (cause wraps
// store.ErrMemberRemoved) into the refusal, naming the remover when the
// other voters can tell.
func (s *Supervisor) memberRemoved(ctx context.Context, lay layout, cause error) error {
	r, err := s.lookupRemoval(ctx, lay)
	if err != nil {
		s.log.Warn("this host's etcd member was removed; cannot tell by whom", zap.Error(err))
	}
	err = s.refuseRemoved(lay, r)
	if !errors.Is(err, ErrHostLeft) {
		return fmt.Errorf("%w; %w", cause, err)
	}
	return err
}

// lookupRemoval asks the other voters, as an etcd client, who removed this
// host and when: its tombstone, else its leaving record's RemovedBy. A
// zero At means it could not be read.
func (s *Supervisor) lookupRemoval(ctx context.Context, lay layout) (cluster.Removed, error) {
	name := s.cfg.NodeName
	cf, err := join.ReadClusterFile(lay.clusterFile())
	if err != nil {
		return cluster.Removed{}, err
	}
	own, _, _ := s.memberOptions().AdvertisedURLs()
	eps := slices.DeleteFunc(slices.Clone(cf.Endpoints), func(u string) bool { return u == own })
	if len(eps) == 0 {
		return cluster.Removed{}, errors.New("no other etcd voter known in " + lay.clusterFile())
	}
	dir := lay.pki()
	e, err := store.ConnectCluster(ctx, store.ClientOptions{
		Endpoints: eps,
		CAFile:    filepath.Join(dir, pki.CACertFile),
		CertFile:  filepath.Join(dir, pki.ClientCertFile), KeyFile: filepath.Join(dir, pki.ClientKeyFile),
		StartTimeout: 10 * time.Second,
		Logger:       s.log,
	})
	if err != nil {
		return cluster.Removed{}, err
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, ok, err := cluster.RemovedHost(ctx, e.Client(), name)
	if err != nil || ok {
		return r, err
	}
	lv, err := cluster.LeavingHosts(ctx, e.Client())
	if err != nil {
		return cluster.Removed{}, err
	}
	if rec := lv[name]; rec.RemovedBy != "" {
		return cluster.Removed{Node: name, RemovedBy: rec.RemovedBy, At: rec.Since}, nil
	}
	return cluster.Removed{}, errors.New("no tombstone and no removal under way for " + name)
}

// refuseRemoved records in the data dir that this host was removed as r
// says (an empty RemovedBy: by a host unknown), so that m3sup refuses to
// run on it from now on, and returns that refusal (ErrHostLeft).
func (s *Supervisor) refuseRemoved(lay layout, r cluster.Removed) error {
	lf := leftFile{Node: s.cfg.NodeName, Left: r.At.UTC(), JoinURL: s.opts.Join.URL, Removed: true, RemovedBy: r.RemovedBy}
	if r.At.IsZero() {
		lf.Left, lf.RemovedBy = time.Now().UTC(), ""
	}
	if cf, err := join.ReadClusterFile(lay.clusterFile()); err == nil {
		lf.JoinURL = cf.JoinURL
	}
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("record this host's removal: %w", err)
	}
	if err := pki.WriteFileAtomic(lay.leftFile(), b, 0o600); err != nil {
		return fmt.Errorf("record this host's removal in %s: %w", lay.leftFile(), err)
	}
	return lf.refusal(lay)
}
