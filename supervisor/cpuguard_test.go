package supervisor

import (
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
	"github.com/m3sup/m3sup/supervisor/render"
)

// TestCPUGuardDecision: with an injected probe for either kind of host,
// the daemon hands rendering the guard (and a one-processor cpuinfo) only
// when the probe distrusts the CPU or the config forces it on (see
// render.TestCPUGuardShapesDBNodeSpec for what the guard does to m3dbnode).
func TestCPUGuardDecision(t *testing.T) {
	lying := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{249, 217}}
	honest := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 1}}
	host := func(probe cpucore.Result, mode string) render.Host {
		t.Helper()
		cfg := config.Default()
		cfg.DataDir = "/data"
		cfg.DBNode.CPUCoreGuard = mode
		s := New(Options{Config: cfg, CPUProbe: func() cpucore.Result { return probe }})
		s.decideCPUGuard()
		return s.renderInput(SpecFromConfig(cfg), nil, render.Release{}, "127.0.0.1:2379").Host
	}
	for _, tc := range []struct {
		name  string
		probe cpucore.Result
		mode  string
		want  bool
	}{
		{"lying/auto", lying, "auto", true},
		{"honest/auto", honest, "auto", false},
		{"lying/off", lying, "off", false},
		{"honest/on", honest, "on", true},
	} {
		h := host(tc.probe, tc.mode)
		if h.CPUGuard != tc.want {
			t.Errorf("%s: guard %v, want %v", tc.name, h.CPUGuard, tc.want)
		}
		if h.CPUGuard && cpucore.CountProcessors(h.CPUInfo) != 1 {
			t.Errorf("%s: the cpuinfo lists %d processors", tc.name, cpucore.CountProcessors(h.CPUInfo))
		}
		if h.ComponentsDir != "/data/components" {
			t.Errorf("%s: components dir %q", tc.name, h.ComponentsDir)
		}
	}
}
