package backup_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/backup"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// member is one embedded etcd's data dir and URLs.
type member struct {
	dataDir            string // the node's data dir; etcd lives in <dataDir>/etcd
	clientURL, peerURL string
}

func newMember(t *testing.T) member {
	t.Helper()
	p := etcdtest.FreePorts(t, "127.0.0.1", 2)
	return member{
		dataDir:   t.TempDir(),
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", p[1]),
	}
}

func (m member) start(t *testing.T) *store.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEtcd(ctx, store.EtcdOptions{
		Name: "node-a", Dir: filepath.Join(m.dataDir, "etcd"), ClientURL: m.clientURL, PeerURL: m.peerURL, StartTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func (m member) restoreOpts() backup.RestoreOptions {
	return backup.RestoreOptions{Name: "node-a", PeerURL: m.peerURL, Node: "node-a"}
}

func testCluster() spec.Cluster {
	return spec.Cluster{
		Release: spec.Release{Version: "1.5.0", URL: "https://example.com/m3.tar.gz", Checksum: "sha256:" + strings.Repeat("a", 64)},
		M3: spec.M3{Env: "default_env", Zone: "embedded", NumShards: 16, ReplicationFactor: 1, IsolationGroup: "group1",
			Namespaces: []spec.Namespace{{Name: "default", Retention: spec.Duration(48 * time.Hour), BlockSize: spec.Duration(2 * time.Hour), IndexEnabled: true}}},
		DBNode:      spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"},
	}
}

// fakePlacement is a protobuf shaped like M3's placementpb.Placement:
// instances (map, field 1) with id 1, endpoint 5; replica_factor 2;
// num_shards 3.
func fakePlacement() []byte {
	var inst []byte
	inst = protowire.AppendTag(inst, 1, protowire.BytesType)
	inst = protowire.AppendString(inst, "node-a")
	inst = protowire.AppendTag(inst, 5, protowire.BytesType)
	inst = protowire.AppendString(inst, "127.0.0.1:9000")
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "node-a")
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendBytes(entry, inst)
	var p []byte
	p = protowire.AppendTag(p, 1, protowire.BytesType)
	p = protowire.AppendBytes(p, entry)
	p = protowire.AppendTag(p, 2, protowire.VarintType)
	p = protowire.AppendVarint(p, 1)
	p = protowire.AppendTag(p, 3, protowire.VarintType)
	p = protowire.AppendVarint(p, 16)
	return p
}

const (
	placementKey  = "_sd.placement/default_env/m3db"
	namespacesKey = "_kv/default_env/m3db.node.namespaces"
	otherKVKey    = "_kv/default_env/m3db.node.other"
)

// fill writes m3sup's desired state and fake M3 keys, and returns every key
// in etcd with its value.
func fill(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	st := store.New(cli)
	if _, err := st.PutCluster(ctx, testCluster(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateControl(ctx, "node-a", "m3dbnode", func(c *spec.Control) { c.Stopped = true }); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		placementKey:  string(fakePlacement()),
		namespacesKey: "\x0a\x07default\x12\x02\x08\x01",
		otherKVKey:    "x",
		"/unrelated":  "kept in the snapshot",
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return allKeys(t, cli)
}

func allKeys(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func writeBackup(t *testing.T, cli *clientv3.Client, path string) backup.Info {
	t.Helper()
	var info backup.Info
	err := backup.WriteAtomic(path, func(w io.Writer) error {
		var err error
		info, err = backup.Write(context.Background(), w, cli, backup.Meta{Node: "node-a", Version: "test", TempDir: t.TempDir()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestWriteInspect(t *testing.T) {
	m := newMember(t)
	e := m.start(t)
	want := fill(t, e.Client())
	path := filepath.Join(t.TempDir(), "b.tar.gz")
	wrote := writeBackup(t, e.Client(), path)

	info, err := backup.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if info.Size != fi.Size() || wrote.Size != fi.Size() {
		t.Errorf("size: Write says %d, Inspect %d, the file has %d", wrote.Size, info.Size, fi.Size())
	}
	if info.Format != backup.FormatVersion || info.Node != "node-a" || info.M3supVersion != "test" || info.Release != "1.5.0" {
		t.Errorf("manifest: %+v", info)
	}
	if info.Revision == 0 || info.Keys != len(want) || info.Revision != wrote.Revision {
		t.Errorf("revision %d keys %d, want a revision and %d keys (Write said %d)", info.Revision, info.Keys, len(want), wrote.Revision)
	}
	var names []string
	for _, mb := range info.Members {
		names = append(names, mb.Name)
		if len(mb.SHA256) != 64 || mb.Size <= 0 {
			t.Errorf("member %+v", mb)
		}
	}
	if got := strings.Join(names, ","); got != "etcd.snapshot,desired.json,m3/placement.json,m3/namespaces.json,release.json" {
		t.Errorf("members %s", got)
	}

	var desired backup.Keys
	readJSON(t, path, backup.MemberDesired, &desired)
	var ks []string
	for _, k := range desired.Keys {
		ks = append(ks, k.Key)
	}
	if got, want := strings.Join(ks, ","), store.ClusterKey+","+store.ControlsKey("node-a"); got != want {
		t.Errorf("desired keys %s, want %s", got, want)
	}
	for _, k := range desired.Keys {
		var compact bytes.Buffer
		_ = json.Compact(&compact, k.Value)
		if !strings.HasPrefix(k.Key, store.Prefix) || compact.String() != want[k.Key] {
			t.Errorf("desired %s = %s, want %s", k.Key, compact.String(), want[k.Key])
		}
	}
	var placement, namespaces backup.Keys
	readJSON(t, path, backup.MemberPlacement, &placement)
	readJSON(t, path, backup.MemberNamespaces, &namespaces)
	if len(placement.Keys) != 1 || placement.Keys[0].Key != placementKey || string(placement.Keys[0].Raw) != want[placementKey] {
		t.Fatalf("placement member: %+v", placement)
	}
	dec, _ := placement.Keys[0].Decoded.(map[string]any)
	if dec["3"] != float64(16) || dec["2"] != float64(1) {
		t.Errorf("placement decoded: %v, want num_shards (3) 16 and replica_factor (2) 1", dec)
	}
	if b, _ := json.Marshal(dec); !strings.Contains(string(b), `"127.0.0.1:9000"`) {
		t.Errorf("placement decoded %s lacks the instance endpoint", b)
	}
	if len(namespaces.Keys) != 1 || namespaces.Keys[0].Key != namespacesKey {
		t.Errorf("namespaces member: %+v", namespaces)
	}
	var rel spec.Release
	readJSON(t, path, backup.MemberRelease, &rel)
	if rel != testCluster().Release {
		t.Errorf("release %+v", rel)
	}
}

func readJSON(t *testing.T, path, member string, v any) {
	t.Helper()
	b, err := backup.ReadMember(path, member)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v\n%s", member, err, b)
	}
}

// repack rewrites a backup, passing each member through edit (nil drops it).
func repack(t *testing.T, src, dst string, edit func(name string, b []byte) []byte, extra ...string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if b = edit(hdr.Name, b); b == nil {
			continue
		}
		hdr.Size = int64(len(b))
		_ = tw.WriteHeader(hdr)
		_, _ = tw.Write(b)
	}
	for _, name := range extra {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: 1, Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte("x"))
	}
	_ = tw.Close()
	_ = zw.Close()
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInspectCorrupt(t *testing.T) {
	m := newMember(t)
	e := m.start(t)
	fill(t, e.Client())
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar.gz")
	writeBackup(t, e.Client(), good)

	flip := func(name string) func(string, []byte) []byte {
		return func(n string, b []byte) []byte {
			if n == name {
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 0xff
			}
			return b
		}
	}
	cases := []struct {
		name string
		make func(dst string)
		want string
	}{
		{"snapshot byte", func(dst string) { repack(t, good, dst, flip(backup.MemberSnapshot)) }, "sha256"},
		{"desired byte", func(dst string) { repack(t, good, dst, flip(backup.MemberDesired)) }, "sha256"},
		{"member missing", func(dst string) {
			repack(t, good, dst, func(n string, b []byte) []byte {
				if n == backup.MemberPlacement {
					return nil
				}
				return b
			})
		}, "missing"},
		{"extra member", func(dst string) {
			repack(t, good, dst, func(_ string, b []byte) []byte { return b }, "../../etc/evil")
		}, "not in the manifest"},
		{"gzip byte", func(dst string) {
			b, _ := os.ReadFile(good)
			b[len(b)/2] ^= 0xff
			_ = os.WriteFile(dst, b, 0o600)
		}, ""},
		{"truncated", func(dst string) {
			b, _ := os.ReadFile(good)
			_ = os.WriteFile(dst, b[:len(b)/2], 0o600)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "bad.tar.gz")
			tc.make(dst)
			_, err := backup.Inspect(dst)
			if !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("Inspect: %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Inspect: %v, want it to mention %q", err, tc.want)
			}
			// Restore refuses it too and touches nothing.
			target := t.TempDir()
			_, err = backup.Restore(context.Background(), dst, target, m.restoreOpts())
			if !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("Restore: %v, want ErrCorrupt", err)
			}
			if entries, _ := os.ReadDir(target); len(entries) != 0 {
				t.Fatalf("a refused restore left %v", entries)
			}
		})
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	src := newMember(t)
	e := src.start(t)
	want := fill(t, e.Client())
	path := filepath.Join(t.TempDir(), "b.tar.gz")
	info := writeBackup(t, e.Client(), path)

	// A node with existing (different) etcd data, stopped.
	dst := newMember(t)
	old := dst.start(t)
	if _, err := old.Client().Put(context.Background(), "/m3sup/v1/cluster", "{}"); err != nil {
		t.Fatal(err)
	}
	// Running: refused, the data stays.
	if _, err := backup.Restore(context.Background(), path, dst.dataDir, dst.restoreOpts()); !errors.Is(err, backup.ErrRunning) {
		t.Fatalf("Restore over a running etcd: %v, want ErrRunning", err)
	}
	old.Close()

	res, err := backup.Restore(context.Background(), path, dst.dataDir, dst.restoreOpts())
	if err != nil {
		t.Fatal(err)
	}
	if res.EtcdDir != filepath.Join(dst.dataDir, "etcd") || res.Info.Revision != info.Revision || res.Revision <= info.Revision {
		t.Errorf("restored: %+v", res)
	}
	if !strings.HasPrefix(filepath.Base(res.MovedTo), "etcd.before-restore-") {
		t.Fatalf("moved to %q", res.MovedTo)
	}
	if _, err := os.Stat(filepath.Join(res.MovedTo, "member", "snap", "db")); err != nil {
		t.Fatalf("the old etcd data is not kept aside: %v", err)
	}
	entries, _ := os.ReadDir(dst.dataDir)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".restore-") {
			t.Errorf("restore left its work dir %s", en.Name())
		}
	}

	e2 := dst.start(t)
	got := allKeys(t, e2.Client())
	if len(got) != len(want) {
		t.Errorf("restored %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %s = %q, want %q", k, got[k], v)
		}
	}
	// The restored member serves writes and m3sup's typed reads.
	c, _, found, err := store.New(e2.Client()).Cluster(context.Background())
	if err != nil || !found || c.Release != testCluster().Release {
		t.Fatalf("cluster after restore: %+v %v %v", c, found, err)
	}
	if _, err := e2.Client().Put(context.Background(), "/after", "restore"); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	src := newMember(t)
	e := src.start(t)
	fill(t, e.Client())
	path := filepath.Join(t.TempDir(), "b.tar.gz")
	writeBackup(t, e.Client(), path)

	t.Run("socket answers", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "m3sup.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		target := t.TempDir()
		o := src.restoreOpts()
		o.Socket = sock
		_, err = backup.Restore(context.Background(), path, target, o)
		if !errors.Is(err, backup.ErrRunning) || !strings.Contains(err.Error(), sock) {
			t.Fatalf("Restore: %v, want ErrRunning naming the socket", err)
		}
		if entries, _ := os.ReadDir(target); len(entries) != 0 {
			t.Fatalf("a refused restore left %v", entries)
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "m3sup.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		o := src.restoreOpts()
		o.Socket = sock
		if _, err := backup.Restore(context.Background(), path, t.TempDir(), o); err != nil {
			t.Fatalf("Restore with a dead daemon's socket: %v", err)
		}
	})
	t.Run("other node", func(t *testing.T) {
		o := src.restoreOpts()
		o.Node = "node-b"
		target := t.TempDir()
		if _, err := backup.Restore(context.Background(), path, target, o); err == nil || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("Restore of another node's backup: %v, want a refusal", err)
		}
		o.Force = true
		if _, err := backup.Restore(context.Background(), path, target, o); err != nil {
			t.Fatalf("Restore --force: %v", err)
		}
	})
	t.Run("no member name", func(t *testing.T) {
		if _, err := backup.Restore(context.Background(), path, t.TempDir(), backup.RestoreOptions{}); err == nil {
			t.Fatal("Restore without a member name succeeded")
		}
	})
}

func TestScheduler(t *testing.T) {
	m := newMember(t)
	e := m.start(t)
	fill(t, e.Client())
	core, logs := observer.New(zap.InfoLevel)
	s := &backup.Scheduler{Dir: filepath.Join(t.TempDir(), "backups"), Interval: 20 * time.Millisecond, Keep: 2, Logger: zap.New(core)}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, e.Client(), backup.Meta{Node: "node-a", Version: "test"}) }()
	deadline := time.Now().Add(30 * time.Second)
	for logs.FilterMessage("backup written").Len() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("4 backups not written in 30s; logs: %v", logs.All())
		}
		if errs := logs.FilterMessage("scheduled backup failed"); errs.Len() > 0 {
			t.Fatalf("backup failed: %v", errs.All()[0].ContextMap())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	files, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("%d backups kept, want 2: %v", len(files), files)
	}
	for _, f := range files {
		if _, err := backup.Inspect(f); err != nil {
			t.Errorf("kept backup: %v", err)
		}
	}
	entries, _ := os.ReadDir(s.Dir)
	if len(entries) != 2 {
		t.Errorf("backup dir holds %d entries, want the 2 backups only", len(entries))
	}
	// The last written is the newest kept.
	last := logs.FilterMessage("backup written").All()
	if p := last[len(last)-1].ContextMap()["path"]; p != files[1] {
		t.Errorf("newest kept %s, last written %v", files[1], p)
	}
}

