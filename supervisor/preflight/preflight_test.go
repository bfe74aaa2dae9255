package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/disk"
	"github.com/m3sup/m3sup/supervisor/m3/cpucore"
)

// fakeHost builds a /proc, /sys tree under a temp root.
type fakeHost struct {
	t    *testing.T
	root string
}

func newFakeHost(t *testing.T) fakeHost {
	return fakeHost{t: t, root: t.TempDir()}
}

func (h fakeHost) write(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h fakeHost) sysctls(maxMap, swappiness, nrOpen, fileMax string) {
	h.write("proc/sys/vm/max_map_count", maxMap+"\n")
	h.write("proc/sys/vm/swappiness", swappiness+"\n")
	h.write("proc/sys/fs/nr_open", nrOpen+"\n")
	h.write("proc/sys/fs/file-max", fileMax+"\n")
}

func (h fakeHost) read(rel string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, rel))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func find(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, r)
	return Check{}
}

// fakeCommand answers `NAME --version` from a table; absent names are not found.
func fakeCommand(outputs map[string]string) func(context.Context, string, ...string) ([]byte, error) {
	return func(_ context.Context, name string, args ...string) ([]byte, error) {
		out, ok := outputs[name]
		if !ok {
			return nil, &exec.Error{Name: name, Err: exec.ErrNotFound}
		}
		if out == "ERR" {
			return []byte("boom"), errors.New("exit status 1")
		}
		return []byte(out), nil
	}
}

func root0() int { return 0 }

func TestSysctlChecks(t *testing.T) {
	tests := []struct {
		name                 string
		maxMap, swap, nr, fm string
		want                 map[string]Status
	}{
		{"defaults of a fresh host", "65530", "60", "1048576", "9223372036854775807", map[string]Status{
			CheckMaxMapCount: Warn, CheckSwappiness: Warn, CheckNrOpen: Warn, CheckFileMax: OK}},
		{"tuned", "3000000", "1", "3000000", "3000000", map[string]Status{
			CheckMaxMapCount: OK, CheckSwappiness: OK, CheckNrOpen: OK, CheckFileMax: OK}},
		{"above and zero", "4000000", "0", "5000000", "2999999", map[string]Status{
			CheckMaxMapCount: OK, CheckSwappiness: OK, CheckNrOpen: OK, CheckFileMax: Warn}},
		{"just off", "2999999", "2", "2999999", "100", map[string]Status{
			CheckMaxMapCount: Warn, CheckSwappiness: Warn, CheckNrOpen: Warn, CheckFileMax: Warn}},
		{"garbage", "lots", "", "3000000", "3000000", map[string]Status{
			CheckMaxMapCount: Warn, CheckSwappiness: Warn, CheckNrOpen: OK, CheckFileMax: OK}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.sysctls(tt.maxMap, tt.swap, tt.nr, tt.fm)
			r := Run(context.Background(), Options{Root: h.root, Command: fakeCommand(nil), Euid: root0})
			for name, want := range tt.want {
				c := find(t, r, name)
				if c.Status != want {
					t.Errorf("%s = %s (%s), want %s", name, c.Status, c.Detail, want)
				}
				if want == Warn && c.Detail == "" {
					t.Errorf("%s: a warning without detail", name)
				}
			}
			if c := find(t, r, CheckMaxMapCount); c.Status == Warn && tt.maxMap == "65530" && c.Fix != "sysctl -w vm.max_map_count=3000000" {
				t.Errorf("fix %q", c.Fix)
			}
		})
	}
}

func TestSysctlMissingTree(t *testing.T) {
	r := Run(context.Background(), Options{Root: t.TempDir(), Command: fakeCommand(nil), Euid: root0})
	for _, name := range []string{CheckMaxMapCount, CheckSwappiness, CheckNrOpen, CheckFileMax, CheckMemory} {
		if c := find(t, r, name); c.Status != Warn || !strings.Contains(c.Detail, "cannot read") {
			t.Errorf("%s: %+v", name, c)
		}
	}
}

