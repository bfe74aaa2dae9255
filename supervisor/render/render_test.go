package render

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// desiredOf is the desired state a config file describes (the daemon's
// SpecFromConfig, as far as rendering looks).
func desiredOf(cfg config.Config) spec.Cluster {
	return spec.Cluster{
		Release:     spec.Release{Version: cfg.Release.Version},
		M3:          spec.M3{Env: cfg.Cluster.Env, Zone: cfg.Cluster.Zone},
		DBNode:      spec.Component{LogLevel: cfg.DBNode.LogLevel, Image: cfg.DBNode.Image},
		Coordinator: spec.Component{LogLevel: cfg.Coordinator.LogLevel, Image: cfg.Coordinator.Image},
	}
}

// input renders cfg's desired state from a release with both binaries.
func input(cfg config.Config) Input {
	return Input{
		Config:  cfg,
		Desired: desiredOf(cfg),
		Host:    Host{ComponentsDir: "/data/components"},
		Release: Release{Version: "1.5.0", Dir: "/rel", Binaries: map[string]string{DBNode: "/rel/m3dbnode", Coordinator: "/rel/m3coordinator"}},
		Etcd:    Etcd{Local: "127.0.0.1:2379", PKIDir: "/data/pki/m3", PKIMount: "/etc/m3sup-pki"},
	}
}

