package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/verify"
	"go.uber.org/zap"
)

// RestoreOptions says which member the restored etcd is: the node's
// config (cfg.Etcd.Name, cfg.Etcd.PeerURL, cfg.NodeName, cfg.API.Socket).
type RestoreOptions struct {
	Name    string // etcd member name
	PeerURL string // etcd peer URL
	// Node is this host's node name; a backup taken on another node is
	// refused unless Force (M3's placement names the node).
	Node  string
	Force bool
	// Socket is the daemon's API socket; a restore is refused while a
	// daemon answers there.
	Socket string
	Logger *zap.Logger
}

// revisionBump is added to the restored etcd's revision, which is then
// marked compacted (etcdutl's --bump-revision --mark-compacted): a watcher
// that saw revisions after the backup, such as an M3 process left running,
// gets "compacted" and re-reads instead of missing changes.
const revisionBump = 1_000_000_000

// Restored says what a restore did.
type Restored struct {
	Info     Info   // the backup's manifest
	EtcdDir  string // the restored etcd data dir
	MovedTo  string // where the etcd data dir that was there went ("" when none)
	Revision int64  // the restored etcd's revision (the backup's plus the bump)
}

// Restore replaces the etcd data of a stopped node with the backup at
// path. It refuses while the node runs (the API socket answers or the etcd
// data is locked). It verifies the backup, restores the snapshot next to
// the data dir, verifies the result, and only then moves the existing
// <dataDir>/etcd aside to <dataDir>/etcd.before-restore-<time> (it deletes
// nothing) and puts the restored one in its place.
func Restore(ctx context.Context, path, dataDir string, o RestoreOptions) (Restored, error) {
	var res Restored
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Name == "" || o.PeerURL == "" {
		return res, errors.New("restore: the etcd member name and peer URL are required")
	}
	etcdDir := filepath.Join(dataDir, "etcd")
	if err := checkStopped(ctx, o.Socket, etcdDir); err != nil {
		return res, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return res, fmt.Errorf("restore: create data dir: %w", err)
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	work, err := os.MkdirTemp(dataDir, ".restore-"+stamp+"-")
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(work) // the snapshot copy, and the restored dir if it was not moved into place

	// Verify the whole file while copying the snapshot out.
	snapPath := filepath.Join(work, MemberSnapshot)
	sf, err := os.OpenFile(snapPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	info, err := read(path, map[string]io.Writer{MemberSnapshot: sf})
	if cerr := sf.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("restore: write snapshot: %w", cerr)
	}
	if err != nil {
		return res, err
	}
	res.Info = info
	if info.Node != "" && o.Node != "" && info.Node != o.Node && !o.Force {
		return res, fmt.Errorf("restore: the backup was taken on node %q, this is %q; M3's placement names its node, so the restored cluster would not find this one (use --force to restore anyway)", info.Node, o.Node)
	}

	out := filepath.Join(work, "etcd")
	err = snapshot.NewV3(o.Logger.Named("etcd-restore")).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapPath,
		Name:                o.Name,
		OutputDataDir:       out,
		PeerURLs:            []string{o.PeerURL},
		InitialCluster:      o.Name + "=" + o.PeerURL,
		InitialClusterToken: "m3sup", // as store.StartEtcd
		RevisionBump:        revisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return res, fmt.Errorf("restore etcd snapshot: %w", err)
	}
	if err := verify.Verify(verify.Config{DataDir: out, ExactIndex: true, Logger: o.Logger.Named("etcd-verify")}); err != nil {
		return res, fmt.Errorf("verify restored etcd: %w", err)
	}
	st, err := snapshot.NewV3(zap.NewNop()).Status(filepath.Join(out, "member", "snap", "db"))
	if err != nil {
		return res, fmt.Errorf("verify restored etcd: %w", err)
	}
	if want := info.Revision + revisionBump; st.Revision != want {
		return res, fmt.Errorf("verify restored etcd: revision %d, want %d (the backup's %d + %d)", st.Revision, want, info.Revision, revisionBump)
	}
	res.Revision = st.Revision
	if err := os.Chmod(out, 0o700); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}

	// Swap: the old data aside (never deleted), the restored one in.
	if _, err := os.Lstat(etcdDir); err == nil {
		res.MovedTo = filepath.Join(dataDir, "etcd.before-restore-"+stamp)
		if err := os.Rename(etcdDir, res.MovedTo); err != nil {
			return res, fmt.Errorf("restore: move the existing etcd data aside: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(out, etcdDir); err != nil {
		if res.MovedTo != "" {
			_ = os.Rename(res.MovedTo, etcdDir)
		}
		return res, fmt.Errorf("restore: move the restored etcd data into place: %w", err)
	}
	res.EtcdDir = etcdDir
	if d, err := os.Open(dataDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return res, nil
}

// checkStopped returns an ErrRunning error when a daemon answers on socket
// or a process holds etcdDir's database or WAL locks.
func checkStopped(ctx context.Context, socket, etcdDir string) error {
	if socket != "" {
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(ctx, "unix", socket); err == nil {
			c.Close()
			return fmt.Errorf("restore: a daemon answers on %s; stop it first: %w", socket, ErrRunning)
		}
	}
	db := filepath.Join(etcdDir, "member", "snap", "db")
	if f, err := os.Open(db); err == nil {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close() // closing releases the lock when we got it
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("restore: %s is in use by another process (an etcd runs on it); stop m3sup first: %w", db, ErrRunning)
		}
	}
	wals, _ := filepath.Glob(filepath.Join(etcdDir, "member", "wal", "*.wal"))
	for _, w := range wals {
		lf, err := fileutil.TryLockFile(w, os.O_RDWR, fileutil.PrivateFileMode)
		if errors.Is(err, fileutil.ErrLocked) {
			return fmt.Errorf("restore: %s is in use by another process (an etcd runs on it); stop m3sup first: %w", w, ErrRunning)
		}
		if err == nil {
			lf.Close()
		}
	}
	return nil
}
