package supervisor

import (
	"context"
	"io"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/backup"
	"github.com/m3sup/m3sup/supervisor/store"
)

// errClientOnlyBackup: an etcd snapshot holds every key, join tokens too,
// and etcd's authorization gives a client-only host no snapshot.
const errClientOnlyBackup = "backups are taken on the etcd voters: a client-only host may not read the whole of etcd (it holds the join tokens)"

// backupAPI is this host's api.Backupper: `m3sup backup` on demand (the
// scheduled backups are backup.Scheduler's).
type backupAPI struct {
	// Etcd is this host's etcd; nil while it starts.
	Etcd      func() *store.Etcd
	MultiHost bool
	Meta      backup.Meta
}

var _ api.Backupper = backupAPI{}

// Backup implements api.Backupper: one file with the etcd snapshot, the
// desired state, M3's placement and namespaces and the release.
func (b backupAPI) Backup(ctx context.Context, w io.Writer) error {
	etcd := b.Etcd()
	if etcd == nil {
		return api.Errorf(api.ErrConflict, "etcd is not running yet")
	}
	if b.MultiHost && !etcd.Member() {
		return api.Errorf(api.ErrConflict, "%s", errClientOnlyBackup)
	}
	_, err := backup.Write(ctx, w, etcd.Client(), b.Meta)
	return err
}
