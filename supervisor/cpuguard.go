package supervisor

import (
	"os"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// cpuGuard is this host's CPU-core guard decision (see package cpucore),
// made once at start: each host of a cluster decides for itself. Rendering
// takes it as a host fact (render.Host.CPUGuard).
type cpuGuard struct {
	decision cpucore.Decision
	// cpuinfo is what m3dbnode sees as /proc/cpuinfo when guarded.
	cpuinfo []byte
}

// decideCPUGuard probes this host, decides and logs the decision once.
func (s *Supervisor) decideCPUGuard() *cpuGuard {
	probe := s.opts.CPUProbe
	if probe == nil {
		probe = cpucore.Probe
	}
	mode, err := cpucore.ParseMode(s.cfg.DBNode.CPUCoreGuard)
	if err != nil { // Validate refuses it first; be safe anyway
		mode = cpucore.ModeAuto
	}
	g := &cpuGuard{decision: cpucore.Decide(mode, probe())}
	if g.decision.Guard {
		host, err := os.ReadFile("/proc/cpuinfo")
		if err != nil {
			s.log.Warn("read /proc/cpuinfo for the CPU-core guard; using a minimal one", zap.Error(err))
		}
		g.cpuinfo = cpucore.OneProcessor(host)
		s.log.Warn("M3 CPU-core guard on: m3dbnode will see one processor, so M3 v1.5 never indexes its per-core queues with a CPU id this host misreports",
			zap.String("reason", g.decision.Why), zap.String("mode", string(g.decision.Mode)), zap.String("m3_issues", cpucore.Issues),
			zap.Duration("probe_took", g.decision.Probe.Took))
	} else {
		s.log.Info("M3 CPU-core guard off", zap.String("reason", g.decision.Why), zap.String("mode", string(g.decision.Mode)),
			zap.Duration("probe_took", g.decision.Probe.Took))
	}
	s.cpuGuard.Store(g)
	return g
}
