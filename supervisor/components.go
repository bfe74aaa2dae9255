package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/member"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// Component names; also their container ids.
const (
	DBNode      = "m3dbnode"
	Coordinator = "m3coordinator"
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

// component returns <root>/components/<name>/<sub>.
func (l layout) component(name, sub string) string {
	return filepath.Join(l.root, "components", name, sub)
}

// Paths inside the containers.
const (
	containerData = "/var/lib/m3db"
	containerKV   = "/var/lib/m3kv"
)

// rendered is the desired components plus the files they need on disk.
type rendered struct {
	comps []agent.Component
	files map[string][]byte // config path → contents
	dirs  []string
	// dbHash and dbRevision: the m3dbnode container hash and the revision
	// it runs, for the reconcile path to record (cluster.Rollout.Record).
	dbHash     string
	dbRevision cluster.DBNodeRevision
}

// m3EtcdAutoSync is how often M3's etcd clients refresh their endpoints
// from etcd's member list in multi-host mode.
const m3EtcdAutoSync = time.Minute

// votersPlaceholder stands for the etcd voters in the configs' hashes.
const votersPlaceholder = "etcd-voters:2379"

// renderConfigs renders the m3dbnode and m3coordinator configs of the
// desired state, with etcd reached through etcdParams.
func (s *Supervisor) renderConfigs(desired spec.Cluster, etcdParams m3.EtcdParams) (dbYAML, coordYAML []byte, err error) {
	cfg := s.cfg
	dbYAML, err = m3.RenderDBNode(m3.DBNodeParams{
		HostID:                   cfg.NodeName,
		Etcd:                     etcdParams,
		FilePathPrefix:           containerData,
		CacheDir:                 containerKV,
		ListenAddress:            cfg.DBNode.ListenAddress,
		ClusterListenAddress:     cfg.DBNode.ClusterListenAddress,
		HTTPNodeListenAddress:    cfg.DBNode.HTTPNodeListenAddress,
		HTTPClusterListenAddress: cfg.DBNode.HTTPClusterListenAddress,
		DebugListenAddress:       cfg.DBNode.DebugListenAddress,
		LogLevel:                 desired.DBNode.LogLevel,
	})
	if err == nil {
		dbYAML, err = m3.Overlay(dbYAML, desired.DBNode.Config)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("render m3dbnode config: %w", err)
	}
	coordYAML, err = m3.RenderCoordinator(m3.CoordinatorParams{
		Etcd:                 etcdParams,
		CacheDir:             containerKV,
		ListenAddress:        cfg.Coordinator.ListenAddress,
		MetricsListenAddress: cfg.Coordinator.MetricsListenAddress,
		LogLevel:             desired.Coordinator.LogLevel,
	})
	if err == nil {
		coordYAML, err = m3.Overlay(coordYAML, desired.Coordinator.Config)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("render m3coordinator config: %w", err)
	}
	return dbYAML, coordYAML, nil
}

// render builds every component this host runs from the desired state: its
// M3 config, its container spec and the hash that decides adopt, keep or
// restart. It writes nothing (see materialize).
func (s *Supervisor) render(lay layout, desired spec.Cluster, controls spec.HostControls, rel release, etcdHostPort string) (rendered, error) {
	cfg := s.cfg
	out := rendered{files: map[string][]byte{}}
	etcdParams := m3.EtcdParams{Endpoints: []string{etcdHostPort}, Env: desired.M3.Env, Zone: desired.M3.Zone, Service: "m3db"}
	s.mu.Lock()
	me := s.m3Etcd
	s.mu.Unlock()
	multi := me.Voters != nil
	if multi { // multi-host: every voter, over mutual TLS
		etcdParams.Endpoints, etcdParams.TLS, etcdParams.AutoSync = me.Voters, me.TLS, m3EtcdAutoSync
	} else if me.TLS != nil { // single node: the local member, over mutual TLS
		etcdParams.TLS = me.TLS
	}

	dbYAML, coordYAML, err := s.renderConfigs(desired, etcdParams)
	if err != nil {
		return out, err
	}
	// The configs' hashes leave out which etcd voters there are now: M3's
	// etcd clients follow the member list (AutoSync), so a voter joining
	// or leaving restarts nothing; the files name the voters of now for
	// the components' next start.
	dbHashed, coordHashed := dbYAML, coordYAML
	if multi {
		etcdParams.Endpoints = []string{votersPlaceholder}
		if dbHashed, coordHashed, err = s.renderConfigs(desired, etcdParams); err != nil {
			return out, err
		}
	}

	db, err := s.component(lay, rel, desired.DBNode.Image, DBNode, dbYAML, dbHashed, true, &out)
	if err != nil {
		return out, err
	}
	db.StopTimeout = cfg.DBNode.StopTimeout.D()
	db.Spec.NoFile = s.noFileLimit(cfg.DBNode.NoFile)
	db.Listen = []string{cfg.DBNode.ListenAddress, cfg.DBNode.HTTPNodeListenAddress, cfg.DBNode.HTTPClusterListenAddress, cfg.DBNode.DebugListenAddress}
	dbSpec := cluster.DBNodeSpecOf(desired)
	db.Gate = s.everyShardAvailable
	if multi { // one host at a time, under the cluster-wide permit
		db.Gate = s.rollout().RestartGate(dbSpec.Revision())
	}
	db.Healthy = s.dbnodeBootstrapped
	s.cpuGuard.Load().guardCPU(lay, &db.Spec, &out)

	co, err := s.component(lay, rel, desired.Coordinator.Image, Coordinator, coordYAML, coordHashed, false, &out)
	if err != nil {
		return out, err
	}
	co.StopTimeout = cfg.Coordinator.StopTimeout.D()
	co.Spec.NoFile = s.noFileLimit(1 << 20)
	co.Listen = []string{cfg.Coordinator.ListenAddress, cfg.Coordinator.MetricsListenAddress}
	co.Healthy = s.coordinatorHealthy
	if multi { // a new release reaches the coordinators one host at a time too
		co.Gate = s.rollout().RestartGate("")
	}

	for _, c := range []*agent.Component{&db, &co} {
		if etcdParams.TLS != nil {
			c.Spec.Mounts = append(c.Spec.Mounts, runtime.Mount{Source: lay.m3PKI(), Destination: member.ContainerPKI, ReadOnly: true})
		}
		c.Hash = specHash(c.Spec)
		ctl := controls[c.Name]
		c.Stopped, c.RestartGeneration = ctl.Stopped, ctl.RestartGeneration
	}
	out.dbHash = db.Hash
	out.dbRevision = cluster.DBNodeRevision{Revision: dbSpec.Revision(), Spec: dbSpec, Version: db.Version, Digest: string(rel.Digest)}
	// A host runs only the components of its roles (cluster.roles); the
	// agent removes the container of a role the host no longer has.
	out.comps = nil
	if cfg.Cluster.HasRole(config.RoleDBNode) {
		out.comps = append(out.comps, db)
	}
	if cfg.Cluster.HasRole(config.RoleCoordinator) {
		out.comps = append(out.comps, co)
	}
	return out, nil
}

// materialize creates the components' directories and writes their configs.
func materialize(r rendered) error {
	for _, d := range r.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare %s: %w", d, err)
		}
		if filepath.Base(d) == "tmp" {
			if err := os.Chmod(d, 0o1777); err != nil {
				return fmt.Errorf("prepare %s: %w", d, err)
			}
		}
	}
	for path, b := range r.files {
		if err := writeFileAtomic(path, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// component renders one component: from the release's binary on a
// host-directory rootfs, or, when image is set, from that image's snapshot
// (pulled beforehand by plan; its resolved digest is part of the hash).
// configYAML is written to the component's config dir; hashedYAML (the
// same config, maybe with parts that need no restart normalized) decides
// restarts.
func (s *Supervisor) component(lay layout, rel release, image, name string, configYAML, hashedYAML []byte, withData bool, out *rendered) (agent.Component, error) {
	if image != "" {
		dirs := map[string]string{}
		for _, sub := range []string{"config", "logs", "kv", "tmp", "data"} {
			if sub == "data" && !withData {
				continue
			}
			dirs[sub] = lay.component(name, sub)
			out.dirs = append(out.dirs, dirs[sub])
		}
		out.files[filepath.Join(dirs["config"], name+".yml")] = configYAML
		sum := sha256.Sum256(hashedYAML)
		sp := imageSpec(name, image, s.resolvedImage(image), dirs, hex.EncodeToString(sum[:]), withData)
		// Status shows what runs: the image, not the release version.
		return agent.Component{Name: name, Version: image, Spec: sp}, nil
	}
	bin, err := findBinary(rel.Dir, name)
	if err != nil {
		return agent.Component{}, fmt.Errorf("release %s (%s): %w", rel.Version, rel.Digest, err)
	}
	dirs := map[string]string{}
	for _, sub := range []string{"rootfs", "config", "logs", "kv", "data"} {
		if sub == "data" && !withData {
			continue
		}
		dirs[sub] = lay.component(name, sub)
		out.dirs = append(out.dirs, dirs[sub])
	}
	out.dirs = append(out.dirs, filepath.Join(dirs["rootfs"], "tmp"))
	out.files[filepath.Join(dirs["config"], name+".yml")] = configYAML
	etc := "/etc/" + name
	sp := runtime.Spec{
		ID:     name,
		RootFS: dirs["rootfs"],
		Args:   []string{"/bin/" + name, "-f", etc + "/" + name + ".yml"},
		Env:    []string{"PATH=/bin", "HOME=/tmp"},
		Mounts: []runtime.Mount{
			{Source: bin, Destination: "/bin/" + name, ReadOnly: true},
			{Source: dirs["config"], Destination: etc, ReadOnly: true},
			{Source: dirs["kv"], Destination: containerKV},
		},
		LogPath: filepath.Join(dirs["logs"], name+".log"),
		Labels:  map[string]string{},
	}
	if withData {
		sp.Mounts = append(sp.Mounts, runtime.Mount{Source: dirs["data"], Destination: containerData})
	}
	// The config's bytes decide restarts too, though its mount path is fixed.
	sum := sha256.Sum256(hashedYAML)
	sp.Labels["io.m3sup.config-sha256"] = hex.EncodeToString(sum[:])
	return agent.Component{Name: name, Version: rel.Version, Spec: sp}, nil
}

// noFileLimit caps a wanted RLIMIT_NOFILE at what this host allows (without
// CAP_SYS_RESOURCE a process cannot exceed its own hard limit). M3 only warns
// when the limit is low, so a lower limit beats a container that cannot start.
func (s *Supervisor) noFileLimit(want uint64) uint64 {
	limit, err := containerd.MaxNoFile()
	if err != nil || want <= limit {
		return want
	}
	s.noFileWarn.Do(func() {
		s.log.Warn("lowering RLIMIT_NOFILE to this host's limit; raise fs.nr_open and m3sup's hard limit (LimitNOFILE) for production",
			zap.Uint64("wanted", want), zap.Uint64("limit", limit))
	})
	return limit
}

// findBinary finds name at the top of an unpacked release or one directory
// down (goreleaser's m3_<v>_linux_amd64/ wrapper).
func findBinary(dir, name string) (string, error) {
	candidates := []string{filepath.Join(dir, name)}
	more, _ := filepath.Glob(filepath.Join(dir, "*", name))
	candidates = append(candidates, more...)
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("no executable %s in the release archive", name)
}

// specHash hashes everything that shapes a container. Labels the agent adds
// later (owner, component, hash itself) are not yet present.
func specHash(sp runtime.Spec) string {
	b, _ := json.Marshal(sp)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