func mustRender(t *testing.T, in Input) Output {
	t.Helper()
	out, err := Components(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImageMode: a component with an image renders to a Spec that runs the
// image (no rootfs, no binary mount) with binary mode's arguments and
// mounts, and its hash follows the resolved digest, not just the tag.
func TestImageMode(t *testing.T) {
	cfg := config.Default()
	cfg.DBNode.Image = "quay.io/m3db/m3dbnode:v1.5.0"
	in := input(cfg)
	delete(in.Release.Binaries, DBNode) // image mode needs no binary
	in.Images = map[string]string{cfg.DBNode.Image: "sha256:aaaa"}
	in.Host.NoFileLimit = 1 << 30
	r := mustRender(t, in)
	db, co := r.Components[0], r.Components[1]
	if db.Spec.Image != cfg.DBNode.Image || db.Spec.RootFS != "" {
		t.Fatalf("dbnode spec: image %q rootfs %q", db.Spec.Image, db.Spec.RootFS)
	}
	if want := []string{"/bin/m3dbnode", "-f", "/etc/m3dbnode/m3dbnode.yml"}; !slices.Equal(db.Spec.Args, want) {
		t.Fatalf("args %q, want %q", db.Spec.Args, want)
	}
	dests := map[string]runtime.Mount{}
	for _, m := range db.Spec.Mounts {
		dests[m.Destination] = m
	}
	for dest, ro := range map[string]bool{"/etc/m3dbnode": true, ContainerKV: false, ContainerData: false, "/tmp": false} {
		if m, ok := dests[dest]; !ok || m.ReadOnly != ro {
			t.Errorf("mount %s: %+v (present %v), want read-only %v", dest, m, ok, ro)
		}
	}
	if _, ok := dests["/bin/m3dbnode"]; ok {
		t.Error("image mode bind-mounts the release binary")
	}
	if db.Spec.NoFile == 0 || db.Spec.Labels[LabelImageDigest] != "sha256:aaaa" {
		t.Errorf("nofile %d, labels %v", db.Spec.NoFile, db.Spec.Labels)
	}
	if co.Spec.Image != "" || co.Spec.RootFS == "" {
		t.Fatalf("coordinator should stay in binary mode: %+v", co.Spec)
	}

	// The tag now points elsewhere: only m3dbnode's hash changes.
	in.Images = map[string]string{cfg.DBNode.Image: "sha256:bbbb"}
	r2 := mustRender(t, in)
	if r2.Components[0].Hash == db.Hash {
		t.Error("m3dbnode's hash ignores the image digest")
	}
	if r2.Components[1].Hash != co.Hash {
		t.Error("m3coordinator's hash changed with m3dbnode's image")
	}
}

// TestMissingBinary: a component in binary mode needs its binary in the
// release.
func TestMissingBinary(t *testing.T) {
	in := input(config.Default())
	delete(in.Release.Binaries, Coordinator)
	if _, err := Components(in); err == nil || !strings.Contains(err.Error(), "no executable m3coordinator") {
		t.Fatalf("render without the coordinator's binary: %v", err)
	}
}

// TestVotersChange: in multi-host mode the M3 configs name the etcd voters
// of now and let M3's etcd clients follow the member list
// (autoSyncInterval), and a change of voters alone changes no component's
// hash, so it restarts nothing (not even when m3sup restarts and adopts).
// Anything else in the config still does.
func TestVotersChange(t *testing.T) {
	in := input(config.Default())
	render := func(voters ...string) Output {
		t.Helper()
		in.Etcd.Voters, in.Etcd.TLS = voters, &m3.EtcdTLS{CertPath: "/p/c.crt", KeyPath: "/p/c.key", CAPath: "/p/ca.crt"}
		return mustRender(t, in)
	}
	a := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.4:2379")
	b := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.5:2379")
	for i := range a.Components {
		if a.Components[i].Hash != b.Components[i].Hash {
			t.Errorf("%s: a change of etcd voters changes its hash", a.Components[i].Name)
		}
		if !slices.Contains(a.Components[i].Spec.Mounts, runtime.Mount{Source: "/data/pki/m3", Destination: "/etc/m3sup-pki", ReadOnly: true}) {
			t.Errorf("%s: M3's PKI not mounted: %+v", a.Components[i].Name, a.Components[i].Spec.Mounts)
		}
	}
	for path, body := range b.Files {
		if !bytes.Contains(body, []byte("127.0.0.5:2379")) || bytes.Contains(body, []byte("127.0.0.4:2379")) {
			t.Errorf("%s does not name the voters of now:\n%s", path, body)
		}
		if !bytes.Contains(body, []byte("autoSyncInterval: 1m0s")) {
			t.Errorf("%s lets M3's etcd clients keep their first endpoints:\n%s", path, body)
		}
		if bytes.Equal(body, a.Files[path]) {
			t.Errorf("%s did not change with the voters", path)
		}
	}
	// Another change still restarts: the coordinator's log level.
	in.Desired.Coordinator.LogLevel = "debug"
	c := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.5:2379")
	for i := range c.Components {
		changed := c.Components[i].Hash != b.Components[i].Hash
		if want := c.Components[i].Name == Coordinator; changed != want {
			t.Errorf("%s: hash changed %t after the coordinator's log level changed, want %t", c.Components[i].Name, changed, want)
		}
	}
	// Single-node mode: the local etcd, no autoSyncInterval.
	in.Etcd.Voters, in.Etcd.TLS = nil, nil
	for path, body := range mustRender(t, in).Files {
		if strings.Contains(string(body), "autoSyncInterval") {
			t.Errorf("single-node %s sets autoSyncInterval:\n%s", path, body)
		}
	}
}

// TestCPUGuardShapesDBNodeSpec: the guard adds the one-processor cpuinfo to
// m3dbnode's spec (and so changes its hash) only when on, and never touches
// m3coordinator.
func TestCPUGuardShapesDBNodeSpec(t *testing.T) {
	render := func(guard bool) Output {
		t.Helper()
		in := input(config.Default())
		in.Host.CPUGuard, in.Host.CPUInfo = guard, cpucore.OneProcessor(nil)
		return mustRender(t, in)
	}
	guarded := func(r Output, name string) (bool, string) {
		for _, c := range r.Components {
			if c.Name != name {
				continue
			}
			for _, m := range c.Spec.Mounts {
				if m.Destination == "/proc/cpuinfo" {
					if !m.ReadOnly {
						t.Errorf("%s: /proc/cpuinfo mounted read-write", name)
					}
					if n := cpucore.CountProcessors(r.Files[m.Source]); n != 1 {
						t.Errorf("%s: the mounted cpuinfo %s lists %d processors", name, m.Source, n)
					}
					return true, c.Hash
				}
			}
			return false, c.Hash
		}
		t.Fatalf("no %s rendered", name)
		return false, ""
	}
	on, onHash := guarded(render(true), DBNode)
	off, offHash := guarded(render(false), DBNode)
	if !on || off {
		t.Fatalf("guarded: on %v, off %v", on, off)
	}
	if onHash == offHash {
		t.Errorf("the guard must change m3dbnode's hash")
	}
	coOn, coOnHash := guarded(render(true), Coordinator)
	coOff, coOffHash := guarded(render(false), Coordinator)
	if coOn || coOff || coOnHash != coOffHash {
		t.Errorf("m3coordinator touched by the guard: %v %v, hashes equal %v", coOn, coOff, coOnHash == coOffHash)
	}
}

// TestRoles: a host renders only the components of its roles, and always
// the m3dbnode hash the rollout records.
func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		roles []string
		want  []string
	}{
		{[]string{"dbnode", "coordinator"}, []string{DBNode, Coordinator}},
		{[]string{"coordinator"}, []string{Coordinator}},
		{[]string{"dbnode"}, []string{DBNode}},
	} {
		cfg := config.Default()
		cfg.Cluster.Roles = tc.roles
		r := mustRender(t, input(cfg))
		var got []string
		for _, c := range r.Components {
			got = append(got, c.Name)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("roles %v render %v, want %v", tc.roles, got, tc.want)
		}
		if r.DBNodeHash == "" || r.DBNodeVersion != "1.5.0" {
			t.Errorf("roles %v: m3dbnode hash %q version %q", tc.roles, r.DBNodeHash, r.DBNodeVersion)
		}
	}
}

