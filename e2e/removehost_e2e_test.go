package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/store"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// removeHostCLI runs `m3sup remove-host` against h and returns its output
// and exit code.
func removeHostCLI(t *testing.T, h *hostNode, args ...string) (string, int) {
	t.Helper()
	return runCLI(t, h.socket, append([]string{"remove-host"}, args...)...)
}

// memberCount is the number of etcd members.
func memberCount(t *testing.T, cli *clientv3.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("etcd member list: %v", err)
	}
	return len(ml.Members)
}

// refuseRemoveLive: `m3sup remove-host` of a live host is refused (exit 3,
// the reason) and changes nothing: no leaving record, the same placement
// and etcd members, the host still runs m3dbnode.
func refuseRemoveLive(t *testing.T, cli *clientv3.Client, via, live *hostNode) {
	t.Helper()
	name := hostName(live)
	rev, members := placementModRev(t, cli), memberCount(t, cli)
	out, code := removeHostCLI(t, via, name)
	if want := name + " is running (registered in etcd); run `m3sup leave` on it"; code != 3 || !strings.Contains(out, want) {
		t.Fatalf("remove-host of live %s: exit %d, output %q (want 3 and %q)", name, code, out, want)
	}
	assertNoLeaving(t, cli)
	if r, m := placementModRev(t, cli), memberCount(t, cli); r != rev || m != members {
		t.Fatalf("refused remove-host changed the cluster: placement mod revision %d → %d, etcd members %d → %d", rev, r, members, m)
	}
	if st := statusCLI(t, live.socket); compOf(st, "m3dbnode").PID == 0 || st.Phase == "leaving" {
		t.Fatalf("refused remove-host touched %s: phase %s, m3dbnode %s", name, st.Phase, compLine(compOf(st, "m3dbnode")))
	}
	t.Logf("remove-host %s (alive) refused: %s", name, strings.TrimSpace(out))
}

