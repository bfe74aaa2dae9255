package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/registrytest"
)

// TestE2EImageBundleAirGap: the m3dbnode and m3coordinator images, built
// from the real release binaries and written as docker-save archives, travel
// in an air-gap bundle to a node whose registries cannot be reached (one
// host does not resolve, the other is a closed loopback port) and whose
// release sources are closed ports. m3sup imports the archives into
// containerd, survives the failed pulls by using the imported copies, runs
// both components from their image snapshots, serves a write and a read and
// stops cleanly.
func TestE2EImageBundleAirGap(t *testing.T) {
	env := needE2E(t)
	dir := t.TempDir()
	bins := extractBinaries(t, env.tarball, t.TempDir())

	// Two unreachable registries: a name that cannot resolve (.invalid is
	// reserved, RFC 2606) and a closed port on loopback.
	ports := freePorts(t, 2)
	closedRegistry := fmt.Sprintf("127.0.0.1:%d", ports[0])
	refs := map[string]string{
		"m3dbnode":      "registry.invalid:5000/m3db/m3dbnode:v1.5.0",
		"m3coordinator": closedRegistry + "/m3db/m3coordinator:v1.5.0",
	}
	archives := map[string]string{}
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		img, err := registrytest.Image([]registrytest.File{{Source: bins[name], Path: "/bin/" + name}}, []string{"/bin/" + name}, []string{"PATH=/bin"})
		if err != nil {
			t.Fatal(err)
		}
		archives[name] = filepath.Join(dir, name+".tar")
		start := time.Now()
		if err := registrytest.WriteArchive(archives[name], refs[name], img); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s as %s in %s", refs[name], archives[name], time.Since(start).Round(time.Millisecond))
	}

	m3sup := func(args ...string) string {
		t.Helper()
		cmd := m3sup(args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("m3sup %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	bundleFile := filepath.Join(dir, "m3-1.5.0-images.m3sup")
	// Image archives are used only from a bundle signed by a trusted key.
	keyPrefix := filepath.Join(dir, "site")
	m3sup("bundle", "keygen", "-o", keyPrefix)
	start := time.Now()
	out := m3sup("bundle", "create", "--version", "1.5.0", "--from", env.tarball, "--checksum", "sha256:"+env.digest,
		"--image-archive", archives["m3dbnode"], "--image-archive", archives["m3coordinator"], "--sign", keyPrefix+".key", "-o", bundleFile)
	t.Logf("bundle created in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	if out := m3sup("bundle", "verify", bundleFile, "--trust", keyPrefix+".pub", "-o", "json"); strings.Count(out, `"kind": "image"`) != 2 {
		t.Fatalf("bundle does not list two image archives:\n%s", out)
	}

	// Every source is unreachable: the release and its checksums on a closed
	// port, the registries as above.
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	n := newNode(t, nodeOpts{releaseURL: base + "/m3_1.5.0_linux_amd64.tar.gz", checksum: "file:" + base + "/m3_1.5.0_checksums.txt"})
	images := filepath.Join(filepath.Dir(n.dir), "images.yaml")
	cfg := fmt.Sprintf(`dbnode:
  image: %s
coordinator:
  image: %s
registries:
  "%s":
    insecurePlainHTTP: true
`, refs["m3dbnode"], refs["m3coordinator"], closedRegistry)
	if err := os.WriteFile(images, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	n.start("--config", images, "--bundle", bundleFile, "--trust", keyPrefix+".pub")
	n.waitReady(4 * time.Minute)
	t.Logf("ready in image mode from the bundle after %s", time.Since(start).Round(time.Millisecond))

	ts := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	writeAndRead(t, n.coordURL, "m3sup_e2e_image_bundle_point", ts, 11)

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

	log := n.log()
	if !strings.Contains(log, "imported air-gap bundle") {
		t.Fatalf("no bundle import in the log:\n%s", log)
	}
	imported := logLines(log, "imported bundled images into containerd")
	fallback := logLines(log, "using the copy containerd already holds")
	for _, l := range append(append([]string(nil), imported...), fallback...) {
		t.Logf("log: %s", l)
	}
	for _, name := range []string{"m3dbnode", "m3coordinator"} {
		if !anyContains(imported, refs[name]) {
			t.Fatalf("%s was not imported into containerd from the bundle; import lines: %q", refs[name], imported)
		}
		if !anyContains(fallback, refs[name]) {
			t.Fatalf("no survived pull failure for %s in the log; fallback lines: %q\nlog:\n%s", refs[name], fallback, log)
		}
	}
	if strings.Contains(log, "image pulled") {
		t.Fatalf("an image was pulled although no registry is reachable:\n%s", log)
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

// logLines returns the lines of log that contain msg.
func logLines(log, msg string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}
