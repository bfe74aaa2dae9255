package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
)

func TestPrintStatusCluster(t *testing.T) {
	st := api.Status{Node: "host1", Phase: "ready", Ready: true, Cluster: &api.ClusterStatus{
		Hosts: []api.HostStatus{
			{Name: "host1", Endpoint: "10.0.0.1:9000", Roles: []string{"dbnode", "coordinator"}, EtcdRole: "voter", IsolationGroup: "rack-a", Weight: 100},
			{Name: "host2", Endpoint: "10.0.0.2:9000", Roles: []string{"dbnode"}, EtcdRole: "learner"},
			{Name: "host3", Roles: []string{"coordinator"}, EtcdRole: "client"},
		},
		ControllerLeader: "host1", PermitHolder: "host2", PermitHeld: true,
	}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	out := b.String()
	for _, want := range []string{"HOST", "GROUP", "host1  voter", "rack-a  100", "controller leader", "host2  learner", "holds the restart permit", "host3  client", "permit: host2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	st.Cluster.PermitHeld, st.Cluster.PermitHolder = false, ""
	b.Reset()
	printStatus(&b, st, time.Now())
	if !strings.Contains(b.String(), "permit: none") {
		t.Errorf("status lacks permit: none:\n%s", b.String())
	}

	st.Cluster = nil // single-node mode: no cluster section
	b.Reset()
	printStatus(&b, st, time.Now())
	if strings.Contains(b.String(), "HOST ") || strings.Contains(b.String(), "permit:") {
		t.Errorf("single-node status shows a cluster section:\n%s", b.String())
	}
}
