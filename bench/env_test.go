package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/internal/e2etest"
	"github.com/m3sup/m3sup/supervisor/api"
)

// poll is the interval of every "is it there yet" loop of the benchmarks:
// m3sup's /readyz and each step of the baseline script.
const poll = 50 * time.Millisecond

// Shared cluster shape: m3sup's defaults.
const (
	numShards = 64
	nodeName  = "bench-node"
)

// fixture is the setup every benchmark shares, made once per test binary
// and removed by TestMain.
type fixture struct {
	once sync.Once
	err  error

	root       string // temp dir holding everything below
	moduleDir  string // the m3sup module root
	m3sup      string // stripped m3sup binary
	etcd       string // plain etcd binary (etcdmain)
	tarball    string
	digest     string // hex sha256 of the tarball
	cacheTmpl  string // a warm m3sup artifact cache: copied to <dataDir>/cache
	releaseDir string // the tarball extracted, for the baseline
}

var fx fixture

func TestMain(m *testing.M) {
	code := m.Run()
	if fx.root != "" && os.Getenv("M3SUP_BENCH_KEEP") == "" {
		os.RemoveAll(fx.root)
	}
	os.Exit(code)
}

// needE2E skips b unless it can run m3sup and M3 for real.
func needE2E(b *testing.B) {
	b.Helper()
	if missing := e2etest.Missing("the M3 release tarball; `make bench` sets it"); len(missing) > 0 {
		b.Skipf("needs %s", strings.Join(missing, ", "))
	}
}

// setup returns the shared fixture, building it on first use (untimed:
// callers reset the timer).
func setup(b *testing.B) *fixture {
	b.Helper()
	fx.once.Do(func() { fx.err = fx.build() })
	if fx.err != nil {
		b.Fatalf("benchmark setup: %v", fx.err)
	}
	return &fx
}

