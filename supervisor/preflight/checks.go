package preflight

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/m3sup/m3sup/supervisor/disk"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// sysctl is one kernel setting with its bound: at least min, or (atMost)
// at most max.
type sysctl struct {
	name   string // dotted, as sysctl(8) names it
	bound  uint64
	atMost bool
	why    string
}

var sysctls = []sysctl{
	{CheckMaxMapCount, MinMaxMapCount, false, "M3 memory-maps many files; too few maps fail writes and bootstrap"},
	{CheckSwappiness, MaxSwappiness, true, "swapping M3's mmapped data stalls reads and writes"},
	{CheckNrOpen, MinNrOpen, false, "caps RLIMIT_NOFILE; M3 wants 3000000 open files"},
	{CheckFileMax, MinFileMax, false, "system-wide open files; M3 wants 3000000"},
}

func (s sysctl) file(o Options) string {
	return o.path(filepath.Join("proc/sys", strings.ReplaceAll(s.name, ".", "/")))
}

// ok reports whether v satisfies the bound.
func (s sysctl) ok(v uint64) bool {
	if s.atMost {
		return v <= s.bound
	}
	return v >= s.bound
}

// target is the value that satisfies the bound without lowering a limit
// (or raising swappiness) beyond what is needed.
func (s sysctl) target(v uint64) uint64 {
	if s.ok(v) {
		return v
	}
	return s.bound
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func checkSysctl(o Options, s sysctl) Check {
	c := Check{Name: s.name}
	v, err := readUint(s.file(o))
	if err != nil {
		c.Status, c.Detail = Warn, "cannot read: "+err.Error()
		return c
	}
	if s.ok(v) {
		c.Status, c.Detail = OK, strconv.FormatUint(v, 10)
		return c
	}
	rel := ">="
	if s.atMost {
		rel = "<="
	}
	c.Status = Warn
	c.Detail = fmt.Sprintf("%d, want %s %d: %s", v, rel, s.bound, s.why)
	c.Fix = fmt.Sprintf("sysctl -w %s=%d", s.name, s.bound)
	return c
}

var versionRE = regexp.MustCompile(`\bv?(\d+\.\d+(?:\.\d+)?)`)

// parseVersion finds the first dotted version in a --version output line.
func parseVersion(out string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if m := versionRE.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}

// versionLess compares dotted numeric versions.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

const installRuntime = "apt-get install -y containerd runc"

func checkBinary(ctx context.Context, o Options, name, minVersion string) Check {
	c := Check{Name: name}
	out, err := o.command(ctx, name, "--version")
	if err != nil {
		c.Status, c.Fix = Fail, installRuntime
		if errors.Is(err, exec.ErrNotFound) {
			c.Detail = name + " not found in PATH"
		} else {
			c.Detail = fmt.Sprintf("`%s --version`: %v", name, err)
		}
		return c
	}
	v := parseVersion(string(out))
	switch {
	case v == "":
		c.Status = Warn
		c.Detail = fmt.Sprintf("unknown version in %q", strings.TrimSpace(string(out)))
	case minVersion != "" && versionLess(v, minVersion):
		c.Status, c.Fix = Warn, installRuntime
		c.Detail = fmt.Sprintf("%s %s, m3sup is tested with %s or later", name, v, minVersion)
	default:
		c.Status, c.Detail = OK, name+" "+v
	}
	return c
}

func checkContainerd(ctx context.Context, o Options) Check {
	return checkBinary(ctx, o, "containerd", MinContainerd)
}

func checkRunc(ctx context.Context, o Options) Check { return checkBinary(ctx, o, "runc", "") }

func checkCgroups(o Options) Check {
	c := Check{Name: CheckCgroups}
	base := o.path("sys/fs/cgroup")
	want := []string{"cpu", "memory"}
	if b, err := os.ReadFile(filepath.Join(base, "cgroup.controllers")); err == nil {
		have := strings.Fields(string(b))
		var missing []string
		for _, w := range want {
			if !slices.Contains(have, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			c.Status = Warn
			c.Detail = fmt.Sprintf("v2 without the %s controller(s): container limits will not apply", strings.Join(missing, ", "))
			c.Fix = "enable them on the kernel command line (e.g. cgroup_enable=memory) and reboot"
			return c
		}
		c.Status, c.Detail = OK, "v2 ("+strings.Join(have, " ")+")"
		return c
	}
	var missing []string
	for _, w := range want {
		if fi, err := os.Stat(filepath.Join(base, w)); err != nil || !fi.IsDir() {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		c.Status = Fail
		c.Detail = fmt.Sprintf("neither cgroup v2 nor the v1 %s controller(s) under %s", strings.Join(missing, ", "), base)
		c.Fix = "mount cgroup2 on /sys/fs/cgroup (systemd does so by default) or the v1 cpu and memory hierarchies"
		return c
	}
	c.Status, c.Detail = OK, "v1 (cpu, memory)"
	return c
}

// memAvailable returns MemAvailable from a meminfo file, in bytes.
func memAvailable(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemAvailable: %w", path, err)
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no MemAvailable", path)
}

func checkMemory(o Options) Check {
	c := Check{Name: CheckMemory}
	minMem := o.MinMemory
	if minMem == 0 {
		minMem = MinMemory
	}
	avail, err := memAvailable(o.path("proc/meminfo"))
	if err != nil {
		c.Status, c.Detail = Warn, "cannot read: "+err.Error()
		return c
	}
	if avail < minMem {
		c.Status = Warn
		c.Detail = fmt.Sprintf("%s available, a single M3 node wants %s", bytesString(avail), bytesString(minMem))
		c.Fix = "free memory or use a larger host"
		return c
	}
	c.Status, c.Detail = OK, bytesString(avail)+" available"
	return c
}

func checkDisk(o Options) Check {
	c := Check{Name: CheckDisk}
	dir := o.DataDir
	if dir == "" {
		dir = "/var/lib/m3sup"
	}
	th := disk.DefaultThresholds()
	if o.Disk != nil {
		th = *o.Disk
	}
	probe := o.DiskProbe
	if probe == nil {
		probe = disk.Probe
	}
	// The data dir may not exist yet: look at the file system it will be on.
	at := filepath.Clean(dir)
	for {
		if _, err := os.Stat(at); err == nil || at == filepath.Dir(at) {
			break
		}
		at = filepath.Dir(at)
	}
	u, err := probe(at)
	if err != nil {
		c.Status, c.Detail = Warn, err.Error()
		return c
	}
	where := dir
	if at != dir {
		where = fmt.Sprintf("%s (on %s)", dir, at)
	}
	level, why := disk.Judge(u, th)
	switch level {
	case disk.LevelFull:
		c.Status, c.Detail = Fail, fmt.Sprintf("%s at %s", why, where)
		c.Fix = "free space (M3's commit log fails on a full disk) or choose another --data-dir"
	case disk.LevelLow:
		c.Status, c.Detail = Warn, fmt.Sprintf("%s at %s", why, where)
		c.Fix = "free space or choose another --data-dir"
	default:
		c.Status, c.Detail = OK, fmt.Sprintf("%s free of %s, %d of %d inodes free at %s",
			disk.Bytes(u.FreeBytes), disk.Bytes(u.SizeBytes), u.FreeInodes, u.Inodes, where)
	}
	return c
}

func checkPorts(o Options) Check {
	c := Check{Name: CheckPorts}
	if len(o.Ports) == 0 {
		c.Status, c.Detail = OK, "none to check"
		return c
	}
	var busy, bad []string
	for _, addr := range o.Ports {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			busy = append(busy, addr)
		} else {
			bad = append(bad, fmt.Sprintf("%s (%v)", addr, unwrapOp(err)))
		}
	}
	if len(busy)+len(bad) == 0 {
		c.Status, c.Detail = OK, "free: "+strings.Join(o.Ports, " ")
		return c
	}
	c.Status = Fail
	var parts []string
	if len(busy) > 0 {
		parts = append(parts, "in use: "+strings.Join(busy, " ")+" (m3sup or M3 already running?)")
		c.Fix = "ss -ltnp  # find the listener"
	}
	if len(bad) > 0 {
		parts = append(parts, "cannot bind: "+strings.Join(bad, ", "))
	}
	c.Detail = strings.Join(parts, "; ")
	return c
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func checkRoot(o Options) Check {
	c := Check{Name: CheckRoot}
	if uid := o.euid(); uid != 0 {
		c.Status = Fail
		c.Detail = fmt.Sprintf("running as uid %d; m3sup manages containerd, mounts and rlimits", uid)
		c.Fix = "sudo m3sup …"
		return c
	}
	c.Status, c.Detail = OK, "uid 0"
	return c
}

func bytesString(b uint64) string {
	const gib = 1 << 30
	if b >= gib {
		return strconv.FormatFloat(float64(b)/gib, 'f', 1, 64) + " GiB"
	}
	return strconv.FormatUint(b>>20, 10) + " MiB"
}

// checkCPUCore reports whether M3 v1.5's per-core insert queues are safe on
// this CPU and what m3sup does about it: OK when RDTSCP reports every CPU's
// own id, Warn when it does not and m3sup guards m3dbnode (one processor in
// its /proc/cpuinfo), Fail when it does not and the guard is off: M3 would
// crash on its first write of a new series.
func checkCPUCore(o Options) Check {
	c := Check{Name: CheckCPUCore}
	mode, err := cpucore.ParseMode(o.CPUCoreGuard)
	if err != nil {
		c.Status, c.Detail = Fail, "dbnode.cpuCoreGuard "+err.Error()
		return c
	}
	probe := o.CPUProbe
	if probe == nil {
		probe = cpucore.Probe
	}
	r := probe()
	safe, why := r.Safe()
	d := cpucore.Decide(mode, r)
	switch {
	case safe && !d.Guard:
		c.Status, c.Detail = OK, why
	case safe:
		c.Status, c.Detail = OK, "guard on by config: "+d.Detail()
	case d.Guard:
		c.Status, c.Detail = Warn, "guarded: "+d.Detail()
	default:
		c.Status = Fail
		c.Detail = why + "; with dbnode.cpuCoreGuard off M3 v1.5 crashes on its first write of a new series (" + cpucore.Issues + ")"
		c.Fix = "set dbnode.cpuCoreGuard: auto"
	}
	return c
}