// killHost loses h for good, as a scrapped machine: its m3sup, containerd,
// shims and M3 processes are SIGKILLed; it returns once h's registry key
// expired. The caller cleans up its dead containers (cleanDeadHost).
func killHost(t testing.TB, cli *clientv3.Client, h *hostNode) (ctdAddr, ctdNS string) {
	t.Helper()
	before := h.waitReady(time.Minute)
	var procs []int
	for _, c := range before.Components {
		if c.PID > 0 {
			procs = append(procs, int(c.PID))
		}
	}
	if before.Containerd.PID > 0 {
		procs = append(procs, before.Containerd.PID)
	}
	shims := shimPIDs(filepath.Dir(h.socket))
	if len(procs) != 3 || len(shims) == 0 {
		t.Fatalf("%s before the loss: processes %v (want m3dbnode, m3coordinator, containerd), shims %v", h.ip, procs, shims)
	}
	lostAt := time.Now()
	_ = h.cmd.Process.Kill()
	for _, pid := range append(procs, shims...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: m3sup did not die on SIGKILL", h.ip)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hosts, err := cluster.Hosts(ctx, cli)
		cancel()
		if err == nil && !slices.ContainsFunc(hosts, func(x cluster.Host) bool { return x.Name == before.Node }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still registered a minute after its loss (err %v)", before.Node, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s killed for good (m3sup, containerd, %d shims, M3); unregistered %s later", before.Node, len(shims), time.Since(lostAt).Round(100*time.Millisecond))
	return before.Containerd.Address, before.Containerd.Namespace
}

// cleanDeadHost starts a dead host's containerd on its own config once
// more and deletes its dead tasks and containers, so the test leaves no
// runc state behind.
func cleanDeadHost(t *testing.T, h *hostNode, addr, ns string) {
	t.Helper()
	ctd := exec.Command("containerd", "--config", filepath.Join(h.dir, "containerd", "config.toml"))
	var ctdOut bytes.Buffer
	ctd.Stdout, ctd.Stderr = &ctdOut, &ctdOut
	if err := ctd.Start(); err != nil {
		t.Fatalf("start %s's containerd: %v", h.ip, err)
	}
	defer func() {
		_ = ctd.Process.Signal(syscall.SIGTERM)
		_ = ctd.Wait()
	}()
	ctr := func(args ...string) ([]byte, error) {
		return exec.Command("ctr", append([]string{"--address", addr, "--namespace", ns}, args...)...).CombinedOutput()
	}
	var ids []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		b, err := ctr("containers", "ls", "-q")
		if err == nil {
			ids = strings.Fields(string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ctr containers ls on %s: %v: %s\ncontainerd: %s", addr, err, b, ctdOut.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range ids {
		_, _ = ctr("tasks", "delete", "--force", id)
		if b, err := ctr("containers", "delete", id); err != nil {
			t.Errorf("%s: delete dead container %s: %v: %s", h.ip, id, err, b)
		}
	}
	t.Logf("%s: deleted its %d dead containers", h.ip, len(ids))
}

// removeDeadUnderWrites kills dead for good and runs `m3sup remove-host`
// for it on runner while a point is written every 200 ms through via's
// coordinator (majority writes), watching every remaining host's status:
// they show dead as leaving (removed by runner) during, not at all after;
// its instance leaves the placement with every shard AVAILABLE on the
// rest; etcd has wantMembers members; its leaving, registry, per-host and
// rollout keys are gone; no write fails and every point reads back.
// Running remove-host again finishes a leftover record's cleanup.
func removeDeadUnderWrites(t *testing.T, cli *clientv3.Client, via, runner, dead *hostNode, rest []*hostNode, wantMembers int) {
	t.Helper()
	name := hostName(dead)
	var restIDs []string
	for _, h := range rest {
		restIDs = append(restIDs, hostName(h))
	}
	slices.Sort(restIDs)

	w := startPointWriter(via.coordURL, "m3sup_e2e_remove_"+name)
	defer w.finish()
	time.Sleep(time.Second) // some writes with every host up
	addr, ns := killHost(t, cli, dead)
	defer cleanDeadHost(t, dead, addr, ns)

	lw := watchLeaving(rest, func(hs api.HostStatus) bool {
		return hs.Name == name && hs.Leaving && hs.RemovedBy == hostName(runner)
	})
	defer lw.finish()

	begin := time.Now()
	out, code := removeHostCLI(t, runner, name, "-o", "json")
	if code != 0 {
		t.Fatalf("m3sup remove-host %s on %s: exit %d:\n%s\nlog:\n%s", name, runner.ip, code, out, runner.log())
	}
	var res api.RemoveHostResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.State != api.RemoveStateRemoved || res.Node != name || !res.InPlacement {
		t.Fatalf("m3sup remove-host -o json: %v %q (want state removed, node %s, in placement)", err, out, name)
	}
	t.Logf("%s removed in %s: %s", name, time.Since(begin).Round(100*time.Millisecond), strings.Join(strings.Fields(out), " "))
	p := waitPlacement(t, via.coordURL, len(rest), 10*time.Second, restIDs...)
	t.Logf("placement after %s was removed: %v, shards %v", name, restIDs, p.ShardStates())
	time.Sleep(time.Second) // writes after the removal
	leavingSeen := lw.finish()

	if len(leavingSeen) == 0 {
		t.Errorf("no other host's status showed %s as leaving", name)
	}
	t.Logf("status showed %s leaving (removed by %s) on %v", name, hostName(runner), leavingSeen)
	for _, h := range rest {
		if st := statusCLI(t, h.socket); st.Cluster == nil || slices.ContainsFunc(st.Cluster.Hosts, func(hs api.HostStatus) bool { return hs.Name == name }) {
			t.Errorf("status on %s after %s was removed: %+v", h.ip, name, st.Cluster)
		}
	}
	waitVoters(t, cli, wantMembers, 10*time.Second)
	assertNoLeaving(t, cli)
	assertNoHostKeys(t, cli, name)

	w.verify(t, via.coordURL, "while "+name+" was lost and removed")

	// A removal that crashed before its cleanup left a record: running
	// remove-host again deletes it and succeeds; once nothing is left it
	// says there is no such host.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(sctx, store.ControlsKey(name), "{}"); err != nil {
		t.Fatal(err)
	}
	if out, code := removeHostCLI(t, runner, name); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("remove-host %s again with a leftover record: exit %d, output %q (want 0, removed)", name, code, out)
	} else {
		t.Logf("remove-host %s again: %s", name, strings.Join(strings.Fields(out), " "))
	}
	assertNoHostKeys(t, cli, name)
	if out, code := removeHostCLI(t, runner, name); code == 0 || !strings.Contains(out, "no host "+name) {
		t.Fatalf("remove-host %s once nothing is left: exit %d, output %q (want non-zero, no host)", name, code, out)
	}
}

