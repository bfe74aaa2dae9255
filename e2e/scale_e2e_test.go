package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// TestE2EScaleOut: three voters (127.0.0.2-4, cluster.maxVoters 3; host2
// also sets cluster.joinListen and serves joins with the CA it received
// when it joined), then a fourth host joins as an etcd client-only host: it runs no etcd member
// (etcd keeps 3 members), says "client" in status, the controller adds it
// to the placement (4 instances, all AVAILABLE) and a point written through
// its coordinator reads back through host 1's. Then, under continuous
// majority writes through host 1, the client-only host is killed for good
// (SIGKILL of m3sup, containerd, shims, M3) and, once unregistered,
// `m3sup remove-host host4` on host 2 removes it: status shows it leaving,
// then gone; its instance leaves the placement with every shard AVAILABLE;
// its records are deleted and its tombstone written; started again on its
// old data dir it refuses to run (exit status 4, the remover named, how to
// rejoin), twice, and stays out of the registry and the placement. A fifth
// (client-only) host joins through host2's join endpoint with a token made
// on host2; then the first host, host1, runs `m3sup leave` (allowed: host2
// and host3 hold the CA too): its instance leaves the placement, its m3sup
// exits 0, its containers are gone, its etcd member is removed (2 voters
// remain and the cluster keeps working, host2 still serves joins). A sixth
// host joins as the third voter, is killed and removed: started again on its
// old data dir, its etcd member is refused and it exits 4 the same way. No
// write fails and every point reads back. Refusals change nothing:
// remove-host of a live host, leave below the replication factor, and
// `m3sup run` on a data dir that left (exit status 4); the last CA holder's
// refusal is TestCheckCAHolders'.
func TestE2EScaleOut(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()
	since := func() time.Duration { return time.Since(start).Round(100 * time.Millisecond) }

	h1 := newHostNode(t, "host1", "127.0.0.2", true, rs.url, sum)
	maxVoters := filepath.Join(t.TempDir(), "maxvoters.yaml")
	if err := os.WriteFile(maxVoters, []byte("cluster:\n  maxVoters: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h1.start("--config", maxVoters)
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "3") // host2 and host3 voters; host4 client-only (maxVoters)
	cli := h1.tlsEtcd(t)
	h2 := newHostNodeWith(t, "host2", "127.0.0.3", false, rs.url, sum, hostOpts{joinListen: true})
	h2.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 2, 2*time.Minute, h1, h2)
	h3 := newHostNode(t, "host3", "127.0.0.4", false, rs.url, sum)
	h3.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 3, 2*time.Minute, h1, h2, h3)
	t.Logf("three voters after %s", since())

	// The fourth host joins beyond maxVoters: an etcd client-only host.
	h4 := newHostNode(t, "host4", "127.0.0.5", false, rs.url, sum)
	h4.start("--join", h1.joinURL, "--token", tok)
	for _, h := range []*hostNode{h1, h2, h3, h4} {
		h.waitReady(8 * time.Minute)
	}
	t.Logf("four hosts ready after %s", since())
	checkClientOnly(t, cli, h4, 3)
	checkJoinServers(t, h4, map[string]string{"host1": "serves joins at " + h1.joinURL, "host2": "serves joins at " + h2.joinURL, "host3": "holds the CA", "host4": ""})
	p := waitPlacement(t, h1.coordURL, 4, 5*time.Minute, "host1", "host2", "host3", "host4")
	t.Logf("placement after %s: %d instances, RF %d, shards %v", since(), len(p.Instances), p.ReplicaFactor, p.ShardStates())
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, h4.coordURL, "m3sup_e2e_scale_out", ts, 11)
	readBack(t, h1.coordURL, "m3sup_e2e_scale_out", ts, 11)
	t.Logf("written through host4 (client-only), read through host1 after %s", since())

	// A backup on the client-only host is refused: an etcd snapshot holds
	// the join tokens, which etcd's authorization keeps from it. On a
	// voter it works.
	bk := filepath.Join(t.TempDir(), "brain.tar.gz")
	if out, err := hostCLIErr(h4, "backup", "-o", bk); err == nil || !strings.Contains(out, "client-only host") {
		t.Fatalf("backup on the client-only host: %v, output %q; want refused", err, out)
	}
	hostCLI(t, h2, "backup", "-o", bk)
	if fi, err := os.Stat(bk); err != nil || fi.Size() < 1024 {
		t.Fatalf("backup on a voter: %v %v", fi, err)
	}

	// The client-only host restarts from cluster.json without a new join:
	// a wrong token would be refused if it tried.
	parsed, err := join.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	wrong := join.Token{CAHash: parsed.CAHash, ID: parsed.ID, Secret: strings.Repeat("b", len(parsed.Secret))}.Encode()
	if code := h4.stop(2 * time.Minute); code != 0 {
		t.Fatalf("host4 exited %d; log:\n%s", code, h4.log())
	}
	restart := time.Now()
	h4.start("--join", h1.joinURL, "--token", wrong)
	h4.waitReady(5 * time.Minute)
	if !strings.Contains(h4.log(), "already joined") {
		t.Fatalf("restarted host4 did not start from cluster.json; log:\n%s", h4.log())
	}
	checkClientOnly(t, cli, h4, 3)
	readBack(t, h4.coordURL, "m3sup_e2e_scale_out", ts, 11)
	waitPlacement(t, h1.coordURL, 4, 5*time.Minute, "host1", "host2", "host3", "host4")
	t.Logf("host4 restarted from cluster.json (no join), ready again in %s", time.Since(restart).Round(100*time.Millisecond))

	// remove-host of a live host is refused; nothing changes.
	refuseRemoveLive(t, cli, h1, h2)

	// The client-only host dies for good; remove-host on host2 removes it
	// under continuous writes (etcd keeps its 3 voters).
	removeDeadUnderWrites(t, cli, h1, h2, h4, []*hostNode{h1, h2, h3}, 3)
	t.Logf("host4 (killed) removed after %s", since())

	// Its machine comes back on the old data dir with the same arguments:
	// it refuses to run (exit 4), twice, and stays out of the cluster.
	removedComesBack(t, cli, h4, h2, h1.joinURL, false, []*hostNode{h1, h2, h3}, "--join", h1.joinURL, "--token", wrong)
	t.Logf("removed host4 came back and was refused after %s", since())

	// Three instances are RF: no host may leave now; nothing changes.
	rev := placementModRev(t, cli)
	out, code := leaveCLI(t, h3)
	if code != 3 || !strings.Contains(out, "would leave 2 instance(s) for replication factor 3") {
		t.Fatalf("leave below RF: exit %d, output %q (want 3 and the reason)", code, out)
	}
	t.Logf("leave on host3 below RF refused: %s", strings.TrimSpace(out))
	assertNoLeaving(t, cli)
	if r := placementModRev(t, cli); r != rev {
		t.Fatalf("refused leave changed the placement (mod revision %d → %d)", rev, r)
	}
	if st := statusCLI(t, h3.socket); compOf(st, "m3dbnode").PID == 0 || st.Phase == "leaving" {
		t.Fatalf("refused leave touched host3: phase %s, m3dbnode %s", st.Phase, compLine(compOf(st, "m3dbnode")))
	}
	waitVoters(t, cli, 3, 10*time.Second)

	// A fifth host (client-only again) joins through host2's join endpoint
	// with a token made on host2; then the first host leaves: its etcd
	// member goes and two voters keep the cluster working.
	tok2 := h2.createToken(t, time.Minute)
	h5 := newHostNode(t, "host5", "127.0.0.6", false, rs.url, sum)
	h5.start("--join", h2.joinURL, "--token", tok2)
	h5.waitReady(8 * time.Minute)
	joinedVia := func(h *hostNode) bool {
		return slices.ContainsFunc(strings.Split(h.log(), "\n"), func(l string) bool {
			return strings.Contains(l, "host joined") && strings.Contains(l, `"node": "host5"`)
		})
	}
	if !joinedVia(h2) || joinedVia(h1) {
		t.Fatalf("host5 did not join through host2's join endpoint; host2 log:\n%s", h2.log())
	}
	checkClientOnly(t, cli, h5, 3)
	waitPlacement(t, h1.coordURL, 4, 5*time.Minute, "host1", "host2", "host3", "host5")
	t.Logf("host5 (client-only) joined through host2, in the placement after %s", since())

	cli2 := h2.tlsEtcd(t) // host1's etcd goes with it
	leaveUnderWrites(t, cli2, h2, h1, []*hostNode{h2, h3, h5}, 2)
	t.Logf("host1 (the first host) left after %s", since())
	waitVoters(t, cli2, 2, 30*time.Second, h2, h3, h5)
	ts = time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, h5.coordURL, "m3sup_e2e_after_first_left", ts, 13)
	readBack(t, h3.coordURL, "m3sup_e2e_after_first_left", ts, 13)
	for _, h := range []*hostNode{h2, h3, h5} {
		h.waitReady(time.Minute)
	}
	// host2 still admits joins: its endpoint checks tokens (a wrong one is
	// refused with 401) and host3 makes tokens.
	parsed2, err := join.ParseToken(h3.createToken(t, time.Minute))
	if err != nil || parsed2.CAHash != parsed.CAHash {
		t.Fatalf("token made on host3 after host1 left: %v, pins %s (want %s)", err, parsed2.CAHash, parsed.CAHash)
	}
	parsed2.Secret = strings.Repeat("c", len(parsed2.Secret))
	jctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err = join.Join(jctx, h2.joinURL, parsed2.Encode(), join.Request{NodeName: "host9", Advertise: []string{"127.0.0.9"}})
	cancel()
	if !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "invalid token") {
		t.Fatalf("host2's join endpoint after host1 left, wrong secret: %v (want a 401 refusal)", err)
	}
	checkJoinServers(t, h3, map[string]string{"host2": "serves joins at " + h2.joinURL, "host3": "holds the CA", "host5": ""})

	// A sixth host joins as the third voter (through host2), dies for
	// good and is removed with remove-host on host2 (its etcd member too);
	// started again on its old data dir, its etcd member is refused by the
	// others and it exits 4, twice, naming the remover.
	tok6 := h2.createToken(t, 10*time.Minute, "--voter")
	h6 := newHostNode(t, "host6", "127.0.0.7", false, rs.url, sum)
	h6.start("--join", h2.joinURL, "--token", tok6)
	waitVoters(t, cli2, 3, 2*time.Minute, h2, h3, h6)
	h6.waitReady(8 * time.Minute)
	waitPlacement(t, h2.coordURL, 4, 5*time.Minute, "host2", "host3", "host5", "host6")
	t.Logf("host6 (voter) in the placement after %s", since())
	removeDeadUnderWrites(t, cli2, h3, h2, h6, []*hostNode{h2, h3, h5}, 2)
	t.Logf("host6 (killed voter) removed after %s", since())
	removedComesBack(t, cli2, h6, h2, h2.joinURL, true, []*hostNode{h2, h3, h5}, "--join", h2.joinURL, "--token", tok6)
	waitVoters(t, cli2, 2, 10*time.Second, h2, h3, h5)
	t.Logf("removed voter host6 came back and was refused after %s", since())

	for _, h := range []*hostNode{h5, h3, h2} {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, h := range []*hostNode{h5, h3, h2} {
		if code := h.waitExit(2 * time.Minute); code != 0 {
			t.Fatalf("%s exited %d; log:\n%s", h.ip, code, h.log())
		}
	}
	t.Logf("total %s", since())
}

