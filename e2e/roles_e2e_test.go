package e2e

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// TestE2EHostRoles: three hosts with different roles and replication
// factor 2 — host1 runs both, host2 only m3dbnode, host3 only
// m3coordinator. The placement holds the two db hosts only; the dbnode-only
// host drives M3 through a peer's coordinator and becomes ready; a point
// written through the coordinator-only host reads back through host1; each
// host runs exactly the containers of its roles, status on any host shows
// every host's roles, and controlling a component a host does not run is
// refused.
func TestE2EHostRoles(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()

	h1 := newHostNodeWith(t, "host1", "127.0.0.2", true, rs.url, sum, hostOpts{rf: 2})
	h1.start()
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "2")
	cli := h1.tlsEtcd(t)
	h2 := newHostNodeWith(t, "host2", "127.0.0.3", false, rs.url, sum, hostOpts{rf: 2, roles: []string{"dbnode"}})
	h2.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 2, 2*time.Minute, h1, h2)
	h3 := newHostNodeWith(t, "host3", "127.0.0.4", false, rs.url, sum, hostOpts{rf: 2, roles: []string{"coordinator"}})
	h3.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 3, 2*time.Minute, h1, h2, h3)

	want := map[*hostNode][]string{h1: {"m3coordinator", "m3dbnode"}, h2: {"m3dbnode"}, h3: {"m3coordinator"}}
	for _, h := range []*hostNode{h1, h2, h3} {
		st := h.waitReady(6 * time.Minute)
		var comps []string
		for _, c := range st.Components {
			comps = append(comps, c.Name)
		}
		slices.Sort(comps)
		t.Logf("%s ready after %s running %v; M3: %d instances, shards %v", h.ip, time.Since(start).Round(100*time.Millisecond), comps, st.M3.Instances, st.M3.Shards)
		if !slices.Equal(comps, want[h]) {
			t.Errorf("%s runs %v, want %v", h.ip, comps, want[h])
		}
		// Only the role's containers exist in the host's containerd.
		out, err := exec.Command("ctr", "--address", st.Containerd.Address, "--namespace", st.Containerd.Namespace, "containers", "ls", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr containers ls on %s: %v: %s", h.ip, err, out)
		}
		ids := strings.Fields(string(out))
		slices.Sort(ids)
		if !slices.Equal(ids, want[h]) {
			t.Errorf("%s: containerd holds %v, want %v", h.ip, ids, want[h])
		}
	}

	mc := &m3.Client{BaseURL: h1.coordURL}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	p, exists, err := mc.Placement(ctx)
	cancel()
	if err != nil || !exists {
		t.Fatalf("placement: exists %t, err %v", exists, err)
	}
	ids := p.InstanceIDs()
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"host1", "host2"}) || p.ReplicaFactor != 2 || !p.AllAvailable() {
		t.Fatalf("placement: instances %v, RF %d, shards %v; want host1 and host2, RF 2, all AVAILABLE", ids, p.ReplicaFactor, p.ShardStates())
	}

	// Status on the coordinator-only host shows every host's roles.
	st := statusCLI(t, h3.socket)
	roles := map[string]string{}
	if st.Cluster != nil {
		for _, h := range st.Cluster.Hosts {
			roles[h.Name] = strings.Join(h.Roles, ",")
		}
	}
	if roles["host1"] != "dbnode,coordinator" || roles["host2"] != "dbnode" || roles["host3"] != "coordinator" {
		t.Errorf("roles in host3's status: %v", roles)
	}

	// Writes go through the coordinator-only host, reads through host1.
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, h3.coordURL, "m3sup_e2e_roles", ts, 11)
	readBack(t, h1.coordURL, "m3sup_e2e_roles", ts, 11)

	// A host does not control a component it does not run.
	for _, c := range []struct {
		h    *hostNode
		comp string
	}{{h3, "m3dbnode"}, {h2, "m3coordinator"}} {
		cmd := m3sup("restart", c.comp, "--socket", c.h.socket)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "runs no "+c.comp) {
			t.Errorf("restart %s on %s: err %v, output %q (want a refusal naming the role)", c.comp, c.h.ip, err, out)
		}
	}
	if _, err := api.NewClient(h2.socket).Control(context.Background(), "m3coordinator", "stop"); err == nil {
		t.Error("the dbnode-only host accepted a stop of m3coordinator")
	}

	stopHosts(t, h3, h2, h1)
	t.Logf("total %s", time.Since(start).Round(100*time.Millisecond))
}
