package supervisor

import (
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/member"
	"github.com/m3sup/m3sup/supervisor/render"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// Component names; also their container ids.
const (
	DBNode      = render.DBNode
	Coordinator = render.Coordinator
)

// layout is the on-disk layout under the data dir.
type layout struct{ root string }

func (l layout) etcd() string       { return filepath.Join(l.root, "etcd") }
func (l layout) cache() string      { return filepath.Join(l.root, "cache") }
func (l layout) containerd() string { return filepath.Join(l.root, "containerd") }

// pki holds the CA and this host's etcd certificates (member.Paths).
func (l layout) pki() string { return filepath.Join(l.root, "pki") }

// m3PKI holds only what M3's containers may see: the CA certificate and
// their etcd client certificate, never the CA key or the peer key.
func (l layout) m3PKI() string { return filepath.Join(l.root, "pki", "m3") }

// clusterFile is what a joined host remembers of its join (join.ClusterFile).
func (l layout) clusterFile() string { return filepath.Join(l.root, "cluster.json") }

// components holds each component's directories (render.Host).
func (l layout) components() string { return filepath.Join(l.root, "components") }

// component returns <root>/components/<name>/<sub>.
func (l layout) component(name, sub string) string {
	return filepath.Join(l.components(), name, sub)
}

// componentLog is a component's stdout/stderr log, as render.Components
// names it; logrotate keeps its rotated files beside it.
func (l layout) componentLog(name string) string {
	return filepath.Join(l.component(name, "logs"), name+".log")
}

// renderInput gathers what rendering the desired state needs from this
// host: its config, its facts (RLIMIT_NOFILE, the CPU-core guard), the
// images resolved so far and how M3 reaches etcd.
func (s *Supervisor) renderInput(desired spec.Cluster, controls spec.HostControls, rel render.Release, etcdHostPort string) render.Input {
	p := s.parts.load()
	me := p.m3Etcd
	var certSerial string
	if p.member != nil {
		certSerial = p.member.M3CertSerial()
	}
	host := render.Host{ComponentsDir: layout{root: s.cfg.DataDir}.components()}
	if limit, err := containerd.MaxNoFile(); err == nil {
		host.NoFileLimit = limit
	}
	if g := s.cpuGuard.Load(); g != nil && g.decision.Guard {
		host.CPUGuard, host.CPUInfo = true, g.cpuinfo
	}
	return render.Input{
		Config: s.cfg, Desired: desired, Controls: controls, Host: host,
		Release: rel, Images: s.art.resolvedImages(),
		Etcd: render.Etcd{Local: etcdHostPort, Voters: me.Voters, TLS: me.TLS,
			PKIDir: layout{root: s.cfg.DataDir}.m3PKI(), PKIMount: member.ContainerPKI, CertSerial: certSerial},
	}
}

// render renders the components of desired (render.Components), warning
// once when this host lowers a component's RLIMIT_NOFILE.
func (s *Supervisor) render(in render.Input) (render.Output, error) {
	out, err := render.Components(in)
	if err == nil && out.NoFileWanted != 0 {
		s.noFileWarn.Do(func() {
			s.log.Warn("lowering RLIMIT_NOFILE to this host's limit; raise fs.nr_open and m3sup's hard limit (LimitNOFILE) for production",
				zap.Uint64("wanted", out.NoFileWanted), zap.Uint64("limit", in.Host.NoFileLimit))
		})
	}
	return out, err
}

// attachChecks gives rendered components their restart gates, health
// checks (ready: m3dbnode bootstrapped, m3coordinator /health) and liveness
// probes (/health answers at all; see agent.Component.Alive). In multi-host mode (M3 reaches every etcd voter) restarts wait
// for the cluster-wide permit, one host at a time; a lone host's m3dbnode
// waits until every shard is AVAILABLE.
func (s *Supervisor) attachChecks(comps []agent.Component, in render.Input) {
	multi := in.Etcd.Voters != nil
	for i := range comps {
		c := &comps[i]
		switch c.Name {
		case DBNode:
			c.Gate = s.everyShardAvailable
			if multi { // one host at a time, under the cluster-wide permit
				c.Gate = s.parts.load().roll.RestartGate(cluster.DBNodeSpecOf(in.Desired).Revision())
			}
			c.Healthy = s.dbnodeBootstrapped
			c.Alive, c.UnhealthyAfter = s.dbnodeAnswers, s.cfg.DBNode.UnhealthyAfter.D()
		case Coordinator:
			c.Healthy = s.coordinatorHealthy
			c.Alive, c.UnhealthyAfter = s.coordinatorHealthy, s.cfg.Coordinator.UnhealthyAfter.D()
			if multi { // a new release reaches the coordinators one host at a time too
				c.Gate = s.parts.load().roll.RestartGate("")
			}
		}
	}
}

// dbRevision is the revision a rendered m3dbnode runs, for the rollout to
// record (cluster.Rollout.Record).
func dbRevision(in render.Input, out render.Output) cluster.DBNodeRevision {
	dbSpec := cluster.DBNodeSpecOf(in.Desired)
	return cluster.DBNodeRevision{Revision: dbSpec.Revision(), Spec: dbSpec, Version: out.DBNodeVersion, Digest: in.Release.Digest}
}

// materialize creates the components' directories and writes their configs.
func materialize(r render.Output) error {
	for _, d := range r.Dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare %s: %w", d, err)
		}
		if filepath.Base(d) == "tmp" {
			if err := os.Chmod(d, 0o1777); err != nil {
				return fmt.Errorf("prepare %s: %w", d, err)
			}
		}
	}
	for path, b := range r.Files {
		if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
			return err // names the file
		}
	}
	return nil
}