// checkClientOnly: h runs no etcd member, says so in status, and etcd
// still has voters members.
func checkClientOnly(t *testing.T, cli *clientv3.Client, h *hostNode, voters int) {
	t.Helper()
	st := statusCLI(t, h.socket)
	if st.Etcd.Role != "client" || st.Etcd.Leader || st.Etcd.Members != voters {
		t.Fatalf("%s status etcd: %+v (want role client, not leader, %d members)", h.ip, st.Etcd, voters)
	}
	var me *api.HostStatus
	for i := range st.Cluster.Hosts {
		if st.Cluster.Hosts[i].Name == hostName(h) {
			me = &st.Cluster.Hosts[i]
		}
	}
	if me == nil || me.EtcdRole != "client" {
		t.Fatalf("%s cluster status hosts %+v: want itself with etcd role client", h.ip, st.Cluster.Hosts)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "etcd", "member")); err == nil {
		t.Fatalf("%s: a client-only host has an etcd member dir", h.ip)
	}
	b, err := os.ReadFile(filepath.Join(h.dir, "cluster.json"))
	if err != nil || !strings.Contains(string(b), `"role": "client"`) {
		t.Fatalf("%s cluster.json: %v %s", h.ip, err, b)
	}
	for _, f := range []string{"etcd-peer.crt", "etcd-peer.key"} {
		if _, err := os.Stat(filepath.Join(h.dir, "pki", f)); err == nil {
			t.Fatalf("%s: a client-only host holds %s", h.ip, f)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != voters {
		t.Fatalf("etcd members with a client-only host: %v, err %v (want %d)", ml, err, voters)
	}
	if out := hostCLI(t, h, "status"); !strings.Contains(out, "client only") {
		t.Errorf("%s status table does not say client only:\n%s", h.ip, out)
	}
	t.Logf("%s is an etcd client-only host: status etcd %+v, %d etcd members", h.ip, st.Etcd, len(ml.Members))
}

// checkJoinServers: the HOST table of h's status has a line per host in
// notes, whose NOTE column says notes[host] ("" for: nothing about joins
// or the CA).
func checkJoinServers(t *testing.T, h *hostNode, notes map[string]string) {
	t.Helper()
	out := hostCLI(t, h, "status")
	for host, want := range notes {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, host+" ") {
				line = l
			}
		}
		if line == "" || (want == "" && (strings.Contains(line, "joins") || strings.Contains(line, "CA"))) || !strings.Contains(line, want) {
			t.Fatalf("%s status, host %s: line %q, want note %q:\n%s", h.ip, host, line, want, out)
		}
	}
	t.Logf("%s status shows the join servers: %v", h.ip, notes)
}

