package render

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// Component names; also their container ids.
const (
	DBNode      = "m3dbnode"
	Coordinator = "m3coordinator"
)

// Paths inside the containers.
const (
	ContainerData = "/var/lib/m3db"
	ContainerKV   = "/var/lib/m3kv"
)

// LabelImageDigest records, on an image-mode container, the manifest digest
// its image reference resolved to; being part of the spec hash, a tag that
// moves restarts the component on the next pull.
const LabelImageDigest = "io.m3sup.image-digest"

// LabelEtcdCertSerial records the serial of the etcd client certificate
// M3 started with (Etcd.CertSerial).
const LabelEtcdCertSerial = "io.m3sup.etcd-cert-serial"

// labelConfigSum records the sha256 of a component's (hashed) config: the
// config's bytes decide restarts too, though its mount path is fixed.
const labelConfigSum = "io.m3sup.config-sha256"

// m3EtcdAutoSync is how often M3's etcd clients refresh their endpoints
// from etcd's member list in multi-host mode.
const m3EtcdAutoSync = time.Minute

// votersPlaceholder stands for the etcd voters in the configs' hashes.
const votersPlaceholder = "etcd-voters:2379"

// coordinatorNoFile is the RLIMIT_NOFILE m3coordinator asks for.
const coordinatorNoFile = 1 << 20

// Input is everything rendering depends on.
type Input struct {
	// Config is this host's config file: node name, listen addresses,
	// stop timeouts, RLIMIT_NOFILE and roles.
	Config config.Config
	// Desired is the cluster's desired state (the effective one: a failed
	// m3dbnode spec already replaced by the last good one).
	Desired spec.Cluster
	// Controls are this host's stop and restart controls.
	Controls spec.HostControls
	Host     Host
	// Release is the fetched release; only its version when every
	// component runs an image.
	Release Release
	// Images maps an image reference to the digest it resolved to; a
	// reference not pulled yet (a dry run of a new image) is missing.
	Images map[string]string
	Etcd   Etcd
}

// Host is what rendering needs to know of this host.
type Host struct {
	// ComponentsDir holds each component's directories:
	// <ComponentsDir>/<name>/<config|logs|kv|data|rootfs|tmp>.
	ComponentsDir string
	// NoFileLimit is the highest RLIMIT_NOFILE a process may have here;
	// zero when unknown (no cap).
	NoFileLimit uint64
	// CPUGuard, when set, makes m3dbnode see CPUInfo as /proc/cpuinfo
	// (see package cpucore).
	CPUGuard bool
	CPUInfo  []byte
}

// Release is a fetched, verified and unpacked M3 release.
type Release struct {
	Version string
	Digest  string
	Dir     string
	// Binaries maps a component name to its executable in Dir; a
	// component in binary mode whose binary is missing fails to render.
	Binaries map[string]string
}

// Etcd is how M3's containers reach etcd.
type Etcd struct {
	// Local is the local member's host:port, used on a single node.
	Local string
	// Voters are every etcd voter's host:port in multi-host mode; nil on a
	// single node.
	Voters []string
	// TLS is M3's client certificate as the containers see it; nil for
	// plain HTTP.
	TLS *m3.EtcdTLS
	// PKIDir is the host directory holding TLS's files, mounted read-only
	// at PKIMount.
	PKIDir, PKIMount string
	// CertSerial is the serial of M3's client certificate in PKIDir. It
	// is a label (LabelEtcdCertSerial) and so part of the spec hash: M3
	// reads the certificate once at start, so a renewed one restarts the
	// component, through its restart gate (one host at a time).
	CertSerial string
}

// Output is the rendered components of this host and what they need on
// disk.
type Output struct {
	// Components are the components of this host's roles, in order
	// (m3dbnode, m3coordinator); the caller attaches Gate and Healthy.
	Components []agent.Component
	// Files maps a path to the contents it must have; Dirs must exist
	// (a "tmp" one world-writable and sticky).
	Files map[string][]byte
	Dirs  []string
	// DBNodeHash and DBNodeVersion are m3dbnode's container hash and
	// version, rendered even on a host without the dbnode role, for the
	// rollout to record which revision a hash runs.
	DBNodeHash, DBNodeVersion string
	// NoFileWanted, when above Host.NoFileLimit, is the first
	// RLIMIT_NOFILE lowered to it.
	NoFileWanted uint64
}