// TestNoFile: a wanted RLIMIT_NOFILE above the host's limit is lowered to
// it, and the first one lowered is reported; an unknown limit caps nothing.
func TestNoFile(t *testing.T) {
	cfg := config.Default()
	cfg.DBNode.NoFile = 500000
	in := input(cfg)
	r := mustRender(t, in)
	if r.Components[0].Spec.NoFile != 500000 || r.Components[1].Spec.NoFile != coordinatorNoFile || r.NoFileWanted != 0 {
		t.Fatalf("no limit: %d %d, lowered %d", r.Components[0].Spec.NoFile, r.Components[1].Spec.NoFile, r.NoFileWanted)
	}
	in.Host.NoFileLimit = 1000
	r = mustRender(t, in)
	if r.Components[0].Spec.NoFile != 1000 || r.Components[1].Spec.NoFile != 1000 || r.NoFileWanted != 500000 {
		t.Fatalf("limit 1000: %d %d, lowered %d", r.Components[0].Spec.NoFile, r.Components[1].Spec.NoFile, r.NoFileWanted)
	}
}

// TestControls: a host's controls reach its components without being part
// of their hashes.
func TestControls(t *testing.T) {
	in := input(config.Default())
	before := mustRender(t, in)
	in.Controls = spec.HostControls{DBNode: {Stopped: true, RestartGeneration: 3}}
	after := mustRender(t, in)
	db := after.Components[0]
	if !db.Stopped || db.RestartGeneration != 3 || after.Components[1].Stopped {
		t.Fatalf("controls: %+v", after.Components)
	}
	if db.Hash != before.Components[0].Hash {
		t.Error("a control changed m3dbnode's hash")
	}
}

// TestCertSerialRestarts: a renewed M3 etcd certificate (a new serial)
// changes both components' hashes, so the agent restarts them through
// their gates; the same serial keeps them.
func TestCertSerialRestarts(t *testing.T) {
	in := input(config.Default())
	in.Etcd.TLS = &m3.EtcdTLS{CertPath: "/p/c.crt", KeyPath: "/p/c.key", CAPath: "/p/ca.crt"}
	in.Etcd.CertSerial = "1a"
	a, a2 := mustRender(t, in), mustRender(t, in)
	in.Etcd.CertSerial = "2b"
	b := mustRender(t, in)
	for i := range a.Components {
		if a.Components[i].Hash != a2.Components[i].Hash {
			t.Errorf("%s: same serial, different hash", a.Components[i].Name)
		}
		if a.Components[i].Hash == b.Components[i].Hash {
			t.Errorf("%s: a renewed certificate does not change its hash", a.Components[i].Name)
		}
		if got := b.Components[i].Spec.Labels[LabelEtcdCertSerial]; got != "2b" {
			t.Errorf("%s: label %s = %q, want 2b", a.Components[i].Name, LabelEtcdCertSerial, got)
		}
	}
}