// hostName is the node name newHostNode wrote into h's config.
func hostName(h *hostNode) string {
	b, err := os.ReadFile(h.configFile)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "nodeName: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// waitPlacement waits until the placement holds exactly ids, all AVAILABLE.
func waitPlacement(t *testing.T, coordURL string, n int, timeout time.Duration, ids ...string) m3.Placement {
	t.Helper()
	mc := &m3.Client{BaseURL: coordURL}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p, exists, err := mc.Placement(ctx)
		cancel()
		if err == nil && exists {
			have := p.InstanceIDs()
			slices.Sort(have)
			last = fmt.Sprintf("%v %v", have, p.ShardStates())
			if len(have) == n && slices.Equal(have, ids) && p.AllAvailable() {
				return p
			}
		} else {
			last = fmt.Sprintf("exists %t, err %v", exists, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("placement did not become %v all AVAILABLE in %s; last: %s", ids, timeout, last)
	return m3.Placement{}
}

// leaveCLI runs `m3sup leave` against h and returns its output and exit code.
func leaveCLI(t *testing.T, h *hostNode, args ...string) (string, int) {
	t.Helper()
	return runCLI(t, h.socket, append([]string{"leave"}, args...)...)
}

func assertNoLeaving(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lv, err := cluster.LeavingHosts(ctx, cli)
	if err != nil || len(lv) != 0 {
		t.Fatalf("leaving records after a refused leave: %v, err %v (want none)", lv, err)
	}
}

// placementModRev is the etcd mod revision of M3's placement key.
func placementModRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "_sd.placement/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("read M3's placement key: %v (%d keys)", err, len(resp.Kvs))
	}
	var rev int64
	for _, kv := range resp.Kvs {
		rev = max(rev, kv.ModRevision)
	}
	return rev
}

// leaveUnderWrites runs `m3sup leave -o json` on leaver while writing a
// point every 200 ms through via's coordinator (majority writes) and
// watching every remaining host's status: they show leaver as leaving; its
// instance leaves the placement with every shard AVAILABLE on the rest;
// leaver's m3sup exits 0 with its containers and processes gone, and
// refuses to run again on that data dir; etcd has wantMembers members; no
// write fails and every point reads back.
func leaveUnderWrites(t *testing.T, cli *clientv3.Client, via, leaver *hostNode, rest []*hostNode, wantMembers int) {
	t.Helper()
	name := hostName(leaver)
	before := statusCLI(t, leaver.socket)
	ctdAddr, ctdNS := before.Containerd.Address, before.Containerd.Namespace
	procs := map[uint32]string{uint32(before.Containerd.PID): "containerd"}
	for _, c := range before.Components {
		procs[c.PID] = c.Name
	}
	var restIDs []string
	for _, h := range rest {
		restIDs = append(restIDs, hostName(h))
	}
	slices.Sort(restIDs)

	w := startPointWriter(via.coordURL, "m3sup_e2e_leave_"+name)
	defer w.finish()
	lw := watchLeaving(rest, func(hs api.HostStatus) bool { return hs.Name == name && hs.Leaving })
	defer lw.finish()

	time.Sleep(time.Second) // some writes before the leave
	begin := time.Now()
	out, code := leaveCLI(t, leaver, "-o", "json")
	if code != 0 {
		t.Fatalf("m3sup leave on %s: exit %d:\n%s\nlog:\n%s", leaver.ip, code, out, leaver.log())
	}
	var res api.LeaveResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.State != api.LeaveStateLeft || res.Node != name || !res.InPlacement {
		t.Fatalf("m3sup leave -o json: %v %q (want state left, node %s, in placement)", err, out, name)
	}
	if c := leaver.waitExit(2 * time.Minute); c != 0 {
		t.Fatalf("%s: m3sup exited %d after leave; log:\n%s", leaver.ip, c, leaver.log())
	}
	t.Logf("%s left in %s: %s", name, time.Since(begin).Round(100*time.Millisecond), strings.TrimSpace(out))
	p := waitPlacement(t, via.coordURL, len(rest), time.Minute, restIDs...)
	t.Logf("placement after %s left: %v, shards %v", name, restIDs, p.ShardStates())
	time.Sleep(time.Second) // writes after the leave
	leavingSeen := lw.finish()

	if len(leavingSeen) == 0 {
		t.Errorf("no other host's status showed %s as leaving", name)
	}
	t.Logf("status showed %s leaving on %v", name, leavingSeen)
	waitVoters(t, cli, wantMembers, 30*time.Second)
	ctx2, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if hosts, err := cluster.Hosts(ctx2, cli); err != nil || slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
		t.Errorf("registry after %s left: %v, err %v", name, hosts, err)
	}
	assertNoLeaving(t, cli)
	if _, err := os.Stat(filepath.Join(leaver.dir, "left.json")); err != nil {
		t.Errorf("%s: no left.json: %v", leaver.ip, err)
	}
	for pid, pname := range procs {
		if pid != 0 && processAlive(pid, pname) {
			t.Errorf("%s: %s (pid %d) still runs after it left", leaver.ip, pname, pid)
		}
	}
	checkNoContainers(t, leaver, ctdAddr, ctdNS)

	// Every write succeeded and reads back.
	w.verify(t, via.coordURL, "while "+name+" left")

	// The data dir that left refuses to run again.
	logOff := len(leaver.log())
	leaver.start("--join", "https://127.0.0.1:1", "--token", "unused")
	if c := leaver.waitExit(time.Minute); c != systemd.ExitLeft {
		t.Fatalf("m3sup run on a data dir that left exited %d, want %d (the unit's RestartPreventExitStatus)", c, systemd.ExitLeft)
	}
	if l := leaver.log()[logOff:]; !strings.Contains(l, "left the cluster") || !strings.Contains(l, "To rejoin") {
		t.Fatalf("m3sup run on a data dir that left: log lacks the reason:\n%s", l)
	}
	t.Logf("m3sup run on %s's data dir refused: %s", name, lastLine(leaver.log()))
}