func TestBinaries(t *testing.T) {
	tests := []struct {
		name            string
		outputs         map[string]string
		containerd, rnc Status
		detail          string
	}{
		{"debian", map[string]string{
			"containerd": "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
			"runc":       "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n",
		}, OK, OK, "containerd 1.6.20"},
		{"upstream v2", map[string]string{
			"containerd": "containerd containerd.io v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376\n",
			"runc":       "runc version 1.3.0\n",
		}, OK, OK, "containerd 2.1.4"},
		{"old containerd", map[string]string{
			"containerd": "containerd github.com/containerd/containerd 1.4.13~ds1 1.4.13~ds1-1~deb11u4\n",
			"runc":       "runc version 1.0.0~rc93+ds1\n",
		}, Warn, OK, "tested with 1.6"},
		{"missing", map[string]string{}, Fail, Fail, "not found"},
		{"broken", map[string]string{"containerd": "ERR", "runc": "no version here"}, Fail, Warn, "exit status 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Run(context.Background(), Options{Root: t.TempDir(), Command: fakeCommand(tt.outputs), Euid: root0})
			c, rc := find(t, r, CheckContainerd), find(t, r, CheckRunc)
			if c.Status != tt.containerd || rc.Status != tt.rnc {
				t.Errorf("containerd %+v, runc %+v", c, rc)
			}
			if !strings.Contains(c.Detail, tt.detail) {
				t.Errorf("containerd detail %q lacks %q", c.Detail, tt.detail)
			}
			if c.Status == Fail && c.Fix != installRuntime {
				t.Errorf("fix %q", c.Fix)
			}
		})
	}
}

func TestCgroups(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		dirs   []string
		want   Status
		detail string
	}{
		{"v2", map[string]string{"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"}, nil, OK, "v2"},
		{"v2 without memory", map[string]string{"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io pids\n"}, nil, Warn, "memory"},
		{"v1", nil, []string{"sys/fs/cgroup/memory", "sys/fs/cgroup/cpu", "sys/fs/cgroup/pids"}, OK, "v1"},
		{"v1 without memory", nil, []string{"sys/fs/cgroup/cpu"}, Fail, "memory"},
		{"none", nil, nil, Fail, "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			for f, content := range tt.files {
				h.write(f, content)
			}
			for _, d := range tt.dirs {
				if err := os.MkdirAll(filepath.Join(h.root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			c := checkCgroups(Options{Root: h.root})
			if c.Status != tt.want || !strings.Contains(c.Detail, tt.detail) {
				t.Errorf("%+v, want %s with %q", c, tt.want, tt.detail)
			}
		})
	}
}

func TestMemory(t *testing.T) {
	tests := []struct {
		meminfo string
		want    Status
	}{
		{"MemTotal:       16318256 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n", OK},
		{"MemTotal:        2000000 kB\nMemAvailable:    1048576 kB\n", Warn},
		{"MemTotal:        2000000 kB\n", Warn},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			h := newFakeHost(t)
			h.write("proc/meminfo", tt.meminfo)
			if c := checkMemory(Options{Root: h.root}); c.Status != tt.want {
				t.Errorf("%+v, want %s", c, tt.want)
			}
		})
	}
}