// Components renders every component this host runs: its M3 config, its
// container spec and the hash that decides adopt, keep or restart.
func Components(in Input) (Output, error) {
	cfg, desired := in.Config, in.Desired
	out := Output{Files: map[string][]byte{}}
	etcdParams := m3.EtcdParams{Endpoints: []string{in.Etcd.Local}, Env: desired.M3.Env, Zone: desired.M3.Zone, Service: "m3db"}
	multi := in.Etcd.Voters != nil
	if multi { // multi-host: every voter, over mutual TLS
		etcdParams.Endpoints, etcdParams.TLS, etcdParams.AutoSync = in.Etcd.Voters, in.Etcd.TLS, m3EtcdAutoSync
	} else if in.Etcd.TLS != nil { // single node: the local member, over mutual TLS
		etcdParams.TLS = in.Etcd.TLS
	}

	dbYAML, coordYAML, err := configs(cfg, desired, etcdParams)
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
		if dbHashed, coordHashed, err = configs(cfg, desired, etcdParams); err != nil {
			return out, err
		}
	}

	db, err := component(in, desired.DBNode.Image, DBNode, dbYAML, dbHashed, true, &out)
	if err != nil {
		return out, err
	}
	db.StopTimeout = cfg.DBNode.StopTimeout.D()
	db.Spec.NoFile = noFile(in.Host.NoFileLimit, cfg.DBNode.NoFile, &out)
	db.Listen = []string{cfg.DBNode.ListenAddress, cfg.DBNode.HTTPNodeListenAddress, cfg.DBNode.HTTPClusterListenAddress, cfg.DBNode.DebugListenAddress}
	guardCPU(in.Host, &db.Spec, &out)

	co, err := component(in, desired.Coordinator.Image, Coordinator, coordYAML, coordHashed, false, &out)
	if err != nil {
		return out, err
	}
	co.StopTimeout = cfg.Coordinator.StopTimeout.D()
	co.Spec.NoFile = noFile(in.Host.NoFileLimit, coordinatorNoFile, &out)
	co.Listen = []string{cfg.Coordinator.ListenAddress, cfg.Coordinator.MetricsListenAddress}

	for _, c := range []*agent.Component{&db, &co} {
		if etcdParams.TLS != nil {
			c.Spec.Mounts = append(c.Spec.Mounts, runtime.Mount{Source: in.Etcd.PKIDir, Destination: in.Etcd.PKIMount, ReadOnly: true})
			if in.Etcd.CertSerial != "" {
				c.Spec.Labels[LabelEtcdCertSerial] = in.Etcd.CertSerial
			}
		}
		c.Hash = specHash(c.Spec)
		ctl := in.Controls[c.Name]
		c.Stopped, c.RestartGeneration = ctl.Stopped, ctl.RestartGeneration
	}
	out.DBNodeHash, out.DBNodeVersion = db.Hash, db.Version
	// A host runs only the components of its roles (cluster.roles); the
	// agent removes the container of a role the host no longer has.
	if cfg.Cluster.HasRole(config.RoleDBNode) {
		out.Components = append(out.Components, db)
	}
	if cfg.Cluster.HasRole(config.RoleCoordinator) {
		out.Components = append(out.Components, co)
	}
	return out, nil
}

