package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

func validCluster() spec.Cluster {
	return spec.Cluster{
		Release: spec.Release{
			Version:  "1.5.0",
			URL:      "https://example.com/m3_1.5.0_linux_amd64.tar.gz",
			Checksum: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		},
		M3: spec.M3{
			Env: "default_env", Zone: "embedded", NumShards: 64, ReplicationFactor: 1, IsolationGroup: "rack-a",
			Namespaces: []spec.Namespace{{Name: "default", Retention: spec.Duration(48 * time.Hour), BlockSize: spec.Duration(2 * time.Hour)}},
		},
		DBNode:      spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "info"},
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// raw reads a key straight from etcd: its value, mod revision and the store's
// current revision.
func raw(t *testing.T, c *clientv3.Client, key string) (val string, modRev, storeRev int64) {
	t.Helper()
	resp, err := c.Get(testCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 1 {
		val, modRev = string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
	}
	return val, modRev, resp.Header.Revision
}

func TestClusterEmpty(t *testing.T) {
	e := startEtcd(t)
	c, rev, found, err := store.New(e.Client()).Cluster(testCtx(t))
	if err != nil || found || rev != 0 || !reflect.DeepEqual(c, spec.Cluster{}) {
		t.Fatalf("empty etcd: %+v rev=%d found=%v err=%v", c, rev, found, err)
	}
}

func TestClusterUndecodable(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	if _, err := e.Client().Put(ctx, store.ClusterKey, `{"m3":{"namespaces":[{"retention":"2d"}]}}`); err != nil {
		t.Fatal(err)
	}
	_, _, found, err := store.New(e.Client()).Cluster(ctx)
	var ve *store.ValueError
	if !errors.As(err, &ve) || ve.Key != store.ClusterKey || !found || !strings.Contains(err.Error(), store.ClusterKey) || !strings.Contains(err.Error(), "decode") {
		t.Fatalf("undecodable spec: found=%v err=%v", found, err)
	}
}

// TestClusterInvalidOnRead: a spec that decodes but does not validate
// (written into etcd past `apply`, e.g. a release without a checksum)
// is refused on every read, naming the key; its revision comes back so a
// valid apply can replace it.
func TestClusterInvalidOnRead(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	st := store.New(e.Client())
	for name, mut := range map[string]func(*spec.Cluster){
		"no checksum":  func(c *spec.Cluster) { c.Release.URL, c.Release.Checksum = "http://evil/m3.tar.gz", "" },
		"bad checksum": func(c *spec.Cluster) { c.Release.Checksum = "md5:abc" },
		"zero shards":  func(c *spec.Cluster) { c.M3.NumShards = 0 },
		"no namespace": func(c *spec.Cluster) { c.M3.Namespaces = nil },
	} {
		c := validCluster()
		mut(&c)
		b, _ := json.Marshal(c)
		resp, err := e.Client().Put(ctx, store.ClusterKey, string(b))
		if err != nil {
			t.Fatal(err)
		}
		_, rev, found, err := st.Cluster(ctx)
		var ve *store.ValueError
		if !errors.As(err, &ve) || ve.Key != store.ClusterKey || !found || rev != resp.Header.Revision {
			t.Errorf("%s: rev=%d (want %d) found=%v err=%v, want a ValueError naming %s", name, rev, resp.Header.Revision, found, err, store.ClusterKey)
			continue
		}
		if !strings.Contains(err.Error(), "invalid cluster spec") {
			t.Errorf("%s: %v", name, err)
		}
		// A valid spec replaces it at that revision.
		if _, err := st.PutCluster(ctx, validCluster(), rev); err != nil {
			t.Errorf("%s: replace the invalid spec: %v", name, err)
		}
	}
}

// nextChange waits for the next Change, bounded.
func nextChange(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
	}
	return store.Change{}
}

// TestWatchKeepsLastGood: the watch never stops on a bad value. An
// invalid spec or corrupt controls are reported (naming the key) while
// the Change carries the last good ones; at start, corrupt controls mean
// the defaults and a spec that does not validate means the spec in force
// the caller passed; a repaired value is picked up.
func TestWatchKeepsLastGood(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	cli := e.Client()
	st := store.New(cli)
	good := validCluster()
	if _, err := st.PutCluster(ctx, good, 0); err != nil {
		t.Fatal(err)
	}
	key := store.ControlsKey("n1")
	// Corrupt controls at start: defaults, reported.
	if _, err := cli.Put(ctx, key, "{not json"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := st.Watch(wctx, "n1", spec.Cluster{}, nil)
	c := nextChange(t, ch)
	if !reflect.DeepEqual(c.Cluster, good) || len(c.Controls) != 0 || len(c.Errors) != 1 || c.Errors[0].Key != key {
		t.Fatalf("start with corrupt controls: %+v", c)
	}
	// Good controls, then corrupt again: the good ones stay.
	if _, err := st.UpdateControl(ctx, "n1", "m3dbnode", func(c *spec.Control) { c.Stopped = true }); err != nil {
		t.Fatalf("UpdateControl over a corrupt value: %v", err)
	}
	c = nextChange(t, ch)
	if !c.Controls["m3dbnode"].Stopped || len(c.Errors) != 0 {
		t.Fatalf("repaired controls: %+v", c)
	}
	if _, err := cli.Put(ctx, key, `["a list"]`); err != nil {
		t.Fatal(err)
	}
	c = nextChange(t, ch)
	if !c.Controls["m3dbnode"].Stopped || len(c.Errors) != 1 || c.Errors[0].Key != key || !strings.Contains(c.Errors[0].Error(), key) {
		t.Fatalf("corrupt controls after good ones: %+v", c)
	}
	// An invalid spec: the last good one stays, both errors reported.
	evil := good
	evil.Release.URL, evil.Release.Checksum = "http://evil/m3.tar.gz", ""
	b, _ := json.Marshal(evil)
	if _, err := cli.Put(ctx, store.ClusterKey, string(b)); err != nil {
		t.Fatal(err)
	}
	c = nextChange(t, ch)
	if !reflect.DeepEqual(c.Cluster, good) || len(c.Errors) != 2 {
		t.Fatalf("invalid spec: %+v", c)
	}
	// Repaired: the new good spec, no errors.
	next := good
	next.DBNode.LogLevel = "debug"
	_, rev, _, _ := st.Cluster(ctx)
	if _, err := st.PutCluster(ctx, next, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	for c = nextChange(t, ch); len(c.Errors) != 0; c = nextChange(t, ch) {
	}
	if !reflect.DeepEqual(c.Cluster, next) || len(c.Controls) != 0 {
		t.Fatalf("repaired: %+v", c)
	}

	// A watch that starts on an invalid spec carries the spec in force.
	if _, err := cli.Put(ctx, store.ClusterKey, string(b)); err != nil {
		t.Fatal(err)
	}
	w2 := st.Watch(wctx, "n2", next, nil)
	if c := nextChange(t, w2); !reflect.DeepEqual(c.Cluster, next) || len(c.Errors) != 1 || c.Errors[0].Key != store.ClusterKey {
		t.Fatalf("start on an invalid spec: %+v", c)
	}
}

// TestControlsCorrupt: a corrupt controls value is a ValueError naming
// the key, with empty controls; it does not block.
func TestControlsCorrupt(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	key := store.ControlsKey("n1")
	for _, v := range []string{"{", "null", `{"m3dbnode":{"stopped":"yes"}}`, "[1]"} {
		if _, err := e.Client().Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
		hc, _, err := store.New(e.Client()).Controls(ctx, "n1")
		var ve *store.ValueError
		if v == "null" {
			if err != nil || hc == nil || len(hc) != 0 {
				t.Errorf("%q: %v %v, want no controls", v, hc, err)
			}
			continue
		}
		if !errors.As(err, &ve) || ve.Key != key || hc == nil || len(hc) != 0 {
			t.Errorf("%q: %v %v, want a ValueError naming %s and empty controls", v, hc, err, key)
		}
	}
}

func TestPutClusterCompareAndSwap(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)

	c1 := validCluster()
	rev1, err := s.PutCluster(ctx, c1, 0)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	got, rev, found, err := s.Cluster(ctx)
	if err != nil || !found || rev != rev1 || !reflect.DeepEqual(got, c1) {
		t.Fatalf("after create: %+v rev=%d (want %d) found=%v err=%v", got, rev, rev1, found, err)
	}

	c2 := validCluster()
	c2.M3.NumShards = 128
	if _, err := s.PutCluster(ctx, c2, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create over an existing spec: error %v, want ErrConflict", err)
	}
	if _, err := s.PutCluster(ctx, c2, rev1-1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale revision: error %v, want ErrConflict", err)
	}
	if got, _, _, _ := s.Cluster(ctx); got.M3.NumShards != 64 {
		t.Fatalf("a lost CAS changed the spec: numShards %d", got.M3.NumShards)
	}

	rev2, err := s.PutCluster(ctx, c2, rev1)
	if err != nil {
		t.Fatalf("update at the current revision: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("new revision %d not after %d", rev2, rev1)
	}
	got, rev, _, _ = s.Cluster(ctx)
	if rev != rev2 || got.M3.NumShards != 128 {
		t.Fatalf("after update: numShards %d rev %d (want 128, %d)", got.M3.NumShards, rev, rev2)
	}
	if _, err := s.PutCluster(ctx, c1, rev1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update at the superseded revision: error %v, want ErrConflict", err)
	}
}

// Two writers that read the same revision: exactly one wins.
func TestPutClusterRace(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)
	rev, err := s.PutCluster(ctx, validCluster(), 0)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			c := validCluster()
			c.M3.NumShards = 100 + i
			_, errs[i] = s.PutCluster(ctx, c, rev)
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won the same revision, want 1", won)
	}
}

func TestPutClusterInvalidLeavesEtcdUnchanged(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)

	for _, expect := range []string{"empty", "existing"} {
		t.Run(expect, func(t *testing.T) {
			var rev int64
			if expect == "existing" {
				var err error
				if rev, err = s.PutCluster(ctx, validCluster(), 0); err != nil {
					t.Fatal(err)
				}
			}
			val0, mod0, store0 := raw(t, e.Client(), store.ClusterKey)

			bad := validCluster()
			bad.M3.NumShards = 0
			bad.M3.Namespaces[0].Name = "no spaces"
			_, err := s.PutCluster(ctx, bad, rev)
			if err == nil {
				t.Fatal("invalid spec accepted")
			}
			for _, want := range []string{"invalid cluster spec", "m3.numShards", "m3.namespaces[0].name"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if errors.Is(err, store.ErrConflict) {
				t.Errorf("a validation error must not be a conflict: %v", err)
			}
			val1, mod1, store1 := raw(t, e.Client(), store.ClusterKey)
			if val1 != val0 || mod1 != mod0 || store1 != store0 {
				t.Fatalf("etcd changed: value %q→%q, mod rev %d→%d, store rev %d→%d", val0, val1, mod0, mod1, store0, store1)
			}
		})
	}
}

func TestSeed(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)

	fromFile := validCluster()

	// First boot: the config's spec is written.
	got, written, err := s.Seed(ctx, fromFile, "hash-1")
	if err != nil || !written || !reflect.DeepEqual(got, fromFile) {
		t.Fatalf("first seed: written=%v err=%v spec=%+v", written, err, got)
	}
	stored, rev, found, err := s.Cluster(ctx)
	if err != nil || !found || !reflect.DeepEqual(stored, fromFile) {
		t.Fatalf("after first seed: found=%v err=%v spec=%+v", found, err, stored)
	}
	if v, _, _ := raw(t, e.Client(), store.SeedKey); v != "hash-1" {
		t.Fatalf("seed key %q, want hash-1", v)
	}

	// Same config again: nothing written, the stored spec returned.
	_, _, storeRev := raw(t, e.Client(), store.ClusterKey)
	got, written, err = s.Seed(ctx, fromFile, "hash-1")
	if err != nil || written || !reflect.DeepEqual(got, fromFile) {
		t.Fatalf("same hash: written=%v err=%v", written, err)
	}
	if _, _, r := raw(t, e.Client(), store.ClusterKey); r != storeRev {
		t.Fatalf("same hash wrote to etcd: revision %d→%d", storeRev, r)
	}

	// Changed through the API; the unchanged config must not revert it.
	viaAPI := validCluster()
	viaAPI.M3.NumShards = 256
	viaAPI.DBNode.LogLevel = "debug"
	if _, err := s.PutCluster(ctx, viaAPI, rev); err != nil {
		t.Fatal(err)
	}
	got, written, err = s.Seed(ctx, fromFile, "hash-1")
	if err != nil || written {
		t.Fatalf("same hash after an API change: written=%v err=%v", written, err)
	}
	if !reflect.DeepEqual(got, viaAPI) {
		t.Fatalf("Seed returned %+v, want the API's spec %+v", got, viaAPI)
	}
	if stored, _, _, _ := s.Cluster(ctx); !reflect.DeepEqual(stored, viaAPI) {
		t.Fatalf("the API's spec was overwritten: %+v", stored)
	}

	// The config changed: it wins.
	newFile := validCluster()
	newFile.M3.NumShards = 32
	got, written, err = s.Seed(ctx, newFile, "hash-2")
	if err != nil || !written || !reflect.DeepEqual(got, newFile) {
		t.Fatalf("new hash: written=%v err=%v spec=%+v", written, err, got)
	}
	if stored, _, _, _ := s.Cluster(ctx); !reflect.DeepEqual(stored, newFile) {
		t.Fatalf("new hash: stored %+v, want %+v", stored, newFile)
	}
	if v, _, _ := raw(t, e.Client(), store.SeedKey); v != "hash-2" {
		t.Fatalf("seed key %q, want hash-2", v)
	}
}

func TestSeedInvalid(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)
	_, _, rev0 := raw(t, e.Client(), store.ClusterKey)

	bad := validCluster()
	bad.Release.Checksum = ""
	_, written, err := s.Seed(ctx, bad, "hash-1")
	if err == nil || written || !strings.Contains(err.Error(), "release.checksum") {
		t.Fatalf("invalid seed: written=%v err=%v", written, err)
	}
	if _, _, rev := raw(t, e.Client(), store.ClusterKey); rev != rev0 {
		t.Fatalf("invalid seed changed etcd: revision %d→%d", rev0, rev)
	}
}

// A seed hash without a spec (someone deleted the key) is reported, not
// silently answered with the config's spec.
func TestSeedSpecMissing(t *testing.T) {
	e := startEtcd(t)
	s := store.New(e.Client())
	ctx := testCtx(t)
	if _, _, err := s.Seed(ctx, validCluster(), "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client().Delete(ctx, store.ClusterKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Seed(ctx, validCluster(), "h"); err == nil || !strings.Contains(err.Error(), "spec is missing") {
		t.Fatalf("seed without a spec: error %v", err)
	}
}