func TestDisk(t *testing.T) {
	dir := t.TempDir()
	notYet := filepath.Join(dir, "not", "yet")
	plenty := func(string) (disk.Usage, error) {
		return disk.Usage{SizeBytes: 100 << 30, FreeBytes: 50 << 30, Inodes: 100, FreeInodes: 90}, nil
	}
	var probed string
	if c := checkDisk(Options{DataDir: notYet, DiskProbe: func(p string) (disk.Usage, error) { probed = p; return plenty(p) }}); c.Status != OK || !strings.Contains(c.Detail, "(on "+dir+")") || probed != dir {
		t.Errorf("missing data dir: %+v (probed %q)", c, probed)
	}
	if c := checkDisk(Options{DataDir: dir}); c.Status == Warn && strings.HasPrefix(c.Detail, "statfs") {
		t.Errorf("real probe: %+v", c)
	}
	for _, tc := range []struct {
		name string
		free uint64
		th   *disk.Thresholds
		want Status
	}{
		{"plenty", 50 << 30, nil, OK},
		{"low by default thresholds", 5 << 30, nil, Warn},
		{"nearly full", 1 << 30, nil, Fail},
		{"own thresholds", 30 << 30, &disk.Thresholds{WarnFreePercent: 40, FailFreePercent: 35}, Fail},
		{"thresholds off", 0, &disk.Thresholds{}, OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkDisk(Options{DataDir: dir, Disk: tc.th, DiskProbe: func(string) (disk.Usage, error) {
				return disk.Usage{SizeBytes: 100 << 30, FreeBytes: tc.free}, nil
			}})
			if c.Status != tc.want || (tc.want != OK && c.Fix == "") {
				t.Errorf("%+v, want %s with a fix", c, tc.want)
			}
		})
	}
	c := checkDisk(Options{DataDir: dir, DiskProbe: func(string) (disk.Usage, error) { return disk.Usage{}, errors.New("statfs: EIO") }})
	if c.Status != Warn || c.Detail != "statfs: EIO" {
		t.Errorf("probe error: %+v", c)
	}
}

func TestPorts(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	if c := checkPorts(Options{Ports: []string{freeAddr}}); c.Status != OK {
		t.Errorf("free port: %+v", c)
	}
	c := checkPorts(Options{Ports: []string{freeAddr, held.Addr().String()}})
	if c.Status != Fail || !strings.Contains(c.Detail, "in use: "+held.Addr().String()) || strings.Contains(c.Detail, freeAddr) {
		t.Errorf("held port: %+v", c)
	}
	if c := checkPorts(Options{Ports: []string{"nonsense"}}); c.Status != Fail || !strings.Contains(c.Detail, "cannot bind") {
		t.Errorf("bad address: %+v", c)
	}
	if c := checkPorts(Options{}); c.Status != OK {
		t.Errorf("no ports: %+v", c)
	}
}

func TestRoot(t *testing.T) {
	if c := checkRoot(Options{Euid: func() int { return 1000 }}); c.Status != Fail || !strings.Contains(c.Detail, "uid 1000") {
		t.Errorf("%+v", c)
	}
	if c := checkRoot(Options{Euid: root0}); c.Status != OK {
		t.Errorf("%+v", c)
	}
}

func TestReportFailed(t *testing.T) {
	r := Report{Checks: []Check{{Name: "a", Status: OK}, {Name: "b", Status: Warn}}}
	if r.Failed() || len(r.NotOK()) != 1 {
		t.Errorf("warnings only: failed=%v notOK=%v", r.Failed(), r.NotOK())
	}
	r.Checks = append(r.Checks, Check{Name: "c", Status: Fail})
	if !r.Failed() || len(r.NotOK()) != 2 {
		t.Errorf("with a failure: failed=%v notOK=%v", r.Failed(), r.NotOK())
	}
}

