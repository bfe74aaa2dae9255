package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a subprocess's output for the test to poll.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inode is the inode of path, 0 when there is none.
func inode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestE2ELogRotation: a single node whose component logs rotate at 64 KiB
// keeping 3 files. m3coordinator logs an error line for every JSON write
// with a bad timestamp, and the line holds that timestamp: the test sends
// numbered markers until the log has rotated several times under the real
// containerd shim (which holds the file open with O_APPEND), then checks
// that no file exceeds the cap by more than one burst, that only the live
// file, .1 and .2.gz exist, and that a `m3sup logs -f` started before the
// first rotation printed every marker exactly once.
func TestE2ELogRotation(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	const (
		maxSize = 64 << 10
		burst   = 8                   // requests between size checks
		pad     = 1000                // bytes of padding per marker: ~1.2 KiB of log each
		slack   = 2 * burst * 2 << 10 // what may be written between two checks, doubled
	)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest,
		extraConfig: fmt.Sprintf("componentLogs:\n  maxSize: %d\n  maxFiles: 3\n  compress: true\n", maxSize)})
	n.start()
	n.waitReady(4 * time.Minute)
	logDir := filepath.Join(n.dir, "components", "m3coordinator", "logs")
	logPath := filepath.Join(logDir, "m3coordinator.log")

	padding := strings.Repeat("x", pad)
	client := &http.Client{Timeout: 10 * time.Second}
	marker := func(i int) string { return fmt.Sprintf("m3sup-e2e-marker-%05d-", i) }
	send := func(i int) {
		t.Helper()
		body := fmt.Sprintf(`{"tags":{"__name__":"m3sup_e2e_rotation"},"timestamp":"%s%s","value":1}`, marker(i), padding)
		resp, err := client.Post(n.coordURL+"/api/v1/json/write", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("bad write %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	// `m3sup logs -f` from now on; marker 0 proves it is following.
	var followed lockedBuffer
	follow := m3sup("logs", "-f", "--tail", "0", "m3coordinator", "--socket", n.socket)
	follow.Stdout, follow.Stderr = &followed, &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan struct{})
	go func() { _ = follow.Wait(); close(followDone) }()
	t.Cleanup(func() {
		_ = follow.Process.Kill()
		<-followDone
	})
	seq := 0
	if !waitFor(30*time.Second, func() bool {
		send(seq)
		seq++
		time.Sleep(400 * time.Millisecond)
		return strings.Contains(followed.String(), marker(seq-1))
	}) {
		t.Fatalf("m3sup logs -f printed no marker within 30 s:\n%s", followed.String())
	}
	first := seq - 1 // every marker from here on must be followed

	// Rotate four times: bursts until the live file reaches the cap, then
	// wait for the rotator (every 5 s) to make a new .1.
	start := time.Now()
	var largest int64
	noteSizes := func() {
		entries, _ := os.ReadDir(logDir)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && fi.Size() > largest {
				largest = fi.Size()
			}
		}
	}
	for rotations := 0; rotations < 4; {
		before := inode(logPath + ".1")
		for range burst {
			send(seq)
			seq++
		}
		noteSizes()
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < maxSize {
			continue
		}
		if !waitFor(20*time.Second, func() bool { return inode(logPath+".1") != before }) {
			t.Fatalf("the coordinator's log is %d bytes and did not rotate within 20 s; m3sup log:\n%s", fi.Size(), n.log())
		}
		rotations++
		noteSizes()
	}
	t.Logf("4 rotations in %s, %d markers sent, largest file %d bytes", time.Since(start).Round(time.Millisecond), seq, largest)
	send(seq)
	last := seq
	seq++

	if largest > maxSize+slack {
		t.Fatalf("a log file reached %d bytes: more than the cap %d plus %d of slack", largest, maxSize, slack)
	}
	// The rotation the test saw (a new .1) may still be compressing .2.
	want := []string{"m3coordinator.log", "m3coordinator.log.1", "m3coordinator.log.2.gz"}
	var names []string
	if !waitFor(10*time.Second, func() bool {
		entries, err := os.ReadDir(logDir)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, e := range entries {
			names = append(names, e.Name())
			fi, _ := e.Info()
			if fi.Size() > maxSize+slack {
				t.Fatalf("%s is %d bytes: more than the cap %d plus %d of slack", e.Name(), fi.Size(), maxSize, slack)
			}
		}
		return slices.Equal(names, want)
	}) {
		t.Fatalf("log files %v, want %v", names, want)
	}
	// The shim's O_APPEND writes land at the start of the truncated file:
	// the live file holds lines from its first byte, no hole of zeros.
	live, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(live, 0) >= 0 {
		t.Fatalf("the live log holds NUL bytes: written past a hole after the truncate")
	}
	gz, err := os.Open(logPath + ".2.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatalf("m3coordinator.log.2.gz: %v", err)
	}
	old, err := io.ReadAll(zr)
	gz.Close()
	if err != nil || !strings.Contains(string(old), "m3sup-e2e-marker-") {
		t.Fatalf("m3coordinator.log.2.gz: %v, %d bytes without a marker", err, len(old))
	}

	// The follower kept printing across the rotations: every marker once.
	if !waitFor(30*time.Second, func() bool { return strings.Contains(followed.String(), marker(last)) }) {
		t.Fatalf("m3sup logs -f did not print the marker sent after the rotations; it printed %d bytes", len(followed.String()))
	}
	out := followed.String()
	var missing, doubled []int
	for i := first; i <= last; i++ {
		switch strings.Count(out, marker(i)) {
		case 0:
			missing = append(missing, i)
		case 1:
		default:
			doubled = append(doubled, i)
		}
	}
	if len(missing) > 0 || len(doubled) > 0 {
		t.Fatalf("m3sup logs -f across rotations: markers missing %v, printed twice %v (of %d..%d)", missing, doubled, first, last)
	}

	// `m3sup logs --tail` still shows the tail.
	tail, code := runCLI(t, n.socket, "logs", "--tail", "5", "m3coordinator")
	if code != 0 || !strings.Contains(tail, marker(last)) {
		t.Fatalf("m3sup logs --tail 5 (exit %d) lacks the last marker:\n%s", code, tail)
	}
	sc := bufio.NewScanner(strings.NewReader(tail))
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
	}
	if lines != 5 {
		t.Fatalf("m3sup logs --tail 5 printed %d lines", lines)
	}

	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM", code)
	}
}
