package supervisor

import (
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// TestCPUGuardShapesDBNodeSpec: with an injected probe for either kind of
// host, the guard adds the one-processor cpuinfo to m3dbnode's spec (and so
// changes its hash) only when the probe distrusts the CPU, and never
// touches m3coordinator.
func TestCPUGuardShapesDBNodeSpec(t *testing.T) {
	lying := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{249, 217}}
	honest := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 1}}
	// One release dir: its path is in the specs, and so in their hashes.
	rel := release{Version: "1.5.0", Dir: t.TempDir()}
	writeExecutable(t, rel.Dir+"/m3dbnode")
	writeExecutable(t, rel.Dir+"/m3coordinator")
	render := func(probe cpucore.Result, mode string) rendered {
		t.Helper()
		cfg := config.Default()
		cfg.DataDir = "/data"
		cfg.DBNode.CPUCoreGuard = mode
		s := New(Options{Config: cfg, CPUProbe: func() cpucore.Result { return probe }})
		s.decideCPUGuard()
		r, err := s.render(layout{root: "/data"}, SpecFromConfig(cfg), nil, rel, "127.0.0.1:2379")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	guarded := func(r rendered, name string) (bool, string) {
		for _, c := range r.comps {
			if c.Name != name {
				continue
			}
			for _, m := range c.Spec.Mounts {
				if m.Destination == "/proc/cpuinfo" {
					if !m.ReadOnly {
						t.Errorf("%s: /proc/cpuinfo mounted read-write", name)
					}
					if n := cpucore.CountProcessors(r.files[m.Source]); n != 1 {
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
	on, onHash := guarded(render(lying, "auto"), DBNode)
	off, offHash := guarded(render(honest, "auto"), DBNode)
	forcedOff, forcedOffHash := guarded(render(lying, "off"), DBNode)
	forcedOn, _ := guarded(render(honest, "on"), DBNode)
	if !on || off || forcedOff || !forcedOn {
		t.Fatalf("guarded: lying/auto %v, honest/auto %v, lying/off %v, honest/on %v; want true false false true", on, off, forcedOff, forcedOn)
	}
	if onHash == offHash || offHash != forcedOffHash {
		t.Errorf("the guard must be exactly what changes m3dbnode's hash")
	}
	coOn, coOnHash := guarded(render(lying, "auto"), Coordinator)
	coOff, coOffHash := guarded(render(honest, "auto"), Coordinator)
	if coOn || coOff || coOnHash != coOffHash {
		t.Errorf("m3coordinator touched by the guard: %v %v, hashes equal %v", coOn, coOff, coOnHash == coOffHash)
	}
}
