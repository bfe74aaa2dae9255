package supervisor

import (
	"context"
	"io"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/backup"
)

// errClientOnlyBackup: an etcd snapshot holds every key, join tokens too,
// and etcd's authorization gives a client-only host no snapshot.
const errClientOnlyBackup = "backups are taken on the etcd voters: a client-only host may not read the whole of etcd (it holds the join tokens)"

// Backup implements api.Backupper: one file with the etcd snapshot, the
// desired state, M3's placement and namespaces and the release.
func (s *Supervisor) Backup(ctx context.Context, w io.Writer) error {
	s.mu.Lock()
	etcd := s.etcd
	s.mu.Unlock()
	if etcd == nil {
		return api.Errorf(api.ErrConflict, "etcd is not running yet")
	}
	if s.multiHost() && !etcd.Member() {
		return api.Errorf(api.ErrConflict, "%s", errClientOnlyBackup)
	}
	_, err := backup.Write(ctx, w, etcd.Client(), backup.Meta{Node: s.cfg.NodeName, Version: s.opts.Version, TempDir: s.cfg.DataDir})
	return err
}
