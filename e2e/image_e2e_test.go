package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/registrytest"
)

// extractBinaries copies m3dbnode and m3coordinator out of the release
// tarball into dir.
func extractBinaries(t *testing.T, tarball, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(h.Name)
		if h.Typeflag != tar.TypeReg || (base != "m3dbnode" && base != "m3coordinator") {
			continue
		}
		p := filepath.Join(dir, base)
		w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		out[base] = p
	}
	if len(out) != 2 {
		t.Fatalf("release tarball %s lacks a binary: found %v", tarball, out)
	}
	return out
}

// rootIsOverlay reports whether pid's root filesystem is an overlay mount
// (an image snapshot) rather than a host directory.
func rootIsOverlay(t *testing.T, pid uint32) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// mountinfo: id parent major:minor root mountpoint opts... - fstype source superopts
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				return f[i+1] == "overlay"
			}
		}
	}
	return false
}

// TestE2EImageMode: m3dbnode and m3coordinator images, built from the real
// release binaries and pushed to a real registry on loopback (plain HTTP,
// marked so in `registries`), are pulled through containerd and run from
// their snapshots; the cluster reaches ready and serves a write and a read
// without the release tarball ever being fetched.
func TestE2EImageMode(t *testing.T) {
	env := needE2E(t)
	reg := registrytest.Start(t, registrytest.Options{})
	bins := extractBinaries(t, env.tarball, t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	refs := map[string]string{}
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		img, err := registrytest.Image([]registrytest.File{{Source: bins[name], Path: "/bin/" + name}}, []string{"/bin/" + name}, []string{"PATH=/bin"})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ref, digest, err := reg.Push(ctx, "m3db/"+name, "v1.5.0", img)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pushed %s (%s) in %s", ref, digest, time.Since(start).Round(time.Millisecond))
		refs[name] = ref
	}

	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest})
	images := filepath.Join(filepath.Dir(n.dir), "images.yaml")
	cfg := fmt.Sprintf(`dbnode:
  image: %s
coordinator:
  image: %s
registries:
  "%s":
    insecurePlainHTTP: true
`, refs["m3dbnode"], refs["m3coordinator"], reg.Host)
	if err := os.WriteFile(images, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	n.start("--config", images)
	n.waitReady(4 * time.Minute)
	t.Logf("ready in image mode after %s", time.Since(start).Round(time.Millisecond))
	if got := rs.requests.Load(); got != 0 {
		t.Fatalf("image mode fetched the release tarball (%d requests)", got)
	}

	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, n.coordURL, "m3sup_e2e_image_point", ts, 7)

	st := statusCLI(t, n.socket)
	running := map[string]uint32{}
	for _, c := range st.Components {
		if c.State == "running" && c.PID > 0 && processAlive(c.PID, c.Name) {
			running[c.Name] = c.PID
		}
	}
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		pid := running[name]
		if pid == 0 {
			t.Fatalf("%s is not running under containerd: %+v", name, st.Components)
		}
		if !rootIsOverlay(t, pid) {
			t.Fatalf("%s (pid %d) does not run from an image snapshot (root is not overlay)", name, pid)
		}
	}
	if !strings.Contains(n.log(), "image pulled") {
		t.Fatalf("no image pull in the log:\n%s", n.log())
	}

	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM; log:\n%s", code, n.log())
	}
	for name, pid := range running {
		if processAlive(pid, name) {
			t.Fatalf("%s (pid %d) still runs after m3sup stopped", name, pid)
		}
	}
}
