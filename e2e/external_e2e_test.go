package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
)

// hostContainerd is a containerd the test runs as "the host's": m3sup
// only connects to it (external mode) and must ride out its outages.
type hostContainerd struct {
	t      *testing.T
	dir    string
	socket string
	cmd    *exec.Cmd
	done   chan struct{}
}

func startHostContainerd(t *testing.T, dir string) *hostContainerd {
	t.Helper()
	h := &hostContainerd{t: t, dir: dir, socket: filepath.Join(dir, "containerd.sock")}
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), h.socket)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	t.Cleanup(h.kill)
	return h
}

func (h *hostContainerd) start() {
	h.t.Helper()
	logf, err := os.OpenFile(filepath.Join(h.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	h.cmd = exec.Command("containerd", "--config", filepath.Join(h.dir, "config.toml"))
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.done = make(chan struct{})
	go func() { _ = h.cmd.Wait(); logf.Close(); close(h.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(h.socket); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("host containerd did not create %s", h.socket)
}

func (h *hostContainerd) kill() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	select {
	case <-h.done:
	default:
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		<-h.done
	}
}

// TestE2EExternalContainerd: m3sup on a host containerd it does not own.
// When that containerd goes away, M3 keeps serving, m3sup reports the
// outage and reconnects when it is back, and it still watches its processes.
func TestE2EExternalContainerd(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest, numShards: 8})
	ctdDir, err := os.MkdirTemp("", "hostctd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ctdDir) })
	host := startHostContainerd(t, ctdDir)

	n.start("--containerd-address", host.socket)
	n.waitReady(4 * time.Minute)
	f := &faults{n: n, api: api.NewClient(n.socket)}
	st := f.status(t)
	if st.Containerd.Mode != "external" || !st.Containerd.Connected || st.Containerd.Address != host.socket {
		t.Fatalf("containerd: %+v, want external on %s", st.Containerd, host.socket)
	}
	db, co := compOf(st, "m3dbnode"), compOf(st, "m3coordinator")

	// The host containerd dies: M3 keeps answering, status says so.
	host.kill()
	f.pollUntil(t, 20*time.Second, 100*time.Millisecond, "status reports containerd disconnected", func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		return !st.Containerd.Connected, fmt.Sprintf("%+v", st.Containerd)
	})
	if resp, err := http.Get(n.coordURL + "/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("coordinator stopped answering while containerd was down: %v", err)
	} else {
		resp.Body.Close()
	}

	// It comes back: m3sup reconnects; the same processes run.
	host.start()
	f.pollUntil(t, 30*time.Second, 100*time.Millisecond, "status reports containerd connected again", func() (bool, string) {
		st, err := f.tryStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Containerd.Connected, fmt.Sprintf("%+v", st.Containerd)
	})
	f.unchanged(t, "after the containerd outage", db, co)

	// Exits are still observed: kill the coordinator, it comes back.
	if err := syscall.Kill(int(co.PID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.waitComp(t, "m3coordinator", 30*time.Second, "coordinator restarted after the reconnect", func(c agent.Status) bool {
		return c.State == agent.StateRunning && c.PID != 0 && c.PID != co.PID
	})
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d", code)
	}
}
