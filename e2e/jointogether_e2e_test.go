package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/join"
)

// TestE2EJoinTogether: three hosts run `m3sup run --join` at the same
// moment (started together, in an order shuffled with a logged seed)
// against a first host with the default cluster.maxVoters 3. etcd admits
// one learner at a time, so joiners hear "another host is joining" and wait
// their turn instead of exiting: in the end etcd has three voters (the
// first host and two joiners, no learner left), the third joiner is an
// etcd client-only host, no joiner exited, at least one logged a retry,
// and every host becomes ready. A fourth host started with them holds a
// wrong token: a permanent refusal, it exits at once with nothing left. A
// fifth, pointed at a port where no join endpoint listens, waits: `m3sup
// status` and systemd's STATUS= show phase joining and why, and SIGTERM
// ends the wait at once. The joiners run m3coordinator only and the
// first host replication factor 1, so only one m3dbnode runs.
func TestE2EJoinTogether(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()
	since := func() time.Duration { return time.Since(start).Round(100 * time.Millisecond) }

	h1 := newHostNodeWith(t, "host1", "127.0.0.2", true, rs.url, sum, hostOpts{rf: 1})
	h1.start()
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "3")
	cli := h1.tlsEtcd(t)
	t.Logf("first host up, token created after %s", since())

	joiners := []*hostNode{
		newHostNodeWith(t, "host2", "127.0.0.3", false, rs.url, sum, hostOpts{rf: 1, roles: []string{"coordinator"}}),
		newHostNodeWith(t, "host3", "127.0.0.4", false, rs.url, sum, hostOpts{rf: 1, roles: []string{"coordinator"}}),
		newHostNodeWith(t, "host4", "127.0.0.5", false, rs.url, sum, hostOpts{rf: 1, roles: []string{"coordinator"}}),
	}
	// A fourth host with a wrong token starts with them: its refusal is
	// permanent, so it exits at once and leaves nothing behind.
	parsed, err := join.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	wrong := join.Token{CAHash: parsed.CAHash, ID: parsed.ID, Secret: strings.Repeat("a", len(parsed.Secret))}.Encode()
	bad := newHostNodeWith(t, "host5", "127.0.0.6", false, rs.url, sum, hostOpts{rf: 1, roles: []string{"coordinator"}})
	starts := map[*hostNode]string{bad: wrong}
	for _, h := range joiners {
		starts[h] = tok
	}
	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, 0))
	rnd.Shuffle(len(joiners), func(i, j int) { joiners[i], joiners[j] = joiners[j], joiners[i] })
	var order []string
	for _, h := range joiners {
		order = append(order, h.ip)
	}
	t.Logf("start order %v (seed %d)", order, seed)
	// Released together: each goroutine only execs its m3sup.
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for _, h := range append([]*hostNode{bad}, joiners...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			h.start("--join", h1.joinURL, "--token", starts[h])
		}()
	}
	close(gate)
	wg.Wait()
	joinStart := time.Now()
	if code := bad.waitExit(time.Minute); code == 0 || !strings.Contains(bad.log(), "join refused: invalid token") || strings.Contains(bad.log(), "retrying") {
		t.Fatalf("wrong token: exit %d; want non-zero, at once, no retry; log:\n%s", code, bad.log())
	}
	t.Logf("the wrong token exited after %s: %s", time.Since(joinStart).Round(100*time.Millisecond), lastLine(bad.log()))
	for _, p := range []string{"etcd", "containerd", "cluster.json", "pki", "components", bad.socket} {
		if !filepath.IsAbs(p) {
			p = filepath.Join(bad.dir, p)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the refused join left %s behind", p)
		}
	}

	// A host whose join endpoint does not listen (yet) waits too, and says
	// so in `m3sup status` and systemd's STATUS=; SIGTERM ends the wait
	// at once (exit 0) with nothing left.
	waiter := newHostNodeWith(t, "host6", "127.0.0.7", false, rs.url, sum, hostOpts{rf: 1, roles: []string{"coordinator"}})
	waiter.notify = listenNotify(t, filepath.Dir(waiter.dir))
	deadURL := fmt.Sprintf("https://127.0.0.2:%d", freePortsOn(t, "127.0.0.2", 1)[0])
	waiter.start("--join", deadURL, "--token", tok)
	var st api.Status
	waitUntil(t, time.Minute, "the waiting joiner's status says why it waits", func() string {
		select {
		case <-waiter.done:
			t.Fatalf("the waiting joiner exited (%v); log:\n%s", waiter.exitErr, waiter.log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if st, err = api.NewClient(waiter.socket).Status(ctx); err != nil {
			return err.Error()
		}
		if st.Phase != "joining" || !strings.Contains(st.Message, "join refused: the join endpoint is not listening") {
			return st.Phase + ": " + st.Message
		}
		return ""
	})
	t.Logf("waiting joiner's status: %s: %s", st.Phase, st.Message)
	if !waiter.notify.has("STATUS=joining: join refused: the join endpoint is not listening") {
		t.Errorf("systemd heard no joining STATUS=: %q", waiter.notify.messages())
	}
	stopAt := time.Now()
	if code := waiter.stop(30 * time.Second); code != 0 {
		t.Fatalf("SIGTERM while waiting to join: exit %d; log:\n%s", code, waiter.log())
	}
	t.Logf("the waiting joiner stopped %s after SIGTERM", time.Since(stopAt).Round(100*time.Millisecond))
	for _, p := range []string{"etcd", "containerd", "cluster.json", "pki", "components"} {
		if _, err := os.Stat(filepath.Join(waiter.dir, p)); err == nil {
			t.Errorf("the stopped joiner left %s behind", p)
		}
	}

	all := append([]*hostNode{h1}, joiners...)
	waitVoters(t, cli, 3, 4*time.Minute, all...)
	t.Logf("three etcd voters after %s", since())

	// Roles: two joiners are voters, one a client; every one joined.
	roles := map[join.Role]int{}
	retried := 0
	for _, h := range joiners {
		var cf *join.ClusterFile
		waitUntil(t, 2*time.Minute, h.ip+" writes cluster.json", func() string {
			select {
			case <-h.done:
				t.Fatalf("%s exited (%v); log:\n%s", h.ip, h.exitErr, h.log())
			default:
			}
			var err error
			if cf, err = join.ReadClusterFile(filepath.Join(h.dir, "cluster.json")); err != nil {
				return err.Error()
			}
			return ""
		})
		roles[cf.Role]++
		if n := strings.Count(h.log(), "join refused: "); n > 0 {
			retried++
			t.Logf("%s joined as %s after %d refusal(s): %s", h.ip, cf.Role, n, lastRetry(h.log()))
		} else {
			t.Logf("%s joined as %s at the first attempt", h.ip, cf.Role)
		}
	}
	if roles[join.RoleVoter] != 2 || roles[join.RoleClient] != 1 {
		t.Errorf("joiners' roles %v; want 2 voters and 1 client (cluster.maxVoters 3)", roles)
	}
	if retried == 0 {
		t.Error("no joiner was told to wait its turn: the joins did not overlap")
	}

	for _, h := range all {
		st := h.waitReady(6 * time.Minute)
		t.Logf("%s ready after %s (etcd %s)", h.ip, since(), st.Etcd.Role)
	}
	if _, err := os.Stat(filepath.Join(h1.dir, "cluster.json")); err == nil {
		t.Error("the first host has a cluster.json")
	}
	stopHosts(t, joiners[2], joiners[1], joiners[0], h1)
	t.Logf("total %s", since())
}

// lastRetry is the last "join refused: …; retrying" line of a log.
func lastRetry(log string) string {
	var last string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "join refused: ") {
			last = l
		}
	}
	return strings.TrimSpace(last)
}
