package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
)

// ErrHostLeft: `m3sup run` refuses a data dir whose host left the
// cluster (<dataDir>/left.json). The command exits with its own status
// for it, so systemd does not restart a host that left.
var ErrHostLeft = errors.New("this host left the cluster")

// LeftRecord is <dataDir>/left.json, the record that this host left the
// cluster: by itself with `m3sup leave` (Leaver), or removed by another
// host with `m3sup remove-host` while it was down. m3sup refuses to run on
// a data dir that has one (CheckNotLeft), before etcd is reached.
//
// A host removed while it was down may come back: its machine powers on and
// `m3sup run` starts on its old data dir. It refuses to run, like a host
// that left (ErrHostLeft):
//
//	m3sup run on the old data dir
//	→ a voter: its etcd member does not start, etcd's peers refuse it
//	(the supervisor's start-up sees store.ErrMemberRemoved → MemberRemoved);
//	a client-only host, or a voter whose member did start: its tombstone is
//	read before it registers or starts M3 (CheckNotRemoved)
//	→ refuseRemoved: left.json with Removed and RemovedBy
//	→ m3sup exits with ErrHostLeft; from now on CheckNotLeft refuses
//	before etcd is reached.
//
// A voter whose member was removed learns who removed it, and when, from
// the other voters as an etcd client: its tombstone, or, while the removal
// is still under way, its leaving record (LookupRemoval). Joining again
// under the same name with a new data dir and a new token (`m3sup run
// --join`) is consent: the join endpoint clears the tombstone.
type LeftRecord struct {
	DataDir string // the data dir the record is in
	Node    string // this host's node name
	// JoinURL is the join endpoint to name in the advice on rejoining.
	JoinURL string
}

// leftFile is left.json's content.
type leftFile struct {
	Node    string    `json:"node"`
	Left    time.Time `json:"left"`
	JoinURL string    `json:"joinURL,omitempty"`
	// Removed: another host removed this one; RemovedBy names it when this
	// host could learn it (its tombstone or leaving record).
	Removed   bool   `json:"removed,omitempty"`
	RemovedBy string `json:"removedBy,omitempty"`
}

// LeftFile is the path of the data dir's left.json.
func LeftFile(dataDir string) string { return filepath.Join(dataDir, "left.json") }

// CheckNotLeft refuses (ErrHostLeft) to start on a data dir whose host
// left the cluster.
func CheckNotLeft(dataDir string) error {
	path := LeftFile(dataDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var lf leftFile
	_ = json.Unmarshal(b, &lf)
	return lf.refusal(dataDir)
}

// refusal is why m3sup will not run on dataDir, whose host left as lf says.
func (lf leftFile) refusal(dataDir string) error {
	joinURL := lf.JoinURL
	if joinURL == "" {
		joinURL = "<URL>"
	}
	rejoin := fmt.Sprintf("To rejoin, move %s aside (or use a new dataDir) and run `m3sup run --join %s --token <T>` with a new token from `m3sup token create`",
		dataDir, joinURL)
	if !lf.Removed {
		return hostLeftError(fmt.Sprintf("this host (%s) left the cluster at %s with `m3sup leave` (%s); its etcd and M3 data are stale. %s",
			lf.Node, lf.Left.Format(time.RFC3339), LeftFile(dataDir), rejoin))
	}
	how := fmt.Sprintf("by %s with `m3sup remove-host` at %s", lf.RemovedBy, lf.Left.Format(time.RFC3339))
	if lf.RemovedBy == "" {
		how = fmt.Sprintf("with `m3sup remove-host` on another host (which one, and when, could not be read; noticed at %s)", lf.Left.Format(time.RFC3339))
	}
	return hostLeftError(fmt.Sprintf("this host (%s) was removed from the cluster %s, while it was down (%s); its etcd and M3 data are stale and m3sup will not run on them. %s",
		lf.Node, how, LeftFile(dataDir), rejoin))
}

// hostLeftError is CheckNotLeft's refusal: its own message, of kind
// ErrHostLeft.
type hostLeftError string

func (e hostLeftError) Error() string        { return string(e) }
func (e hostLeftError) Is(target error) bool { return target == ErrHostLeft }

// write records lf in the data dir.
func (r LeftRecord) write(lf leftFile) error {
	b, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(LeftFile(r.DataDir), b, 0o600)
}

// recordLeft records that this host left by itself at at.
func (r LeftRecord) recordLeft(at time.Time) error {
	return r.write(leftFile{Node: r.Node, Left: at.UTC(), JoinURL: r.JoinURL})
}

// CheckNotRemoved refuses to go on (ErrHostLeft) when this host has a
// tombstone in etcd (cli): it was removed with `m3sup remove-host` and
// came back on its old data dir.
func (r LeftRecord) CheckNotRemoved(ctx context.Context, cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rem, ok, err := RemovedHost(ctx, cli, r.Node)
	if err != nil {
		return fmt.Errorf("check whether this host was removed: %w", err)
	}
	if !ok {
		return nil
	}
	return r.refuseRemoved(rem)
}

// MemberRemoved turns the removal of this host's etcd member (cause wraps
// the store's ErrMemberRemoved) into the refusal, naming the remover when
// lookup (LookupRemoval against the other voters) can tell.
func (r LeftRecord) MemberRemoved(cause error, lookup func() (Removed, error), log *zap.Logger) error {
	rem, err := lookup()
	if err != nil {
		log.Warn("this host's etcd member was removed; cannot tell by whom", zap.Error(err))
	}
	err = r.refuseRemoved(rem)
	if !errors.Is(err, ErrHostLeft) {
		return fmt.Errorf("%w; %w", cause, err)
	}
	return err
}

// LookupRemoval asks etcd (the other voters' cli, this host's own member
// is gone) who removed host name and when: its tombstone, else its leaving
// record's RemovedBy.
func LookupRemoval(ctx context.Context, cli *clientv3.Client, name string) (Removed, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, ok, err := RemovedHost(ctx, cli, name)
	if err != nil || ok {
		return r, err
	}
	lv, err := LeavingHosts(ctx, cli)
	if err != nil {
		return Removed{}, err
	}
	if rec := lv[name]; rec.RemovedBy != "" {
		return Removed{Node: name, RemovedBy: rec.RemovedBy, At: rec.Since}, nil
	}
	return Removed{}, errors.New("no tombstone and no removal under way for " + name)
}

// refuseRemoved records in the data dir that this host was removed as rem
// says (a zero At: by a host unknown), so that m3sup refuses to run on it
// from now on, and returns that refusal (ErrHostLeft).
func (r LeftRecord) refuseRemoved(rem Removed) error {
	lf := leftFile{Node: r.Node, Left: rem.At.UTC(), JoinURL: r.JoinURL, Removed: true, RemovedBy: rem.RemovedBy}
	if rem.At.IsZero() {
		lf.Left, lf.RemovedBy = time.Now().UTC(), ""
	}
	if err := r.write(lf); err != nil {
		return fmt.Errorf("record this host's removal in %s: %w", LeftFile(r.DataDir), err)
	}
	return lf.refusal(r.DataDir)
}
