package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// diskSize is the tmpfs the disk test's data dir lives on. A single node's
// data dir holds the M3 release (tarball and unpacked binaries, ~250 MiB),
// managed containerd's state, etcd and a little M3 data.
const diskSize = 1200 << 20

// TestE2EDiskFull runs a single node whose data dir is a small tmpfs, and a
// real Prometheus scraping m3sup's TCP /metrics:
//  1. Prometheus's query API shows m3sup_data_dir_free_bytes;
//  2. a filler file takes free space below the warning threshold: status
//     (text and JSON) shows DISK LOW, /metrics the low free bytes, the log
//     says so once;
//  3. the filesystem fills completely: m3dbnode's snapshot fails and it
//     exits (m3sup restarts it with backoff); m3sup keeps answering until
//     etcd's own commit fails, which is fatal to etcd and so to m3sup
//     (exit 1; systemd would restart it — the test does);
//  4. the filler goes: m3sup starts again cleanly on the same etcd
//     (placement unchanged, the point written before is still there), M3
//     is ready again, a write + read through the coordinator works, and
//     no half-written state file was left.
func TestE2EDiskFull(t *testing.T) {
	env := needE2E(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found (scripts/prereqs.sh installs the Debian package): ", err)
	}
	mnt := mountTmpfs(t, diskSize)
	dataDir := filepath.Join(mnt, "data")
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest, dataDir: dataDir,
		extraConfig: fmt.Sprintf(`metrics:
  listen: %s
disk:
  warnFreePercent: 10
  warnFreeBytes: 0
  failFreePercent: 2
  failFreeBytes: 0
`, metricsAddr)})

	n.start()
	n.waitReady(4 * time.Minute)
	t.Logf("data dir after the first start: %s used of %s", mib(usedBytes(t, mnt)), mib(diskSize))
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, n.coordURL, "m3sup_e2e_disk_before", ts, 1)
	placementRev := n.placementRevision()

	// 1. Prometheus scrapes the TCP listener, which serves /metrics only.
	prom := startPrometheus(t, promBin, metricsAddr)
	if v, err := prom.waitValue("m3sup_data_dir_free_bytes", time.Minute); err != nil || v <= 0 {
		t.Fatalf("Prometheus: m3sup_data_dir_free_bytes = %v, %v", v, err)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/v1/status"); code != http.StatusNotFound {
		t.Fatalf("GET /v1/status on the metrics listener: %d, want 404", code)
	}
	st := statusCLI(t, n.socket)
	if st.Disk == nil || st.Disk.Level != "ok" || st.Disk.SizeBytes != diskSize || st.Disk.Inodes == 0 {
		t.Fatalf("disk status at the start: %+v", st.Disk)
	}

	// 2. Low: free space at ~5 % of the filesystem (warn below 10 %, fail below 2 %).
	filler := filepath.Join(mnt, "filler")
	allocate(t, filler, freeBytes(t, mnt)-diskSize/20)
	d := waitDisk(t, n, "low", 30*time.Second)
	if !strings.Contains(d.Message, "threshold 10%") {
		t.Fatalf("low disk message %q", d.Message)
	}
	text := statusText(t, n.socket)
	if !regexp.MustCompile(`(?m)^DISK\s+LOW\s+.*WARNING: low: `).MatchString(text) {
		t.Fatalf("status text has no DISK LOW line:\n%s", text)
	}
	free := scrape(t, metricsAddr, "m3sup_data_dir_free_bytes")
	if free <= 0 || free >= diskSize/10 {
		t.Fatalf("m3sup_data_dir_free_bytes = %v, want below 10%% of %d", free, diskSize)
	}
	if v := scrape(t, metricsAddr, `m3sup_data_dir_space_level{level="low"}`); v != 1 {
		t.Fatalf(`m3sup_data_dir_space_level{level="low"} = %v`, v)
	}
	if v, err := prom.waitBelow("m3sup_data_dir_free_bytes", diskSize/10, 30*time.Second); err != nil {
		t.Fatalf("Prometheus never saw the low free space (last %v): %v", v, err)
	}
	time.Sleep(11 * time.Second) // two more samples: still one warning
	if c := strings.Count(n.log(), "data dir filesystem is low"); c != 1 {
		t.Fatalf("logged the low disk %d times, want once per transition; log:\n%s", c, n.log())
	}

	// 3. Full: no free byte left. M3's writes fail; m3sup must not lose
	// etcd or its state files.
	filler2 := filepath.Join(mnt, "filler2")
	fillUp(t, filler2)
	waitDisk(t, n, "full", 30*time.Second)
	c := &m3.Client{BaseURL: n.coordURL}
	var exited bool
	var writeErrs int
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.WriteJSON(ctx, "m3sup_e2e_disk_full", nil, time.Now(), 1); err != nil {
			writeErrs++
		}
		cancel()
		select {
		case <-n.done:
			exited = true
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := api.NewClient(n.socket).Status(ctx); err != nil {
				t.Errorf("status does not answer on a full disk: %v", err)
			}
			cancel()
		}
		if exited {
			break
		}
		fillUp(t, filler2) // M3 or etcd may have freed a little
		time.Sleep(time.Second)
	}
	t.Logf("on the full disk: m3sup exited=%v, failed writes=%d", exited, writeErrs)
	if exited {
		// Only etcd's own failure to commit may take m3sup down.
		lines := strings.Split(strings.TrimSpace(n.log()), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, "FATAL") || !strings.Contains(last, "no space left on device") {
			t.Fatalf("m3sup exited on the full disk (%v) for another reason than etcd's failed write: %s", n.exitErr, last)
		}
		t.Logf("m3sup exited on the full disk (%v): %s; it must start again cleanly once space is back", n.exitErr, last)
	} else {
		st := statusCLI(t, n.socket)
		if st.Etcd.State != "running" || st.Etcd.Members != 1 {
			t.Fatalf("etcd on a full disk: %+v", st.Etcd)
		}
		t.Logf("components on the full disk: %s", componentStates(st))
	}

	// 4. Space is back: M3 recovers on the same etcd.
	for _, f := range []string{filler, filler2} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if exited {
		n.start()
	}
	waitDisk(t, n, "ok", 30*time.Second)
	n.waitReady(5 * time.Minute)
	// The coordinator, adopted across an m3sup restart, may need a moment
	// to reconnect to the restarted m3dbnode ("connection pool has no
	// connections"): retry the write, then read it back.
	ts2 := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	var werr error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		werr = c.WriteJSON(ctx, "m3sup_e2e_disk_after", map[string]string{"host": "e2e"}, ts2, 2)
		cancel()
		if werr == nil {
			break
		}
	}
	if werr != nil {
		t.Fatalf("write after the disk recovered: %v", werr)
	}
	readBack(t, n.coordURL, "m3sup_e2e_disk_after", ts2, 2)
	readBack(t, n.coordURL, "m3sup_e2e_disk_before", ts, 1)
	if rev := n.placementRevision(); rev != placementRev {
		t.Fatalf("placement changed across the full disk: revision %d → %d", placementRev, rev)
	}
	// The running m3sup logs the all-clear; a restarted one starts on a
	// healthy disk, which is no news.
	if !exited && !strings.Contains(n.log(), "data dir filesystem has enough free space again") {
		t.Fatalf("no all-clear in the log:\n%s", n.log())
	}
	noHalfWrittenFiles(t, dataDir)
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM", code)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new temp dir; the unmount
// is a cleanup registered before the node's, so it runs after everything
// on it stopped.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "m3sup-e2e-disk-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		os.Remove(dir)
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v (lazy unmount follows)", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
		os.Remove(dir)
	})
	return dir
}

