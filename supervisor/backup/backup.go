package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// FormatVersion is the backup file format this package writes. Inspect and
// Restore refuse a newer one.
const FormatVersion = 1

// Member names inside a backup file.
const (
	MemberInfo       = "backup.json"
	MemberSnapshot   = "etcd.snapshot"
	MemberDesired    = "desired.json"
	MemberPlacement  = "m3/placement.json"
	MemberNamespaces = "m3/namespaces.json"
	MemberRelease    = "release.json"
)

// M3's etcd keys (github.com/m3db/m3 v1.5.0: src/cluster/services/util.go,
// src/cluster/client/etcd/client.go, src/dbnode/namespace/kvadmin).
const (
	placementPrefix  = "_sd.placement/"        // _sd.placement/<env>/<service>
	kvPrefix         = "_kv/"                  // _kv/<env>/<key>
	namespacesKeyEnd = "/m3db.node.namespaces" // _kv/<env>/m3db.node.namespaces
)

// Error kinds, wrapped by what this package returns.
var (
	// ErrCorrupt: the file is not a readable backup or a member's checksum
	// does not match the manifest.
	ErrCorrupt = errors.New("backup is corrupt")
	// ErrRunning: the node is running; a restore needs it stopped.
	ErrRunning = errors.New("m3sup is running")
)

// Meta describes the node a backup is taken on.
type Meta struct {
	Node    string // this host's node name (cfg.NodeName)
	Version string // m3sup's version
	// TempDir stages the etcd snapshot while its checksum is taken;
	// empty: os.TempDir().
	TempDir string
}

// Info is a backup's manifest (backup.json).
type Info struct {
	Format       int       `json:"format"`
	Created      time.Time `json:"created"`
	Node         string    `json:"node"`
	M3supVersion string    `json:"m3supVersion"`
	EtcdVersion  string    `json:"etcdVersion,omitempty"` // the snapshot's storage version
	Revision     int64     `json:"revision"`              // etcd revision of the snapshot
	Keys         int       `json:"keys"`                  // live keys in the snapshot
	Release      string    `json:"release,omitempty"`     // M3 release version of the desired state
	Members      []Member  `json:"members"`
	// Size is the whole file's size in bytes (not stored in the file).
	Size int64 `json:"-"`
}

// Member is one file inside a backup.
type Member struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// KV is one etcd key as stored in desired.json and the m3 members.
type KV struct {
	Key         string `json:"key"`
	ModRevision int64  `json:"modRevision"`
	Version     int64  `json:"version"`
	// Value: desired.json holds m3sup's value as JSON (a JSON string when
	// the value is not JSON); the m3 members hold the raw bytes (base64).
	Value json.RawMessage `json:"value,omitempty"`
	Raw   []byte          `json:"raw,omitempty"`
	// Decoded is M3's protobuf value decoded without its schema: field
	// numbers to values, nested messages and printable strings recognised.
	Decoded any `json:"decoded,omitempty"`
}

// Keys is the body of desired.json, m3/placement.json and m3/namespaces.json.
type Keys struct {
	Revision int64 `json:"revision"` // the etcd revision the keys were read at
	Keys     []KV  `json:"keys"`
}

