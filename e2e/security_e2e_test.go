package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/store"
)

// asNobody runs a command as the unprivileged user nobody (no groups) and
// returns its combined output and error.
func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestE2ELocalUserAttack is the single-node attack of issue 10 run as the
// local user nobody against a real single node with real M3: m3sup's etcd
// (plain HTTP or TLS without a certificate, the gRPC gateway's
// /v3/kv/range and /v3/kv/put, the peer port's /metrics, /version and
// /members) answers nothing, the certificates are unreadable, and the
// release stays what root configured. M3's own certificate (pki/m3),
// which M3's containers hold, cannot write or read m3sup's keys or tokens.
func TestE2ELocalUserAttack(t *testing.T) {
	env := needE2E(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest})
	n.start()
	n.waitReady(4 * time.Minute)

	client := strings.TrimPrefix(n.etcdURL, "http://")
	peer := strings.TrimPrefix(n.peerURL, "http://")
	// The attack of the review: read the spec, write it back with another
	// release. Every way in, as nobody.
	evil := `{"key":"L20zc3VwL3YxL2NsdXN0ZXI=","value":"eyJyZWxlYXNlIjp7InVybCI6Imh0dHA6Ly9ldmlsLyJ9fQ=="}` // /m3sup/v1/cluster = {"release":{"url":"http://evil/"}}
	rangeReq := `{"key":"L20zc3VwL3YxL2NsdXN0ZXI="}`
	for _, scheme := range []string{"http", "https"} {
		for _, c := range []struct{ path, body string }{{"/v3/kv/range", rangeReq}, {"/v3/kv/put", evil}} {
			u := scheme + "://" + client + c.path
			out, err := asNobody(t, "curl", "-sS", "-k", "--max-time", "5", "-X", "POST", "-d", c.body, u)
			if err == nil {
				t.Errorf("as nobody, POST %s answered: %s", u, out)
			} else {
				t.Logf("as nobody, POST %s: %v: %s", u, err, strings.TrimSpace(out))
			}
		}
	}
	for _, scheme := range []string{"http", "https"} {
		for _, path := range []string{"/metrics", "/version", "/members"} {
			for _, hp := range []string{peer, client} {
				u := scheme + "://" + hp + path
				if out, err := asNobody(t, "curl", "-sS", "-k", "--fail", "--max-time", "5", u); err == nil {
					t.Errorf("as nobody, GET %s answered: %.200s", u, out)
				}
			}
		}
	}
	for _, f := range []string{"pki/ca.key", "pki/etcd-client.key", "pki/etcd-peer.key", "pki/m3/etcd-client.key"} {
		if out, err := asNobody(t, "cat", filepath.Join(n.dir, f)); err == nil {
			t.Errorf("as nobody, read %s: %.80s", f, out)
		}
	}

	// M3's certificate: M3's keys, nothing of m3sup's.
	m3c := n.etcdClientAs("etcd-client", "m3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, k := range []string{store.ClusterKey, store.TokensPrefix + "evil", store.ControlsKey("e2e-node")} {
		if _, err := m3c.Put(ctx, k, `{"release":{"url":"http://evil/"}}`); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("M3's certificate writing %s: %v, want permission denied", k, err)
		}
	}
	if _, err := m3c.Get(ctx, store.ClusterKey); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("M3's certificate reading %s: %v, want permission denied", store.ClusterKey, err)
	}
	if resp, err := m3c.Get(ctx, "_sd.placement/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) == 0 {
		t.Errorf("M3's certificate reading M3's placement: %v (%v)", err, resp)
	}

	// The release is still root's. (M3 reached ready above through etcd
	// with its own certificate: placement, namespaces, ready.)
	var doc api.ClusterDoc
	if err := json.Unmarshal([]byte(backupCLI(t, "get", "cluster", "-o", "json", "--socket", n.socket)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Spec.Release.URL != rs.url {
		t.Fatalf("release URL %q, want %q", doc.Spec.Release.URL, rs.url)
	}
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM", code)
	}
}