func TestSchedulerDisabled(t *testing.T) {
	s := &backup.Scheduler{Dir: filepath.Join(t.TempDir(), "backups")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil, backup.Meta{}) }()
	select {
	case err := <-done:
		t.Fatalf("a disabled scheduler returned before ctx ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a disabled scheduler created %s", s.Dir)
	}
}

// backupFunc adapts a function to api.Backupper.
type backupFunc func(ctx context.Context, w io.Writer) error

func (f backupFunc) Backup(ctx context.Context, w io.Writer) error { return f(ctx, w) }

// TestAPIBackup streams a backup over the local API's unix socket.
func TestAPIBackup(t *testing.T) {
	m := newMember(t)
	e := m.start(t)
	fill(t, e.Client())
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("GET /v1/backup", api.BackupHandler(backupFunc(func(ctx context.Context, w io.Writer) error {
		if fail.Load() {
			return errors.New("etcd unreachable")
		}
		_, err := backup.Write(ctx, w, e.Client(), backup.Meta{Node: "node-a", Version: "test"})
		return err
	})))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	path := filepath.Join(t.TempDir(), "b.tar.gz")
	err = backup.WriteAtomic(path, func(w io.Writer) error { return api.NewClient(sock).Backup(context.Background(), w) })
	if err != nil {
		t.Fatal(err)
	}
	if info, err := backup.Inspect(path); err != nil || info.Node != "node-a" {
		t.Fatalf("Inspect: %+v %v", info, err)
	}

	fail.Store(true)
	failed := filepath.Join(t.TempDir(), "failed.tar.gz")
	err = backup.WriteAtomic(failed, func(w io.Writer) error { return api.NewClient(sock).Backup(context.Background(), w) })
	if err == nil || !strings.Contains(err.Error(), "etcd unreachable") {
		t.Fatalf("Backup: %v, want the server's error", err)
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed backup left a file: %v", err)
	}
}
