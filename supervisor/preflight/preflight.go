package preflight

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/m3sup/m3sup/supervisor/disk"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// Status is a check's outcome. Only Fail means m3sup cannot run; Warn means
// it runs but not as M3 wants in production.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one result.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"` // a command that fixes it
}

// Report is every check, in a fixed order (CheckNames).
type Report struct {
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// NotOK returns the checks that warned or failed.
func (r Report) NotOK() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status != OK {
			out = append(out, c)
		}
	}
	return out
}

// Check names, in report order.
const (
	CheckMaxMapCount = "vm.max_map_count"
	CheckSwappiness  = "vm.swappiness"
	CheckNrOpen      = "fs.nr_open"
	CheckFileMax     = "fs.file-max"
	CheckContainerd  = "containerd"
	CheckRunc        = "runc"
	CheckCgroups     = "cgroups"
	CheckMemory      = "memory"
	CheckDisk        = "disk"
	CheckPorts       = "ports"
	CheckRoot        = "root"
	// CheckCPUCore is M3 v1.5's per-core queues on this CPU (package cpucore).
	CheckCPUCore = "m3-cpu-core"
)

// CheckNames lists every check Run reports, in order.
var CheckNames = []string{
	CheckMaxMapCount, CheckSwappiness, CheckNrOpen, CheckFileMax,
	CheckContainerd, CheckRunc, CheckCgroups, CheckMemory, CheckDisk, CheckPorts, CheckRoot, CheckCPUCore,
}

// Thresholds (M3's production recommendations).
const (
	MinMaxMapCount = 3000000
	MaxSwappiness  = 1
	MinNrOpen      = 3000000
	MinFileMax     = 3000000
	MinMemory      = 2 << 30 // MemAvailable for a single node
	// MinContainerd is the oldest containerd m3sup is tested with.
	MinContainerd = "1.6"
)

// Options says what to check. The zero value checks this host with
// m3sup's defaults and no ports.
type Options struct {
	// Root prefixes /proc, /sys and /etc (tests, a chroot); "" means /.
	Root string
	// DataDir is where m3sup keeps its data (not prefixed); the disk check
	// looks at its nearest existing ancestor. Default /var/lib/m3sup.
	DataDir string
	// Ports are TCP addresses m3sup and M3 will listen on ("127.0.0.1:2379",
	// ":7201"); each must be free to bind.
	Ports []string
	// MinMemory overrides the memory threshold (bytes); 0: the default.
	MinMemory uint64
	// Disk says when the data dir's filesystem is low (warn) or nearly
	// full (fail): config's disk section; nil: disk.DefaultThresholds.
	Disk *disk.Thresholds
	// DiskProbe measures a filesystem; default disk.Probe. Tests replace it.
	DiskProbe func(path string) (disk.Usage, error)
	// Command runs a program and returns its output; default os/exec with a
	// timeout. Tests replace it.
	Command func(ctx context.Context, name string, args ...string) ([]byte, error)
	// Euid returns the effective user id; default os.Geteuid.
	Euid func() int
	// CPUCoreGuard is dbnode.cpuCoreGuard ("" means auto); CPUProbe checks
	// the CPU, default cpucore.Probe. Tests replace it.
	CPUCoreGuard string
	CPUProbe     func() cpucore.Result
}

func (o Options) root() string {
	if o.Root == "" {
		return "/"
	}
	return o.Root
}

func (o Options) path(p string) string { return filepath.Join(o.root(), p) }

func (o Options) euid() int {
	if o.Euid != nil {
		return o.Euid()
	}
	return os.Geteuid()
}

func (o Options) command(ctx context.Context, name string, args ...string) ([]byte, error) {
	if o.Command != nil {
		return o.Command(ctx, name, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// Run performs every check and returns them all; it never fails as a whole.
func Run(ctx context.Context, opts Options) Report {
	checks := []func() Check{
		func() Check { return checkSysctl(opts, sysctls[0]) },
		func() Check { return checkSysctl(opts, sysctls[1]) },
		func() Check { return checkSysctl(opts, sysctls[2]) },
		func() Check { return checkSysctl(opts, sysctls[3]) },
		func() Check { return checkContainerd(ctx, opts) },
		func() Check { return checkRunc(ctx, opts) },
		func() Check { return checkCgroups(opts) },
		func() Check { return checkMemory(opts) },
		func() Check { return checkDisk(opts) },
		func() Check { return checkPorts(opts) },
		func() Check { return checkRoot(opts) },
		func() Check { return checkCPUCore(opts) },
	}
	r := Report{Checks: make([]Check, 0, len(checks))}
	for i, f := range checks {
		r.Checks = append(r.Checks, safely(CheckNames[i], f))
	}
	return r
}

// safely turns a panicking check (a bug) into a failed check.
func safely(name string, f func() Check) (c Check) {
	defer func() {
		if p := recover(); p != nil {
			c = Check{Name: name, Status: Fail, Detail: "internal error in check: " + stringify(p)}
		}
	}()
	return f()
}

func stringify(p any) string {
	if err, ok := p.(error); ok {
		return err.Error()
	}
	if s, ok := p.(string); ok {
		return s
	}
	return "panic"
}
