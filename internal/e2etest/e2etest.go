// Package e2etest is what the end-to-end tests (e2e/) and the benchmarks
// (bench/) share to run m3sup for real: the check for root, containerd,
// runc and the M3 release tarball, building the m3sup binary once, free
// loopback ports and the check that a process still runs. It is imported
// only by tests.
package e2etest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ReleaseEnv names the environment variable holding the path of the M3
// release tarball (`make e2e` and `make bench` set it).
const ReleaseEnv = "M3SUP_E2E_RELEASE"

// Missing lists what this host lacks to run m3sup and M3 for real: root,
// containerd, runc, the release tarball. hint says where the tarball comes
// from ("run `make e2e`").
func Missing(hint string) []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if os.Getenv(ReleaseEnv) == "" {
		missing = append(missing, ReleaseEnv+" ("+hint+")")
	}
	return missing
}

// Release is the M3 release tarball named by ReleaseEnv, as an absolute
// path, and its hex sha256.
func Release() (path, digest string, err error) {
	if path, err = filepath.Abs(os.Getenv(ReleaseEnv)); err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("read release tarball: %w", err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:]), nil
}

// ModuleDir is the root of the m3sup module (the directory of go.mod).
func ModuleDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the m3sup module")
	}
	return filepath.Dir(mod), nil
}

// BuildOptions says how Build builds.
type BuildOptions struct {
	// Race builds with the race detector (cgo on), as the e2e suite does
	// when its own test binary runs with -race: the detector in the daemon
	// has caught real bugs.
	Race bool
	// Stripped builds the way `make build` does: static (cgo off),
	// -trimpath, -ldflags "-s -w". The benchmarks measure this binary.
	Stripped bool
}

// Build runs `go build` of pkg (a path relative to dir, like
// "./cmd/m3sup") in dir, writing the binary to out.
func Build(dir, out, pkg string, o BuildOptions) error {
	if o.Race && o.Stripped {
		return fmt.Errorf("build %s: a race build cannot be static", pkg)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go toolchain: %w", err)
	}
	args := []string{"build", "-o", out}
	env := append(os.Environ(), "GOFLAGS=-buildvcs=false")
	switch {
	case o.Race:
		args = append(args, "-race")
		env = append(env, "CGO_ENABLED=1")
	case o.Stripped:
		args = append(args, "-trimpath", "-ldflags", "-s -w")
		env = append(env, "CGO_ENABLED=0")
	}
	cmd := exec.Command(gobin, append(args, pkg)...)
	cmd.Dir, cmd.Env = dir, env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", pkg, dir, err, b)
	}
	return nil
}

// FreePorts returns n distinct TCP ports free on ip (every listener is held
// until all are picked, so they differ).
func FreePorts(t testing.TB, ip string, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// ProcessAlive reports whether pid runs a command line containing name (a
// pid reused by another program does not count).
func ProcessAlive(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(name))
}