func TestFix(t *testing.T) {
	h := newFakeHost(t)
	h.sysctls("65530", "60", "1048576", "9223372036854775807")
	done, err := Fix(Options{Root: h.root, Euid: root0})
	if err != nil {
		t.Fatal(err)
	}
	now := map[string]string{
		"proc/sys/vm/max_map_count": "3000000\n",
		"proc/sys/vm/swappiness":    "1\n",
		"proc/sys/fs/nr_open":       "3000000\n",
		"proc/sys/fs/file-max":      "9223372036854775807\n", // never lowered
	}
	for f, want := range now {
		if got := h.read(f); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	conf := h.read(SysctlConf)
	for _, line := range []string{
		"vm.max_map_count = 3000000\n",
		"vm.swappiness = 1\n",
		"fs.nr_open = 3000000\n",
		"fs.file-max = 9223372036854775807\n",
	} {
		if !strings.Contains(conf, line) {
			t.Errorf("%s lacks %q:\n%s", SysctlConf, line, conf)
		}
	}
	if len(done) != 4 || done[0] != "vm.max_map_count: 65530 -> 3000000" {
		t.Errorf("done = %q", done)
	}
	// Now every sysctl check passes, and a second Fix changes nothing.
	r := Run(context.Background(), Options{Root: h.root, Command: fakeCommand(nil), Euid: root0})
	for _, name := range []string{CheckMaxMapCount, CheckSwappiness, CheckNrOpen, CheckFileMax} {
		if c := find(t, r, name); c.Status != OK {
			t.Errorf("after Fix: %+v", c)
		}
	}
	if done, err := Fix(Options{Root: h.root, Euid: root0}); err != nil || len(done) != 1 {
		t.Errorf("second Fix: %q, %v", done, err)
	}
}

func TestFixPartialAndNotRoot(t *testing.T) {
	if _, err := Fix(Options{Root: t.TempDir(), Euid: func() int { return 1000 }}); !errors.Is(err, ErrNotRoot) {
		t.Errorf("non-root: %v", err)
	}
	h := newFakeHost(t)
	h.write("proc/sys/vm/max_map_count", "65530\n") // the others are missing
	done, err := Fix(Options{Root: h.root, Euid: root0})
	if err == nil || !strings.Contains(err.Error(), "read vm.swappiness") {
		t.Errorf("err = %v", err)
	}
	if h.read("proc/sys/vm/max_map_count") != "3000000\n" || !strings.Contains(h.read(SysctlConf), "fs.nr_open = 3000000") {
		t.Errorf("the readable setting was not fixed or the file is incomplete; done=%q", done)
	}
}

// The real host: every check runs and reports, whatever the host is like.
func TestRunRealHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := Run(context.Background(), Options{DataDir: t.TempDir(), Ports: []string{ln.Addr().String()}})
	if len(r.Checks) != len(CheckNames) {
		t.Fatalf("%d checks, want %d", len(r.Checks), len(CheckNames))
	}
	for i, c := range r.Checks {
		if c.Name != CheckNames[i] {
			t.Errorf("check %d is %q, want %q", i, c.Name, CheckNames[i])
		}
		switch c.Status {
		case OK, Warn, Fail:
		default:
			t.Errorf("%s: status %q", c.Name, c.Status)
		}
		if c.Detail == "" {
			t.Errorf("%s: no detail", c.Name)
		}
		t.Logf("%-16s %-4s %s  %s", c.Name, c.Status, c.Detail, c.Fix)
	}
	if c := find(t, r, CheckPorts); c.Status != Fail {
		t.Errorf("held port not reported: %+v", c)
	}
}

func TestVersions(t *testing.T) {
	tests := []struct {
		a, b string
		less bool
	}{
		{"1.6.20", "1.6", false}, {"1.5.9", "1.6", true}, {"2.0", "1.6", false}, {"1.6", "1.6.0", false}, {"1.10.1", "1.9", false},
	}
	for _, tt := range tests {
		if got := versionLess(tt.a, tt.b); got != tt.less {
			t.Errorf("versionLess(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}

func TestCPUCoreCheck(t *testing.T) {
	lying := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{249, 217}}
	honest := cpucore.Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 1}}
	none := cpucore.Result{Applicable: true}
	for _, tc := range []struct {
		name   string
		mode   string
		probe  cpucore.Result
		status Status
		detail string
	}{
		{"honest CPU", "", honest, OK, "every CPU's own id"},
		{"honest CPU, guard forced on", "on", honest, OK, "guard on by config"},
		{"lying RDTSCP, auto", "auto", lying, Warn, "guarded: m3dbnode sees one processor (RDTSCP reports core 249 on CPU 0"},
		{"no RDTSCP, auto", "", none, Warn, "CPUID does not advertise RDTSCP"},
		{"lying RDTSCP, guard off", "off", lying, Fail, "crashes on its first write"},
		{"bad mode", "maybe", honest, Fail, `"maybe": must be auto, on or off`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkCPUCore(Options{CPUCoreGuard: tc.mode, CPUProbe: func() cpucore.Result { return tc.probe }})
			if c.Name != CheckCPUCore || c.Status != tc.status || !strings.Contains(c.Detail, tc.detail) {
				t.Errorf("check = %+v; want %s with %q", c, tc.status, tc.detail)
			}
		})
	}
}