func (f *fixture) build() error {
	var err error
	if f.root, err = os.MkdirTemp("", "m3sup-bench-"); err != nil {
		return err
	}
	if f.moduleDir, err = e2etest.ModuleDir(); err != nil {
		return err
	}
	if f.tarball, f.digest, err = e2etest.Release(); err != nil {
		return err
	}
	bin := filepath.Join(f.root, "bin")
	f.m3sup = filepath.Join(bin, "m3sup")
	if err := e2etest.Build(f.moduleDir, f.m3sup, "./cmd/m3sup", e2etest.BuildOptions{Stripped: true}); err != nil {
		return err
	}
	// etcd's own main lives in its own module (testdata/etcd) so that its
	// command-line dependencies stay out of m3sup's go.mod.
	f.etcd = filepath.Join(bin, "etcd")
	if err := e2etest.Build(filepath.Join(f.moduleDir, "bench", "testdata", "etcd"), f.etcd, ".", e2etest.BuildOptions{Stripped: true}); err != nil {
		return err
	}

	// The warm cache, made with the same bundle calls m3sup makes.
	f.cacheTmpl = filepath.Join(f.root, "cache-template")
	cache, err := bundle.OpenCache(f.cacheTmpl, bundle.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	res, err := cache.Fetch(ctx, bundle.Source{URL: f.releaseURL(), Checksum: "sha256:" + f.digest})
	if err != nil {
		return err
	}
	if _, err := cache.Unpack(ctx, res.Digest); err != nil {
		return err
	}

	// The baseline runs the binaries from a plain extraction.
	f.releaseDir = filepath.Join(f.root, "release")
	if err := os.MkdirAll(f.releaseDir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("tar", "-xzf", f.tarball, "-C", f.releaseDir).CombinedOutput(); err != nil {
		return fmt.Errorf("extract release: %v: %s", err, out)
	}

	// Let every child inherit the hard RLIMIT_NOFILE as its soft limit, as
	// m3sup gives its containers (Go otherwise restores the original soft
	// limit in children).
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return nil
}

func (f *fixture) releaseURL() string { return "file://" + f.tarball }

// releaseBinary finds name in the extracted release (top level or one
// directory down, like goreleaser's wrapper directory).
func (f *fixture) releaseBinary(name string) (string, error) {
	cands := []string{filepath.Join(f.releaseDir, name)}
	more, _ := filepath.Glob(filepath.Join(f.releaseDir, "*", name))
	for _, c := range append(cands, more...) {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no %s in %s", name, f.releaseDir)
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(b *testing.B, n int) []int {
	b.Helper()
	return e2etest.FreePorts(b, "127.0.0.1", n)
}

func hostPort(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }

// proc is a child process with its exit observed.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// startProc starts bin with args, output appended to logFile.
func startProc(name, logFile, bin string, args ...string) (*proc, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. It reports
// whether the process exited on SIGTERM.
func (p *proc) stop(grace time.Duration) bool {
	if p == nil || p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// tail is the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pidAlive reports whether pid runs a command line containing name.
func pidAlive(pid int, name string) bool { return e2etest.ProcessAlive(pid, name) }

// rssKB reads a VmRSS-like field (kB) of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			break
		}
		return strconv.ParseInt(fs[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// m3supNode is one `m3sup run` on a fresh data dir with a warm cache.
type m3supNode struct {
	dir, dataDir, socket, config, logFile string
	coordURL                              string
	proc                                  *proc
	started                               time.Time
	pids                                  map[string]int // components and managed containerd, for cleanup
}

// newM3supNode prepares a data dir (warm cache copied in, untimed) and a
// config on free loopback ports.
func newM3supNode(b *testing.B, f *fixture) *m3supNode {
	b.Helper()
	return newM3supNodeGuard(b, f, "auto")
}

// newM3supNodeGuard is newM3supNode with dbnode.cpuCoreGuard set to guard.
func newM3supNodeGuard(b *testing.B, f *fixture, guard string) *m3supNode {
	b.Helper()
	dir, err := os.MkdirTemp(f.root, "m3sup-")
	if err != nil {
		b.Fatal(err)
	}
	n := &m3supNode{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		socket:  filepath.Join(dir, "run", "m3sup.sock"),
		config:  filepath.Join(dir, "m3sup.yaml"),
		logFile: filepath.Join(dir, "m3sup.log"),
		pids:    map[string]int{},
	}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", f.cacheTmpl, filepath.Join(n.dataDir, "cache")).CombinedOutput(); err != nil {
		b.Fatalf("copy warm cache: %v: %s", err, out)
	}
	p := freePorts(b, 9)
	n.coordURL = "http://" + hostPort(p[7])
	cfg := fmt.Sprintf(`dataDir: %s
nodeName: %s
log: {level: info, format: json}
api:
  socket: %s
etcd:
  clientURL: http://%s
  peerURL: http://%s
runtime:
  containerd:
    mode: managed
    namespace: m3sup-bench
release:
  version: "1.5.0"
  url: %s
  checksum: sha256:%s
dbnode:
  listenAddress: %s
  clusterListenAddress: %s
  httpNodeListenAddress: %s
  httpClusterListenAddress: %s
  debugListenAddress: %s
  stopTimeout: 30s
  cpuCoreGuard: "%s"
coordinator:
  listenAddress: %s
  metricsListenAddress: %s
cluster:
  numShards: %d
  replicationFactor: 1
  readyTimeout: 4m
  namespaces:
    - {name: default, retention: 48h, blockSize: 2h}
`, n.dataDir, nodeName, n.socket, hostPort(p[0]), hostPort(p[1]), f.releaseURL(), f.digest,
		hostPort(p[2]), hostPort(p[3]), hostPort(p[4]), hostPort(p[5]), hostPort(p[6]), guard,
		hostPort(p[7]), hostPort(p[8]), numShards)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	return n
}

// start runs `m3sup run --config`; the clock starts just before the exec.
func (n *m3supNode) start(b *testing.B, f *fixture) {
	b.Helper()
	n.started = time.Now()
	p, err := startProc("m3sup", n.logFile, f.m3sup, "run", "--config", n.config)
	if err != nil {
		b.Fatal(err)
	}
	n.proc = p
}

// waitReady polls /readyz every poll until the first 200 and returns the
// time since start.
func (n *m3supNode) waitReady(b *testing.B, timeout time.Duration) time.Duration {
	b.Helper()
	c := api.NewClient(n.socket)
	deadline := n.started.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Ready(ctx)
		cancel()
		if err == nil {
			return time.Since(n.started)
		}
		if n.proc.exited() {
			b.Fatalf("m3sup exited before ready (%v); log tail:\n%s", n.proc.err, n.proc.tail(30))
		}
		if time.Now().After(deadline) {
			b.Fatalf("m3sup not ready after %s (%v); log tail:\n%s", timeout, err, n.proc.tail(30))
		}
		time.Sleep(poll)
	}
}

// recordPIDs remembers the component and containerd pids for cleanup.
func (n *m3supNode) recordPIDs() (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := api.NewClient(n.socket).Status(ctx)
	if err != nil {
		return st, err
	}
	for _, c := range st.Components {
		if c.PID > 0 {
			n.pids[c.Name] = int(c.PID)
		}
	}
	if st.Containerd.PID > 0 {
		n.pids["containerd"] = int(st.Containerd.PID)
	}
	return st, nil
}

// stop ends m3sup with SIGTERM (it stops its containers and containerd) and
// kills whatever it left behind. Untimed.
func (n *m3supNode) stop(b *testing.B) {
	b.Helper()
	if n.proc == nil {
		return
	}
	if !n.proc.stop(90 * time.Second) {
		b.Errorf("m3sup did not exit within 90s of SIGTERM; killed")
	}
	for name, pid := range n.pids {
		if pidAlive(pid, name) {
			b.Errorf("%s (pid %d) still runs after m3sup exited; killing it", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if code := n.proc.cmd.ProcessState.ExitCode(); code != 0 && !b.Failed() {
		b.Errorf("m3sup exited with %d after SIGTERM; log tail:\n%s", code, n.proc.tail(20))
	}
	keepLog(b, n.logFile)
	for _, c := range []string{"m3dbnode", "m3coordinator"} {
		keepLog(b, filepath.Join(n.dataDir, "components", c, "logs", c+".log"))
	}
	if os.Getenv("M3SUP_BENCH_KEEP") == "" {
		_ = os.RemoveAll(n.dir)
	}
}

// keepLog copies a log to $M3SUP_BENCH_LOGS, when set, for later reading.
func keepLog(b *testing.B, path string) {
	dir := os.Getenv("M3SUP_BENCH_LOGS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Logf("keep log: %v", err)
		return
	}
	name := fmt.Sprintf("%s-%s-%s", strings.ReplaceAll(b.Name(), "/", "_"),
		time.Now().Format("150405.000"), filepath.Base(path))
	src, err := os.Open(path)
	if err != nil {
		return
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return
	}
	defer dst.Close()
	_, _ = io.Copy(dst, src)
}

// logEvent is one line of m3sup's JSON log.
type logEvent struct {
	at  time.Time
	msg string
}

func readM3supLog(path string) ([]logEvent, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []logEvent
	for line := range strings.SplitSeq(string(data), "\n") {
		var l struct {
			TS  string `json:"ts"`
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil {
			continue
		}
		out = append(out, logEvent{at: at, msg: l.Msg})
	}
	if len(out) == 0 {
		return nil, errors.New("no JSON log lines")
	}
	return out, nil
}

// milestone is the offset from start of the first log line starting with
// one of prefixes, or -1.
func milestone(evs []logEvent, start time.Time, prefixes ...string) time.Duration {
	for _, e := range evs {
		for _, p := range prefixes {
			if strings.HasPrefix(e.msg, p) {
				return e.at.Sub(start)
			}
		}
	}
	return -1
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
