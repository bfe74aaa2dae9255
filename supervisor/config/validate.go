package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Validate reports every problem in c at once, joined with errors.Join; each
// is a *FieldError naming the field's YAML path. It does not fill defaults:
// validate what Default or Load returned, or a Config built from one.
func (c *Config) Validate() error {
	return joinFieldErrors(c.validate())
}

var (
	nodeNameRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	ctrdNamespaceRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	versionRE       = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.+-]+)?$`)
	// Lowercase only, as the cluster spec (supervisor/spec) requires.
	sha256RE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// namespaceRE is the cluster spec's rule for namespace names.
	namespaceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	identRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

type problems []*FieldError

func (p *problems) add(path, format string, args ...interface{}) {
	*p = append(*p, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() []*FieldError {
	var p problems

	p.absPath("dataDir", c.DataDir)
	if !nodeNameRE.MatchString(c.NodeName) || len(c.NodeName) > 253 {
		p.add("nodeName", "%q must be 1-253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit (it is the M3 host id)", c.NodeName)
	}

	p.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "text", "json")

	if p.absPath("api.socket", c.API.Socket) && len(c.API.Socket) > maxSocketPath {
		p.add("api.socket", "path is %d bytes; a unix socket path may have at most %d", len(c.API.Socket), maxSocketPath)
	}

	switch {
	case c.Etcd.Name == "":
		p.add("etcd.name", "must not be empty")
	case strings.ContainsAny(c.Etcd.Name, "=, \t\n"):
		p.add("etcd.name", "%q must not contain '=', ',' or spaces", c.Etcd.Name)
	}
	clientPort := p.httpURL("etcd.clientURL", c.Etcd.ClientURL)
	peerPort := p.httpURL("etcd.peerURL", c.Etcd.PeerURL)
	p.positive("etcd.startTimeout", c.Etcd.StartTimeout)

	ctrd := c.Runtime.Containerd
	p.oneOf("runtime.containerd.mode", ctrd.Mode, ModeAuto, ModeExternal, ModeManaged)
	if ctrd.Address != "" {
		p.absPath("runtime.containerd.address", strings.TrimPrefix(ctrd.Address, "unix://"))
	}
	if !ctrdNamespaceRE.MatchString(ctrd.Namespace) {
		p.add("runtime.containerd.namespace", "%q must be letters and digits, optionally separated by '.', '_' or '-'", ctrd.Namespace)
	}
	if ctrd.Binary == "" && ctrd.Mode != ModeExternal {
		p.add("runtime.containerd.binary", "must not be empty in mode %q", ctrd.Mode)
	}

	p.release(c.Release)

	d := c.DBNode
	ports := []portUse{clientPort.as("etcd.clientURL"), peerPort.as("etcd.peerURL")}
	for _, a := range []struct{ path, addr string }{
		{"dbnode.listenAddress", d.ListenAddress},
		{"dbnode.clusterListenAddress", d.ClusterListenAddress},
		{"dbnode.httpNodeListenAddress", d.HTTPNodeListenAddress},
		{"dbnode.httpClusterListenAddress", d.HTTPClusterListenAddress},
		{"dbnode.debugListenAddress", d.DebugListenAddress},
		{"coordinator.listenAddress", c.Coordinator.ListenAddress},
		{"coordinator.metricsListenAddress", c.Coordinator.MetricsListenAddress},
	} {
		ports = append(ports, p.listenAddress(a.path, a.addr).as(a.path))
	}
	if c.Metrics.Listen != "" {
		ports = append(ports, p.listenAddress("metrics.listen", c.Metrics.ListenAddress()).as("metrics.listen"))
	}
	p.portConflicts(ports)
	p.disk(c.Disk)
	p.oneOf("dbnode.logLevel", d.LogLevel, "debug", "info", "warn", "error")
	p.positive("dbnode.stopTimeout", d.StopTimeout)
	p.liveness("dbnode.unhealthyAfter", d.UnhealthyAfter)
	p.oneOf("dbnode.cpuCoreGuard", d.CPUCoreGuard, GuardAuto, GuardOn, GuardOff)
	if d.NoFile == 0 {
		p.add("dbnode.noFile", "must be at least 1")
	}
	p.oneOf("coordinator.logLevel", c.Coordinator.LogLevel, "debug", "info", "warn", "error")
	p.positive("coordinator.stopTimeout", c.Coordinator.StopTimeout)
	p.liveness("coordinator.unhealthyAfter", c.Coordinator.UnhealthyAfter)

	p.cluster(c.Cluster)
	if c.Backup.Interval < 0 {
		p.add("backup.interval", "must not be negative (0 disables scheduled backups)")
	}
	if c.Backup.Keep < 0 {
		p.add("backup.keep", "must not be negative (0 keeps every backup)")
	}
	if l := c.ComponentLogs; l.MaxSize < 0 || (l.MaxSize > 0 && l.MaxSize < MinComponentLogMaxSize) {
		p.add("componentLogs.maxSize", "%d must be at least %d bytes, or 0 to never rotate", l.MaxSize, MinComponentLogMaxSize)
	}
	if c.ComponentLogs.MaxFiles < 1 {
		p.add("componentLogs.maxFiles", "%d must be at least 1 (the live file; 1 truncates without keeping old output)", c.ComponentLogs.MaxFiles)
	}
	p.image("dbnode.image", d.Image)
	p.image("coordinator.image", c.Coordinator.Image)
	p.registries(c.Registries)
	for i, k := range c.Bundles.TrustedKeys {
		if !strings.HasPrefix(k, "/") {
			p.add(fmt.Sprintf("bundles.trustedKeys[%d]", i), "%q must be an absolute path", k)
		}
	}
	return p
}

func (p *problems) disk(d Disk) {
	for _, f := range []struct {
		path string
		v    int
	}{{"disk.warnFreePercent", d.WarnFreePercent}, {"disk.failFreePercent", d.FailFreePercent}} {
		if f.v < 0 || f.v >= 100 {
			p.add(f.path, "%d must be a whole percentage from 0 to 99 (0 turns it off)", f.v)
		}
	}
	if d.FailFreePercent > d.WarnFreePercent && d.WarnFreePercent != 0 {
		p.add("disk.failFreePercent", "%d must not exceed disk.warnFreePercent %d (fail means fuller than warn)", d.FailFreePercent, d.WarnFreePercent)
	}
	if d.FailFreeBytes > d.WarnFreeBytes && d.WarnFreeBytes != 0 {
		p.add("disk.failFreeBytes", "%d must not exceed disk.warnFreeBytes %d (fail means fuller than warn)", d.FailFreeBytes, d.WarnFreeBytes)
	}
}

func (p *problems) release(r Release) {
	if !versionRE.MatchString(r.Version) {
		p.add("release.version", "%q must be an M3 version like 1.5.0", r.Version)
	}
	if !fetchableURL(r.URL) {
		p.add("release.url", "%q must be an http://, https:// or file:// URL or an absolute path, like https://host/m3.tar.gz", r.URL)
	}
	if r.MaxDownloadBytes < 0 {
		p.add("release.maxDownloadBytes", "%d must not be negative (bytes; 0 or unset means %d, 2 GiB)", r.MaxDownloadBytes, DefaultMaxDownloadBytes)
	}
	if r.InsecureSkipChecksum {
		return
	}
	switch {
	case r.Checksum == "":
		p.add("release.checksum", `is required with a custom release.url: use "sha256:<64 hex digits>" or "file:<url of a checksums file>", or set release.insecureSkipChecksum: true`)
	case strings.HasPrefix(r.Checksum, "sha256:"):
		if !sha256RE.MatchString(r.Checksum) {
			p.add("release.checksum", "%q must be sha256: followed by 64 lowercase hex digits", r.Checksum)
		}
	case strings.HasPrefix(r.Checksum, "file:"):
		if !fetchableURL(strings.TrimPrefix(r.Checksum, "file:")) {
			p.add("release.checksum", "%q must be file: followed by an http://, https:// or file:// URL or an absolute path", r.Checksum)
		}
	default:
		p.add("release.checksum", `%q must be "sha256:<64 hex digits>" or "file:<url>" (or set release.insecureSkipChecksum)`, r.Checksum)
	}
}

// fetchableURL reports whether the release fetcher (bundle.Cache.Fetch)
// takes raw: an absolute path, an http(s) URL with a host, or a file URL
// with an absolute path on this host. Anything else (ftp://, go-getter's
// forced getters like git::, relative paths) it refuses when run starts.
func fetchableURL(raw string) bool {
	if strings.HasPrefix(raw, "/") {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || strings.Contains(raw, "::") {
		return false
	}
	switch u.Scheme {
	case "http", "https":
		return u.Host != "" && u.Path != "" && !strings.HasSuffix(u.Path, "/")
	case "file":
		return (u.Host == "" || u.Host == "localhost") && strings.HasPrefix(u.Path, "/")
	}
	return false
}

// dnsNameRE matches a DNS name: dot-separated labels of letters, digits
// and inner hyphens, each at most 63 characters.
var dnsNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// imageRefRE matches a fully qualified image reference: a registry host (a
// dotted name, localhost or an IP, optional port), a lowercase repository
// path, and a tag and/or a sha256 digest. (supervisor/spec checks the same.)
var imageRefRE = regexp.MustCompile(`^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|localhost|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?` +
	`(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+` +
	`(?:(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?:@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$`)

// registryHostRE matches host[:port]; mirrors may add a /path.
var registryHostRE = regexp.MustCompile(`^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$`)

func (p *problems) image(path, ref string) {
	if ref != "" && !imageRefRE.MatchString(ref) {
		p.add(path, "%q must be a full image reference with a registry host and a tag or digest, like quay.io/m3db/m3dbnode:v1.5.0", ref)
	}
}

func (p *problems) registries(regs map[string]Registry) {
	hosts := make([]string, 0, len(regs))
	for h := range regs {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		r, path := regs[h], "registries."+h
		if !registryHostRE.MatchString(h) {
			p.add(path, "%q must be a registry host[:port] with no scheme or path, like quay.io or 127.0.0.1:5000", h)
		}
		for i, m := range r.Mirrors {
			host, _, _ := strings.Cut(m, "/")
			if strings.Contains(m, "://") || !registryHostRE.MatchString(host) {
				p.add(fmt.Sprintf("%s.mirrors[%d]", path, i), "%q must be host[:port][/path] with no scheme (mark a plain-HTTP mirror with insecurePlainHTTP under its own registries entry)", m)
			}
		}
		if r.Password != "" && r.PasswordFile != "" {
			p.add(path+".passwordFile", "set password or passwordFile, not both")
		}
		if r.PasswordFile != "" {
			p.absPath(path+".passwordFile", r.PasswordFile)
		}
		if (r.Password != "" || r.PasswordFile != "") && r.Username == "" {
			p.add(path+".username", "must be set with a password")
		}
		if r.CA != "" {
			p.absPath(path+".ca", r.CA)
		}
	}
}

func (p *problems) cluster(c Cluster) {
	for _, f := range []struct{ path, v string }{
		{"cluster.env", c.Env},
		{"cluster.zone", c.Zone},
		{"cluster.isolationGroup", c.IsolationGroup},
	} {
		if !identRE.MatchString(f.v) {
			p.add(f.path, "%q must be letters, digits, '_', '.' or '-'", f.v)
		}
	}
	seenRole := map[string]bool{}
	for i, r := range c.Roles {
		path := fmt.Sprintf("cluster.roles[%d]", i)
		switch {
		case r != RoleDBNode && r != RoleCoordinator:
			p.add(path, "%q is not a role (want %q or %q)", r, RoleDBNode, RoleCoordinator)
		case seenRole[r]:
			p.add(path, "%q is listed twice", r)
		}
		seenRole[r] = true
	}
	// Weight defaults to 100 (base); an explicit 0 is an error, not a
	// silent 100.
	if c.Weight < 1 || c.Weight > 10000 {
		p.add("cluster.weight", "%d must be between 1 and 10000", c.Weight)
	}
	if c.NumShards < 1 || c.NumShards > 4096 {
		p.add("cluster.numShards", "%d must be between 1 and 4096", c.NumShards)
	}
	// The cluster spec (supervisor/spec) allows 1 to 7; run seeds it.
	if c.ReplicationFactor < 1 || c.ReplicationFactor > 7 {
		p.add("cluster.replicationFactor", "%d must be between 1 and 7", c.ReplicationFactor)
	}
	p.positive("cluster.readyTimeout", c.ReadyTimeout)
	p.positive("cluster.rolloutDeadline", c.RolloutDeadline)
	p.positive("cluster.joinTimeout", c.JoinTimeout)
	if d := c.CertLifetime.D(); d < MinCertLifetime || d > 10*365*24*time.Hour {
		p.add("cluster.certLifetime", "%v must be between %v and 3650 days (87600h, the CA's own validity)", d, MinCertLifetime)
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil && (!dnsNameRE.MatchString(c.Advertise) || len(c.Advertise) > 253) {
		p.add("cluster.advertise", "%q must be an IP address or a DNS name, without a port (the etcd and M3 ports come from their own settings)", c.Advertise)
	}
	if c.JoinListen != "" {
		if _, _, err := net.SplitHostPort(c.JoinListen); err != nil {
			p.add("cluster.joinListen", "%q must be host:port", c.JoinListen)
		}
		if c.Advertise == "" {
			p.add("cluster.advertise", "must be set with cluster.joinListen (the address other hosts reach this host by)")
		}
	}
	if c.MaxVoters < 0 || (c.MaxVoters > 0 && c.MaxVoters%2 == 0) {
		p.add("cluster.maxVoters", "%d must be odd (3 or 5)", c.MaxVoters)
	}
	if len(c.Namespaces) == 0 {
		p.add("cluster.namespaces", "must list at least one namespace")
	}
	seen := make(map[string]int)
	for i, ns := range c.Namespaces {
		path := fmt.Sprintf("cluster.namespaces[%d]", i)
		switch first, dup := seen[ns.Name]; {
		case !namespaceRE.MatchString(ns.Name):
			p.add(path+".name", "%q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", ns.Name)
		case dup:
			p.add(path+".name", "%q is already the name of cluster.namespaces[%d]", ns.Name, first)
		default:
			seen[ns.Name] = i
		}
		retentionOK := p.positive(path+".retention", ns.Retention)
		blockOK := p.positive(path+".blockSize", ns.BlockSize)
		if retentionOK && blockOK && ns.BlockSize > ns.Retention {
			p.add(path+".blockSize", "%s must not be longer than retention (%s)", ns.BlockSize, ns.Retention)
		}
		if p.positive(path+".bufferPast", ns.BufferPast) && blockOK && ns.BufferPast >= ns.BlockSize {
			p.add(path+".bufferPast", "%s must be shorter than blockSize (%s)", ns.BufferPast, ns.BlockSize)
		}
		if p.positive(path+".bufferFuture", ns.BufferFuture) && blockOK && ns.BufferFuture >= ns.BlockSize {
			p.add(path+".bufferFuture", "%s must be shorter than blockSize (%s)", ns.BufferFuture, ns.BlockSize)
		}
	}
}

func (p *problems) oneOf(path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(path, "%q must be one of %s", v, strings.Join(allowed, ", "))
}

func (p *problems) absPath(path, v string) bool {
	if !filepath.IsAbs(v) {
		p.add(path, "%q must be an absolute path", v)
		return false
	}
	return true
}

func (p *problems) positive(path string, d Duration) bool {
	if d <= 0 {
		p.add(path, "must be a positive duration like 30s, got %s", d)
		return false
	}
	return true
}

// liveness checks an unhealthyAfter: 0 (never) or at least 3s, one
// liveness probe's longest wait.
func (p *problems) liveness(path string, d Duration) {
	if d < 0 || (d > 0 && d < Duration(3*time.Second)) {
		p.add(path, "must be 0 (never restart for it) or at least 3s, got %s", d)
	}
}

// listen is a validated host:port; port 0 means invalid.
type listen struct {
	host string
	port int
}

type portUse struct {
	path string
	listen
}

func (l listen) as(path string) portUse { return portUse{path: path, listen: l} }

func splitHostPort(addr string) (listen, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return listen{}, false
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return listen{}, false
	}
	return listen{host: host, port: n}, true
}

func (p *problems) listenAddress(path, addr string) listen {
	l, ok := splitHostPort(addr)
	if !ok {
		p.add(path, "%q must be host:port with a port from 1 to 65535, like 0.0.0.0:9000", addr)
	}
	return l
}

func (p *problems) httpURL(path, raw string) listen {
	u, err := url.Parse(raw)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && (u.Path == "" || u.Path == "/") &&
		u.RawQuery == "" && u.Fragment == "" && u.User == nil {
		if l, ok := splitHostPort(u.Host); ok && l.host != "" {
			return l
		}
	}
	p.add(path, "must be an http(s) URL with host:port, like http://127.0.0.1:2379, got %q", raw)
	return listen{}
}

// portConflicts reports two listeners on the same port whose hosts overlap.
func (p *problems) portConflicts(uses []portUse) {
	for i, u := range uses {
		if u.port == 0 {
			continue
		}
		for _, prev := range uses[:i] {
			if prev.port == u.port && hostsOverlap(prev.host, u.host) {
				p.add(u.path, "port %d is also used by %s", u.port, prev.path)
				break
			}
		}
	}
}

func hostsOverlap(a, b string) bool {
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return a == b || wildcard(a) || wildcard(b)
}