// checkNoContainers starts the leaver's containerd again on its own
// config and asks it with ctr: no container, no task in its namespace.
func checkNoContainers(t *testing.T, h *hostNode, addr, ns string) {
	t.Helper()
	cfg := filepath.Join(h.dir, "containerd", "config.toml")
	ctd := exec.Command("containerd", "--config", cfg)
	var ctdOut bytes.Buffer
	ctd.Stdout, ctd.Stderr = &ctdOut, &ctdOut
	if err := ctd.Start(); err != nil {
		t.Fatalf("start containerd on %s: %v", cfg, err)
	}
	defer func() {
		_ = ctd.Process.Signal(syscall.SIGTERM)
		_ = ctd.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for _, what := range []string{"containers", "tasks"} {
		for {
			b, err := exec.Command("ctr", "--address", addr, "--namespace", ns, what, "ls", "-q").CombinedOutput()
			if err == nil {
				if ids := strings.Fields(string(b)); len(ids) != 0 {
					t.Errorf("%s: containerd still has %s %v after leave", h.ip, what, ids)
				} else {
					t.Logf("%s: ctr --namespace %s %s ls: none", h.ip, ns, what)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ctr %s ls on %s: %v: %s\ncontainerd: %s", what, addr, err, b, ctdOut.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// leavingWatch polls the status of hosts every 250 ms and records which of
// them listed a host matching match (one being decommissioned).
type leavingWatch struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen map[string]bool
}

func watchLeaving(hosts []*hostNode, match func(api.HostStatus) bool) *leavingWatch {
	ctx, stop := context.WithCancel(context.Background())
	lw := &leavingWatch{stop: stop, seen: map[string]bool{}}
	lw.wg.Add(1)
	go func() {
		defer lw.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, h := range hosts {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := api.NewClient(h.socket).Status(sctx)
				cancel()
				if err != nil || st.Cluster == nil {
					continue
				}
				if slices.ContainsFunc(st.Cluster.Hosts, match) {
					lw.mu.Lock()
					lw.seen[hostName(h)] = true
					lw.mu.Unlock()
				}
			}
		}
	}()
	return lw
}

// finish stops the watch and returns the hosts whose status matched.
func (lw *leavingWatch) finish() map[string]bool {
	lw.stop()
	lw.wg.Wait()
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return maps.Clone(lw.seen)
}