// configs renders the m3dbnode and m3coordinator configs of the desired
// state, with etcd reached through etcdParams.
func configs(cfg config.Config, desired spec.Cluster, etcdParams m3.EtcdParams) (dbYAML, coordYAML []byte, err error) {
	dbYAML, err = m3.RenderDBNode(m3.DBNodeParams{
		HostID:                   cfg.NodeName,
		Etcd:                     etcdParams,
		FilePathPrefix:           ContainerData,
		CacheDir:                 ContainerKV,
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
		CacheDir:             ContainerKV,
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

// component renders one component: from the release's binary on a
// host-directory rootfs, or, when image is set, from that image's snapshot
// (pulled beforehand; its resolved digest is part of the hash). configYAML
// is written to the component's config dir; hashedYAML (the same config,
// maybe with parts that need no restart normalized) decides restarts.
func component(in Input, image, name string, configYAML, hashedYAML []byte, withData bool, out *Output) (agent.Component, error) {
	dir := func(sub string) string { return filepath.Join(in.Host.ComponentsDir, name, sub) }
	sum := sha256.Sum256(hashedYAML)
	configSum := hex.EncodeToString(sum[:])
	if image != "" {
		dirs := map[string]string{}
		for _, sub := range []string{"config", "logs", "kv", "tmp", "data"} {
			if sub == "data" && !withData {
				continue
			}
			dirs[sub] = dir(sub)
			out.Dirs = append(out.Dirs, dirs[sub])
		}
		out.Files[filepath.Join(dirs["config"], name+".yml")] = configYAML
		sp := imageSpec(name, image, in.Images[image], dirs, configSum, withData)
		// Status shows what runs: the image, not the release version.
		return agent.Component{Name: name, Version: image, Spec: sp}, nil
	}
	bin, ok := in.Release.Binaries[name]
	if !ok {
		return agent.Component{}, fmt.Errorf("release %s (%s): no executable %s in the release archive", in.Release.Version, in.Release.Digest, name)
	}
	dirs := map[string]string{}
	for _, sub := range []string{"rootfs", "config", "logs", "kv", "data"} {
		if sub == "data" && !withData {
			continue
		}
		dirs[sub] = dir(sub)
		out.Dirs = append(out.Dirs, dirs[sub])
	}
	out.Dirs = append(out.Dirs, filepath.Join(dirs["rootfs"], "tmp"))
	out.Files[filepath.Join(dirs["config"], name+".yml")] = configYAML
	etc := "/etc/" + name
	sp := runtime.Spec{
		ID:     name,
		RootFS: dirs["rootfs"],
		Args:   []string{"/bin/" + name, "-f", etc + "/" + name + ".yml"},
		Env:    []string{"PATH=/bin", "HOME=/tmp"},
		Mounts: []runtime.Mount{
			{Source: bin, Destination: "/bin/" + name, ReadOnly: true},
			{Source: dirs["config"], Destination: etc, ReadOnly: true},
			{Source: dirs["kv"], Destination: ContainerKV},
		},
		LogPath: filepath.Join(dirs["logs"], name+".log"),
		Labels:  map[string]string{},
	}
	if withData {
		sp.Mounts = append(sp.Mounts, runtime.Mount{Source: dirs["data"], Destination: ContainerData})
	}
	sp.Labels[labelConfigSum] = configSum
	return agent.Component{Name: name, Version: in.Release.Version, Spec: sp}, nil
}

// imageSpec is a component's container in image mode: the image's snapshot
// as rootfs, the same arguments, mounts and labels as binary mode, and a
// private /tmp.
func imageSpec(name, ref, digest string, dirs map[string]string, configSum string, withData bool) runtime.Spec {
	etc := "/etc/" + name
	sp := runtime.Spec{
		ID:    name,
		Image: ref,
		Args:  []string{"/bin/" + name, "-f", etc + "/" + name + ".yml"},
		Env:   []string{"HOME=/tmp"},
		Mounts: []runtime.Mount{
			{Source: dirs["config"], Destination: etc, ReadOnly: true},
			{Source: dirs["kv"], Destination: ContainerKV},
			{Source: dirs["tmp"], Destination: "/tmp"},
		},
		LogPath: filepath.Join(dirs["logs"], name+".log"),
		Labels:  map[string]string{labelConfigSum: configSum, LabelImageDigest: digest},
	}
	if withData {
		sp.Mounts = append(sp.Mounts, runtime.Mount{Source: dirs["data"], Destination: ContainerData})
	}
	return sp
}

// noFile caps a wanted RLIMIT_NOFILE at what this host allows (without
// CAP_SYS_RESOURCE a process cannot exceed its own hard limit), noting the
// first one lowered in out. M3 only warns when the limit is low, so a lower
// limit beats a container that cannot start.
func noFile(limit, want uint64, out *Output) uint64 {
	if limit == 0 || want <= limit {
		return want
	}
	if out.NoFileWanted == 0 {
		out.NoFileWanted = want
	}
	return limit
}

// guardCPU adds the one-processor cpuinfo to m3dbnode's spec when the
// guard is on: a file under the component's dir, bind-mounted read-only
// over /proc/cpuinfo. The mount is part of the spec, so turning the guard
// on or off changes the hash and restarts m3dbnode.
func guardCPU(h Host, sp *runtime.Spec, out *Output) {
	if !h.CPUGuard {
		return
	}
	path := filepath.Join(h.ComponentsDir, DBNode, "cpuinfo")
	out.Files[path] = h.CPUInfo
	sp.Mounts = append(sp.Mounts, runtime.Mount{Source: path, Destination: "/proc/cpuinfo", ReadOnly: true})
}

// specHash hashes everything that shapes a container. Labels the agent adds
// later (owner, component, hash itself) are not yet present.
func specHash(sp runtime.Spec) string {
	b, _ := json.Marshal(sp)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
