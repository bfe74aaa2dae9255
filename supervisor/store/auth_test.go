package store_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// clientAs is a client of m with a certificate for cn from ca.
func clientAs(t *testing.T, ca *pki.CA, m *clusterMember, cn string) *clientv3.Client {
	t.Helper()
	cfg, err := pki.ClientTLS(ca.CertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue(pki.IssueOptions{CommonName: cn, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{kp}
	cli, err := directClient(t, m.opts.ClientURL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func denied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrUserNotFound) ||
		errors.Is(err, rpctypes.ErrGRPCPermissionDenied) || errors.Is(err, rpctypes.ErrGRPCUserNotFound)
}

// TestAuthByCertificate: with EnsureAuth, etcd's permissions follow the
// client certificate's CN. M3's certificate reaches M3's keys only; a
// client-only host's reaches m3sup's keys but cannot mint (write) or read
// join tokens, take a snapshot, or change the membership or the users; a
// removed host's reads its tombstone and nothing else; a CN that names no
// user, and the member certificate's, get nothing; an admin (a voter)
// does everything. EnsureAuth is idempotent.
func TestAuthByCertificate(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := newClusterMember(t, ca, "h1", "127.0.0.1")
	m.start(t)
	ctx := testCtx(t)
	admin := m.etcd.Client() // CN m3sup-client:h1
	ids := store.Identities{Admins: []string{"m3sup-client:h1"}, M3: []string{pki.M3CN("h1")}, Clients: []string{pki.NodeCN("c1")}}
	for range 2 {
		if err := store.EnsureAuth(ctx, admin, ids); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := admin.AuthStatus(ctx); err != nil || !st.Enabled {
		t.Fatalf("auth status %v %v", st, err)
	}
	if err := store.SetUserRole(ctx, admin, pki.NodeCN("r1"), store.RoleRemoved); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Put(ctx, store.RemovedPrefix+"r1", `{"node":"r1","removedBy":"h1"}`); err != nil {
		t.Fatal(err)
	}
	token := store.TokensPrefix + "abc"
	if _, err := admin.Put(ctx, token, "secret"); err != nil {
		t.Fatalf("admin mints a token: %v", err)
	}

	m3c := clientAs(t, ca, m, pki.M3CN("h1"))
	client := clientAs(t, ca, m, pki.NodeCN("c1"))
	removed := clientAs(t, ca, m, pki.NodeCN("r1"))
	stranger := clientAs(t, ca, m, "m3sup-node:nobody")
	peer := clientAs(t, ca, m, pki.EtcdPeerCN)

	type op struct {
		name string
		do   func(*clientv3.Client) error
	}
	put := func(k string) op {
		return op{"put " + k, func(c *clientv3.Client) error { _, err := c.Put(ctx, k, "{}"); return err }}
	}
	get := func(k string) op {
		return op{"get " + k, func(c *clientv3.Client) error { _, err := c.Get(ctx, k, clientv3.WithPrefix()); return err }}
	}
	snapshot := op{"snapshot", func(c *clientv3.Client) error {
		rc, err := c.Snapshot(ctx)
		if err == nil {
			_, err = rc.Read(make([]byte, 1))
			rc.Close()
		}
		return err
	}}
	addMember := op{"member add", func(c *clientv3.Client) error {
		_, err := c.MemberAddAsLearner(ctx, []string{"https://127.0.0.9:2380"})
		return err
	}}
	grant := op{"grant root", func(c *clientv3.Client) error { _, err := c.UserGrantRole(ctx, pki.NodeCN("c1"), "root"); return err }}

	for _, tc := range []struct {
		who    string
		cli    *clientv3.Client
		allow  []op
		refuse []op
	}{
		{"M3's certificate", m3c,
			[]op{put("_sd.placement/default_env/m3db"), get("_sd.placement/"), put("_kv/default_env/x")},
			[]op{put(store.ClusterKey), get(store.ClusterKey), put(token), get(store.TokensPrefix), put(store.ControlsKey("h1")), snapshot, grant}},
		{"a client-only host's certificate", client,
			[]op{get(store.ClusterKey), put(store.ControlsKey("c1")), put("/m3sup/v1/registry/c1"), get("/m3sup/v1/registry/"), put("_kv/default_env/y")},
			[]op{put(token), put(store.TokensPrefix + "mine"), get(store.TokensPrefix), snapshot, addMember, grant}},
		{"a removed host's certificate", removed,
			[]op{get(store.RemovedPrefix + "r1"), get(store.LeavingPrefix)},
			[]op{get(store.ClusterKey), put(store.ControlsKey("r1")), put("_kv/x"), put(token)}},
		{"a certificate whose CN names no user", stranger, nil,
			[]op{get(store.ClusterKey), put("_kv/x")}},
		{"the member certificate", peer, nil,
			[]op{get(store.ClusterKey), put(store.ClusterKey)}},
	} {
		for _, o := range tc.allow {
			if err := o.do(tc.cli); err != nil {
				t.Errorf("%s: %s: %v, want allowed", tc.who, o.name, err)
			}
		}
		for _, o := range tc.refuse {
			if err := o.do(tc.cli); err == nil || !denied(err) {
				t.Errorf("%s: %s: %v, want refused", tc.who, o.name, err)
			}
		}
	}
	// Minting through the join package, as `m3sup token create` does: only
	// an admin (a voter, the CA holder) can.
	caHash := strings.TrimPrefix(ca.Fingerprint(), "sha256:")
	if _, _, err := (&join.Tokens{KV: client, CAHash: caHash}).Create(ctx, join.TokenOptions{TTL: time.Hour, Description: "from a client-only host"}); err == nil || !denied(err) {
		t.Errorf("a client-only host minted a token: %v", err)
	}
	if _, _, err := (&join.Tokens{KV: m3c, CAHash: caHash}).Create(ctx, join.TokenOptions{TTL: time.Hour, Description: "from M3's certificate"}); err == nil || !denied(err) {
		t.Errorf("M3's certificate minted a token: %v", err)
	}
	if _, _, err := (&join.Tokens{KV: admin, CAHash: caHash}).Create(ctx, join.TokenOptions{TTL: time.Hour, Description: "from a voter"}); err != nil {
		t.Errorf("a voter cannot mint a token: %v", err)
	}
	if resp, err := admin.Get(ctx, token); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "secret" {
		t.Fatalf("token changed: %v %v", resp, err)
	}

	// A client-only host watches its desired state (the spec and its own
	// controls, not the whole of /m3sup/v1/, which holds the tokens).
	if _, err := store.New(admin).PutCluster(ctx, validCluster(), 0); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var watchErrs []error
	var werrMu sync.Mutex
	w := store.New(client).Watch(wctx, "c1", spec.Cluster{}, func(err error) { werrMu.Lock(); watchErrs = append(watchErrs, err); werrMu.Unlock() })
	if c := nextChange(t, w); c.Cluster.Release != validCluster().Release || len(c.Errors) != 0 {
		t.Errorf("client-only host's watch: %+v", c)
	}
	if _, err := store.New(client).UpdateControl(ctx, "c1", "m3dbnode", func(c *spec.Control) { c.Stopped = true }); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, w); !c.Controls["m3dbnode"].Stopped {
		t.Errorf("client-only host's watch after a control change: %+v", c)
	}
	wcancel()
	werrMu.Lock()
	if len(watchErrs) != 0 {
		t.Errorf("client-only host's watch failed reads: %v", watchErrs)
	}
	werrMu.Unlock()

	// A client-only host that joins again as a voter becomes an admin; a
	// removed host's identity gets only the removed role.
	if err := store.SetUserRole(ctx, admin, pki.NodeCN("c1"), store.RoleRoot); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Put(ctx, token, "x"); err != nil {
		t.Errorf("c1 promoted to root: %v", err)
	}
	if err := store.SetUserRole(ctx, admin, pki.NodeCN("c1"), store.RoleRemoved); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get(ctx, store.ClusterKey); !denied(err) {
		t.Errorf("c1 removed, on its open connection: %v, want refused", err)
	}
}