func statfs(t *testing.T, path string) unix.Statfs_t {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func freeBytes(t *testing.T, path string) int64 {
	st := statfs(t, path)
	return int64(st.Bavail) * st.Bsize
}

func usedBytes(t *testing.T, path string) int64 {
	st := statfs(t, path)
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// allocate creates path with size bytes really allocated.
func allocate(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		t.Fatalf("fallocate %s to %d bytes: %v", path, size, err)
	}
}

// fillUp appends to path until the filesystem refuses another byte.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for len(buf) > 0 {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			buf = buf[:len(buf)/2]
		}
	}
}

// waitDisk polls status until the data dir's level is want.
func waitDisk(t *testing.T, n *node, want string, timeout time.Duration) api.DiskStatus {
	t.Helper()
	c := api.NewClient(n.socket)
	var last *api.DiskStatus
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.Disk != nil {
			last = st.Disk
			if st.Disk.Level == want {
				return *st.Disk
			}
		}
	}
	t.Fatalf("disk never %s within %s; last %+v", want, timeout, last)
	return api.DiskStatus{}
}

func statusText(t *testing.T, socket string) string {
	t.Helper()
	out, err := m3sup("status", "--socket", socket).CombinedOutput()
	if err != nil {
		t.Fatalf("m3sup status: %v\n%s", err, out)
	}
	return string(out)
}

func componentStates(st api.Status) string {
	var s []string
	for _, c := range st.Components {
		s = append(s, fmt.Sprintf("%s=%s(restarts %d)", c.Name, c.State, c.Restarts))
	}
	return strings.Join(s, " ")
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads one series' value from m3sup's TCP /metrics.
func scrape(t *testing.T, addr, series string) float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// noHalfWrittenFiles fails on a temporary file internal/atomicfile left in
// m3sup's own state (etcd, PKI, component configs, cluster files).
func noHalfWrittenFiles(t *testing.T, dataDir string) {
	t.Helper()
	tmp := regexp.MustCompile(`^\..+\.tmp-[0-9]+$`)
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "containerd" || d.Name() == "cache") && filepath.Dir(p) == dataDir {
			return fs.SkipDir // not m3sup's state files
		}
		if !d.IsDir() && tmp.MatchString(d.Name()) {
			t.Errorf("half-written state file left behind: %s", p)
		}
		if !d.IsDir() && strings.HasSuffix(p, ".yml") {
			if fi, err := d.Info(); err == nil && fi.Size() == 0 {
				t.Errorf("empty config file: %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// prometheus is a real Prometheus scraping one target every second.
type promServer struct {
	url string
}

func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: m3sup
    static_configs:
      - targets: ['%s']
`, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	return &promServer{url: "http://" + addr}
}

// query returns the value of an instant query with one result.
func (p *promServer) query(q string) (float64, error) {
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" || len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("query %s: status %s, %d results", q, r.Status, len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func (p *promServer) waitValue(q string, timeout time.Duration) (float64, error) {
	return p.waitFor(q, timeout, func(float64) bool { return true })
}

func (p *promServer) waitBelow(q string, limit float64, timeout time.Duration) (float64, error) {
	return p.waitFor(q, timeout, func(v float64) bool { return v < limit })
}

func (p *promServer) waitFor(q string, timeout time.Duration, ok func(float64) bool) (float64, error) {
	var v float64
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		v, err = p.query(q)
		if err == nil && ok(v) {
			return v, nil
		}
	}
	if err == nil {
		err = errors.New("condition not met")
	}
	return v, err
}
