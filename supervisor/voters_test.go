package supervisor

import (
	"bytes"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/member"
)

// TestRenderVotersChange: in multi-host mode the M3 configs name the etcd
// voters of now and let M3's etcd clients follow the member list
// (autoSyncInterval), and a change of voters alone changes no component's
// hash, so it restarts nothing (not even when m3sup restarts and adopts).
// Anything else in the config still does.
func TestRenderVotersChange(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	s := New(Options{Config: cfg})
	rel := release{Version: "1.5.0", Dir: t.TempDir()}
	writeExecutable(t, rel.Dir+"/m3dbnode")
	writeExecutable(t, rel.Dir+"/m3coordinator")
	lay := layout{root: cfg.DataDir}
	desired := SpecFromConfig(cfg)
	render := func(voters ...string) rendered {
		t.Helper()
		s.m3Etcd = member.M3Etcd{Voters: voters, TLS: &m3.EtcdTLS{CertPath: "/p/c.crt", KeyPath: "/p/c.key", CAPath: "/p/ca.crt"}}
		r, err := s.render(lay, desired, nil, rel, "127.0.0.1:2379")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.4:2379")
	b := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.5:2379")
	for i := range a.comps {
		if a.comps[i].Hash != b.comps[i].Hash {
			t.Errorf("%s: a change of etcd voters changes its hash", a.comps[i].Name)
		}
	}
	for path, body := range b.files {
		if !bytes.Contains(body, []byte("127.0.0.5:2379")) || bytes.Contains(body, []byte("127.0.0.4:2379")) {
			t.Errorf("%s does not name the voters of now:\n%s", path, body)
		}
		if !bytes.Contains(body, []byte("autoSyncInterval: 1m0s")) {
			t.Errorf("%s lets M3's etcd clients keep their first endpoints:\n%s", path, body)
		}
		if bytes.Equal(body, a.files[path]) {
			t.Errorf("%s did not change with the voters", path)
		}
	}
	// Another change still restarts: the coordinator's log level.
	desired.Coordinator.LogLevel = "debug"
	c := render("127.0.0.2:2379", "127.0.0.3:2379", "127.0.0.5:2379")
	for i := range c.comps {
		changed := c.comps[i].Hash != b.comps[i].Hash
		if want := c.comps[i].Name == Coordinator; changed != want {
			t.Errorf("%s: hash changed %t after the coordinator's log level changed, want %t", c.comps[i].Name, changed, want)
		}
	}
	// Single-node mode: the local etcd, no autoSyncInterval.
	s.m3Etcd = member.M3Etcd{}
	r, err := s.render(lay, desired, nil, rel, "127.0.0.1:2379")
	if err != nil {
		t.Fatal(err)
	}
	for path, body := range r.files {
		if strings.Contains(string(body), "autoSyncInterval") {
			t.Errorf("single-node %s sets autoSyncInterval:\n%s", path, body)
		}
	}
}