// Write takes a backup of the etcd cli is connected to and writes it to w
// as a tar.gz. cli must reach exactly one member (the snapshot is that
// member's). The snapshot is staged in meta.TempDir so the manifest, which
// comes first in the file, can carry its checksum.
func Write(ctx context.Context, w io.Writer, cli *clientv3.Client, meta Meta) (Info, error) {
	info := Info{Format: FormatVersion, Created: time.Now().UTC().Truncate(time.Millisecond), Node: meta.Node, M3supVersion: meta.Version}

	// The readable members, all at one revision.
	desired, err := readKeys(ctx, cli, 0, store.Prefix, nil)
	if err != nil {
		return info, err
	}
	rev := desired.Revision
	placement, err := readKeys(ctx, cli, rev, placementPrefix, nil)
	if err != nil {
		return info, err
	}
	namespaces, err := readKeys(ctx, cli, rev, kvPrefix, func(k string) bool { return strings.HasSuffix(k, namespacesKeyEnd) })
	if err != nil {
		return info, err
	}
	var rel *spec.Release
	for i, kv := range desired.Keys {
		if kv.Key == store.ClusterKey {
			var c spec.Cluster
			if err := json.Unmarshal(kv.Value, &c); err != nil {
				return info, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			rel = &c.Release
			info.Release = c.Release.Version
		}
		desired.Keys[i].Raw = nil
	}
	for _, ks := range []*Keys{&placement, &namespaces} {
		for i := range ks.Keys {
			ks.Keys[i].Value = nil
			if d, ok := decodeProto(ks.Keys[i].Raw, 0); ok {
				ks.Keys[i].Decoded = d
			}
		}
	}
	small := map[string][]byte{}
	for name, v := range map[string]any{MemberDesired: desired, MemberPlacement: placement, MemberNamespaces: namespaces, MemberRelease: rel} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return info, fmt.Errorf("encode %s: %w", name, err)
		}
		small[name] = append(b, '\n')
	}

	snap, snapSum, snapSize, err := stageSnapshot(ctx, cli, meta.TempDir)
	if err != nil {
		return info, err
	}
	defer os.Remove(snap.Name())
	defer snap.Close()
	st, err := snapshot.NewV3(zap.NewNop()).Status(snap.Name())
	if err != nil {
		return info, fmt.Errorf("etcd snapshot: %w", err)
	}
	info.Revision, info.Keys, info.EtcdVersion = st.Revision, st.TotalKey, st.Version

	info.Members = append(info.Members, Member{Name: MemberSnapshot, Size: snapSize, SHA256: snapSum})
	for _, name := range []string{MemberDesired, MemberPlacement, MemberNamespaces, MemberRelease} {
		sum := sha256.Sum256(small[name])
		info.Members = append(info.Members, Member{Name: name, Size: int64(len(small[name])), SHA256: hex.EncodeToString(sum[:])})
	}
	manifest, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return info, fmt.Errorf("encode %s: %w", MemberInfo, err)
	}
	manifest = append(manifest, '\n')

	cw := &countWriter{w: w}
	zw := gzip.NewWriter(cw)
	tw := tar.NewWriter(zw)
	add := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: info.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	if err := add(MemberInfo, int64(len(manifest)), strings.NewReader(string(manifest))); err != nil {
		return info, err
	}
	if _, err := snap.Seek(0, io.SeekStart); err != nil {
		return info, fmt.Errorf("rewind etcd snapshot: %w", err)
	}
	if err := add(MemberSnapshot, snapSize, snap); err != nil {
		return info, err
	}
	for _, name := range []string{MemberDesired, MemberPlacement, MemberNamespaces, MemberRelease} {
		if err := add(name, int64(len(small[name])), strings.NewReader(string(small[name]))); err != nil {
			return info, err
		}
	}
	if err := tw.Close(); err != nil {
		return info, fmt.Errorf("finish backup: %w", err)
	}
	if err := zw.Close(); err != nil {
		return info, fmt.Errorf("finish backup: %w", err)
	}
	info.Size = cw.n
	return info, nil
}

// stageSnapshot streams the member's snapshot into a temp file, checks the
// sha256 etcd appends to it, and returns the file with its own sha256.
func stageSnapshot(ctx context.Context, cli *clientv3.Client, dir string) (*os.File, string, int64, error) {
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return nil, "", 0, fmt.Errorf("etcd snapshot: %w", err)
	}
	defer resp.Snapshot.Close()
	f, err := os.CreateTemp(dir, ".m3sup-etcd-snapshot-*")
	if err != nil {
		return nil, "", 0, fmt.Errorf("stage etcd snapshot: %w", err)
	}
	fail := func(err error) (*os.File, string, int64, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Snapshot)
	if err != nil {
		return fail(fmt.Errorf("etcd snapshot: %w", err))
	}
	if err := checkSnapshotHash(f, n); err != nil {
		return fail(err)
	}
	return f, hex.EncodeToString(h.Sum(nil)), n, nil
}

// checkSnapshotHash verifies the sha256 etcd appends to a snapshot stream.
func checkSnapshotHash(f *os.File, n int64) error {
	if n < sha256.Size || n%512 != sha256.Size {
		return fmt.Errorf("etcd snapshot of %d bytes has no trailing sha256: %w", n, ErrCorrupt)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n-sha256.Size)); err != nil {
		return fmt.Errorf("read etcd snapshot: %w", err)
	}
	want := make([]byte, sha256.Size)
	if _, err := f.ReadAt(want, n-sha256.Size); err != nil {
		return fmt.Errorf("read etcd snapshot: %w", err)
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("etcd snapshot: sha256 %x, its trailer says %x: %w", got, want, ErrCorrupt)
	}
	return nil
}

// readKeys reads every key under prefix (those keep accepts, when set) at
// rev (0: the current revision).
func readKeys(ctx context.Context, cli *clientv3.Client, rev int64, prefix string, keep func(string) bool) (Keys, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := cli.Get(ctx, prefix, opts...)
	if err != nil {
		return Keys{}, fmt.Errorf("read %s: %w", prefix, err)
	}
	out := Keys{Revision: resp.Header.Revision, Keys: []KV{}}
	if rev > 0 {
		out.Revision = rev
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if keep != nil && !keep(k) {
			continue
		}
		v := json.RawMessage(kv.Value)
		if !json.Valid(kv.Value) {
			v, _ = json.Marshal(string(kv.Value))
		}
		out.Keys = append(out.Keys, KV{Key: k, ModRevision: kv.ModRevision, Version: kv.Version, Value: v, Raw: kv.Value})
	}
	sort.Slice(out.Keys, func(i, j int) bool { return out.Keys[i].Key < out.Keys[j].Key })
	return out, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteAtomic creates path (mode 0600) with what fill writes, or leaves no
// file: see internal/atomicfile.
func WriteAtomic(path string, fill func(w io.Writer) error) error {
	return atomicfile.Write(path, 0o600, func(f *os.File) error { return fill(f) })
}
