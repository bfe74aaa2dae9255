package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/readiness"
)

func TestPrintStatusCluster(t *testing.T) {
	st := api.Status{Node: "host1", Phase: "ready", Ready: true, Cluster: &api.ClusterStatus{
		Hosts: []api.HostStatus{
			{Name: "host1", Endpoint: "10.0.0.1:9000", Roles: []string{"dbnode", "coordinator"}, EtcdRole: "voter", IsolationGroup: "rack-a", Weight: 100},
			{Name: "host2", Endpoint: "10.0.0.2:9000", Roles: []string{"dbnode"}, EtcdRole: "learner"},
			{Name: "host3", Roles: []string{"coordinator"}, EtcdRole: "client", Leaving: true},
			{Name: "host4", Roles: []string{}, EtcdRole: "client", Leaving: true, RemovedBy: "host1"},
		},
		ControllerLeader: "host1", PermitHolder: "host2", PermitHeld: true,
	}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	out := b.String()
	for _, want := range []string{"HOST", "GROUP/WEIGHT", "host1  voter", "rack-a/100", "controller leader", "host2  learner", "holds the restart permit", "host3  client", "leaving", "leaving: gone, removed by host1", "permit: host2"} {
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

func TestPrintStatusRollout(t *testing.T) {
	st := api.Status{Node: "host1", Phase: "ready", Ready: true, Cluster: &api.ClusterStatus{
		Hosts: []api.HostStatus{
			{Name: "host1", Roles: []string{"dbnode", "coordinator"}, EtcdRole: "voter",
				DBNode:     &api.HostDBNode{Revision: "aaaaaaaaaaaa", Version: "1.5.1", OnDesired: true},
				Components: []api.HostComponent{{Name: "m3coordinator", State: "running", Healthy: true}, {Name: "m3dbnode", State: "running", Healthy: true}}},
			{Name: "host2", Roles: []string{"dbnode", "coordinator"}, EtcdRole: "voter",
				DBNode:     &api.HostDBNode{Revision: "bbbbbbbbbbbb", Version: "1.5.0"},
				Components: []api.HostComponent{{Name: "m3dbnode", State: "crash-loop"}}},
		},
	}, Rollout: &api.RolloutStatus{DesiredRevision: "aaaaaaaaaaaa", DesiredVersion: "1.5.1", Hosts: 2, OnDesired: 1,
		Message: "rolling: 1/2 on desired m3dbnode 1.5.1 (aaaaaaaaaaaa)"}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	out := b.String()
	for _, want := range []string{"DBNODE SPEC", "1.5.1 aaaaaaaaaaaa (desired)", "m3dbnode running healthy", "1.5.0 bbbbbbbbbbbb ",
		"m3dbnode crash-loop unhealthy", "rollout: rolling: 1/2 on desired m3dbnode 1.5.1 (aaaaaaaaaaaa)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	st.Cluster = nil
	b.Reset()
	printStatus(&b, st, time.Now())
	if !strings.Contains(b.String(), "rollout: rolling") {
		t.Errorf("single-node status lacks the rollout line:\n%s", b.String())
	}
}

func TestPrintStatusJoinServers(t *testing.T) {
	st := api.Status{Node: "host1", Phase: "ready", Ready: true, Cluster: &api.ClusterStatus{
		Hosts: []api.HostStatus{
			{Name: "host1", EtcdRole: "voter", HoldsCA: true, JoinURL: "https://10.0.0.1:7443"},
			{Name: "host2", EtcdRole: "voter", HoldsCA: true},
			{Name: "host3", EtcdRole: "client"},
		},
	}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	lines := strings.Split(b.String(), "\n")
	for host, want := range map[string]string{"host1": "serves joins at https://10.0.0.1:7443", "host2": "holds the CA", "host3": ""} {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, host+" ") })
		if i < 0 {
			t.Fatalf("no line for %s:\n%s", host, b.String())
		}
		if want == "" && (strings.Contains(lines[i], "joins") || strings.Contains(lines[i], "CA")) || !strings.Contains(lines[i], want) {
			t.Errorf("%s line %q, want note %q", host, lines[i], want)
		}
	}
}

// TestPrintStatusDegraded: a host whose m3dbnode crash-loops after M3 was
// ready says so on the READY line, with the crash reason in the NOTE and
// without the goroutine dump; the CPU-core guard has its own line.
func TestPrintStatusDegraded(t *testing.T) {
	reason := "panic: runtime error: index out of range [61] with length 2 in storage.(*dbShardInsertQueue).Insert"
	st := api.Status{Node: "host1", Phase: "ready", Message: "M3 accepts writes on http://127.0.0.1:7201 (took 26.9s)",
		Readiness: readiness.Verdict{Degraded: true, Component: "m3dbnode",
			Reason: "degraded: M3 was ready, now m3dbnode crash-loop: " + reason + " (7 restarts, next try in 30s)"},
		CPUCoreGuard: &cpucore.Decision{Mode: cpucore.ModeAuto, Guard: true, Why: "CPUID does not advertise RDTSCP"},
		Components: []agent.Status{{Name: "m3dbnode", State: agent.StateCrashLoop, Restarts: 7, BackoffDelay: "30s", Message: reason,
			LastExit: &agent.Exit{Code: 2, Reason: reason, LogTail: []string{"\tgithub.com/uber/tchannel-go@v1.20.1/inbound.go:125 +0xd6e"}},
			LogTail:  []string{"\tgithub.com/uber/tchannel-go@v1.20.1/inbound.go:125 +0xd6e"}}}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	out := b.String()
	for _, want := range []string{
		"READY       no     degraded: M3 was ready, now m3dbnode crash-loop: panic: runtime error",
		"CPU GUARD   on     m3dbnode sees one processor (CPUID does not advertise RDTSCP; M3 issues #3105, #3827, #4080)",
		"last exit 2; " + reason + "; next try in 30s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tchannel") || strings.Contains(out, "M3 accepts writes") {
		t.Errorf("status shows the log tail or a stale ready message:\n%s", out)
	}

	// Running again, not bootstrapped yet: the last crash stays in view.
	now := time.Now()
	st.Components[0].State, st.Components[0].PID, st.Components[0].Message = agent.StateRunning, 42, ""
	st.Components[0].LastReason, st.Components[0].LastExit.At = agent.ReasonCrash, now.Add(-13*time.Second)
	b.Reset()
	printStatus(&b, st, now)
	if want := "last crash 13s ago: " + reason; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
}

// TestStatusNotRunning: no daemon on the socket exits 3, as systemctl
// status does for an inactive unit.
func TestStatusNotRunning(t *testing.T) {
	cmd := newRootCmd()
	cmd.SetArgs([]string{"status", "--socket", t.TempDir() + "/none.sock"})
	cmd.SetOut(&bytes.Buffer{})
	err := cmd.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("status with no daemon: %v; want exit 3, not running", err)
	}
}

// TestPrintStatusStateErrors: a value refused in etcd shows as a line
// naming the key.
func TestPrintStatusStateErrors(t *testing.T) {
	st := api.Status{Node: "n1", Phase: "running", StateErrors: []api.StateError{{Key: "/m3sup/v1/hosts/n1/controls", Revision: 9, Error: "decode: unexpected end of JSON input"}}}
	var b bytes.Buffer
	printStatus(&b, st, time.Now())
	if !strings.Contains(b.String(), "bad value in etcd: /m3sup/v1/hosts/n1/controls (revision 9): decode: unexpected end of JSON input") {
		t.Fatalf("status:\n%s", b.String())
	}
}

// TestPrintStatusDisk: the DISK line shows free space and inodes, and the
// warning when the data dir's filesystem is low.
func TestPrintStatusDisk(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    api.DiskStatus
		want string
	}{
		{"ok", api.DiskStatus{Path: "/var/lib/m3sup", SizeBytes: 100 << 30, FreeBytes: 60 << 30, Inodes: 1000, FreeInodes: 900, Level: "ok"},
			"DISK        ok       60.0 GiB free of 100.0 GiB (60%), 900 of 1000 inodes free at /var/lib/m3sup\n"},
		{"low", api.DiskStatus{Path: "/d", SizeBytes: 100 << 30, FreeBytes: 5 << 30, Level: "low", Message: "low: 5.0 GiB free of 100.0 GiB (5.0%), threshold 10% or 2.0 GiB"},
			"DISK        LOW      5.0 GiB free of 100.0 GiB (5%), 0 of 0 inodes free at /d; WARNING: low: 5.0 GiB free"},
		{"probe failed", api.DiskStatus{Path: "/d", Error: "statfs /d: input/output error"},
			"DISK        unknown  /d: statfs /d: input/output error\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			st := api.Status{Node: "host1", Phase: "ready", Ready: true, Disk: &d, Etcd: api.EtcdStatus{State: "running"}}
			var b bytes.Buffer
			printStatus(&b, st, time.Now())
			if !strings.Contains(b.String(), tc.want) {
				t.Errorf("status lacks %q:\n%s", tc.want, b.String())
			}
		})
	}
}

// TestPrintStatusCerts: the CERTS line names the earliest expiry and its
// certificate; a warning gets its own line.
func TestPrintStatusCerts(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	st := api.Status{Node: "host1", Phase: "ready", Certs: &api.CertsStatus{EarliestExpiry: now.Add(48 * time.Hour),
		Path: "/data/pki/etcd-peer.crt", CommonName: "m3sup-etcd-peer", Count: 4}}
	var b bytes.Buffer
	printStatus(&b, st, now)
	if want := "CERTS       earliest expiry 2026-12-06T00:00:00Z (in 48h0m0s)  /data/pki/etcd-peer.crt, m3sup-etcd-peer, 4 certificate(s)"; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
	if strings.Contains(b.String(), "WARNING") {
		t.Errorf("a warning without one:\n%s", b.String())
	}
	st.Certs.Warning = "certificate /data/pki/etcd-peer.crt (m3sup-etcd-peer) expires at 2026-12-06T00:00:00Z, in 48h0m0s, and was not renewed (see the log)"
	b.Reset()
	printStatus(&b, st, now)
	if want := "WARNING     " + st.Certs.Warning; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
}