// assertNoHostKeys: etcd holds no key about host name.
func assertNoHostKeys(t *testing.T, cli *clientv3.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range []string{store.HostKeysPrefix(name), cluster.RegistryPrefix + name, cluster.RolloutHostsPrefix + name, cluster.LeavingPrefix + name} {
		resp, err := cli.Get(ctx, k, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil || len(resp.Kvs) != 0 {
			t.Errorf("keys under %s after %s was removed: %v, err %v", k, name, resp.Kvs, err)
		}
	}
}

// removedComesBack starts removed host h again on its old data dir with
// args (the arguments it last ran with), as a scrapped machine powered on
// again: m3sup refuses to run and exits with systemd.ExitLeft within a
// short time, its output names the remover and says how to rejoin, its
// tombstone names the remover, it never re-appears in the registry or the
// placement (rest), and a second start refuses again from the record in
// its data dir, before it reaches etcd. joinURL is the cluster's join
// endpoint, which the refusal names. A former voter (voter) must have
// been refused by etcd itself on its first start: its member was removed.
func removedComesBack(t *testing.T, cli *clientv3.Client, h, remover *hostNode, joinURL string, voter bool, rest []*hostNode, args ...string) {
	t.Helper()
	name, by := hostName(h), hostName(remover)
	var restIDs []string
	for _, r := range rest {
		restIDs = append(restIDs, hostName(r))
	}
	slices.Sort(restIDs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tomb, ok, err := cluster.RemovedHost(ctx, cli, name)
	if err != nil || !ok || tomb.RemovedBy != by || tomb.At.IsZero() {
		t.Fatalf("%s's tombstone: %+v, %t, %v (want removed by %s)", name, tomb, ok, err, by)
	}
	t.Logf("%s's tombstone: %+v", name, tomb)

	for i, want := range []string{"from etcd", "from left.json"} {
		logOff := len(h.log())
		begin := time.Now()
		h.start(args...)
		if c := h.waitExit(2 * time.Minute); c != systemd.ExitLeft {
			t.Fatalf("removed %s started again (%s): exit %d, want %d; log:\n%s", name, want, c, systemd.ExitLeft, h.log()[logOff:])
		}
		took := time.Since(begin)
		l := h.log()[logOff:]
		for _, s := range []string{"was removed from the cluster by " + by + " with `m3sup remove-host` at " + tomb.At.Format(time.RFC3339),
			"To rejoin", "--join " + joinURL, "m3sup token create"} {
			if !strings.Contains(l, s) {
				t.Fatalf("removed %s started again (%s): output lacks %q:\n%s", name, want, s, l)
			}
		}
		if reached := strings.Contains(l, "starting-etcd"); (i == 1) == reached {
			t.Fatalf("removed %s started again (%s): reached etcd %t:\n%s", name, want, reached, l)
		}
		if refused := strings.Contains(l, "the member has been permanently removed from the cluster"); i == 0 && voter != refused {
			t.Fatalf("removed %s started again (%s): voter %t, its etcd member refused %t:\n%s", name, want, voter, refused, l)
		}
		if took > time.Minute {
			t.Errorf("removed %s took %s to refuse (%s)", name, took.Round(100*time.Millisecond), want)
		}
		t.Logf("removed %s started again: exit %d after %s (%s): %s", name, systemd.ExitLeft, took.Round(100*time.Millisecond), want, lastLine(l))
		if hosts, err := cluster.Hosts(ctx, cli); err != nil || slices.ContainsFunc(hosts, func(x cluster.Host) bool { return x.Name == name }) {
			t.Fatalf("registry after removed %s started again: %v, err %v", name, hosts, err)
		}
		waitPlacement(t, remover.coordURL, len(restIDs), 10*time.Second, restIDs...)
	}
	assertNoLeaving(t, cli)
}
