package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EBundleAirGap: a bundle made from the release, carried to a node
// whose every network source is a closed port, brings up a ready cluster.
func TestE2EBundleAirGap(t *testing.T) {
	env := needE2E(t)
	dir := t.TempDir()
	bundleFile := filepath.Join(dir, "m3-1.5.0.m3sup")
	keyPrefix := filepath.Join(dir, "site")

	m3sup := func(args ...string) string {
		t.Helper()
		cmd := m3sup(args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("m3sup %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	m3sup("bundle", "keygen", "-o", keyPrefix)
	m3sup("bundle", "create", "--version", "1.5.0", "--from", env.tarball, "--checksum", "sha256:"+env.digest,
		"--sign", keyPrefix+".key", "-o", bundleFile)
	if out := m3sup("bundle", "verify", bundleFile, "--trust", keyPrefix+".pub"); !strings.Contains(strings.ToLower(out), "ok") && !strings.Contains(out, "signed") {
		t.Fatalf("verify printed no verdict:\n%s", out)
	}

	// Every source this node knows is unreachable: the release URL and its
	// checksums file are on a closed port.
	closed := freePorts(t, 1)[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", closed)
	n := newNode(t, nodeOpts{releaseURL: base + "/m3_1.5.0_linux_amd64.tar.gz", checksum: "file:" + base + "/m3_1.5.0_checksums.txt"})
	n.start("--bundle", bundleFile, "--trust", keyPrefix+".pub")
	n.waitReady(4 * time.Minute)
	writeAndRead(t, n.coordURL, "m3sup_airgap_point", time.Now().Add(-5*time.Second).Truncate(time.Second), 7)
	if !strings.Contains(n.log(), "imported air-gap bundle") {
		t.Fatalf("no import in the log:\n%s", n.log())
	}
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d", code)
	}

	// A bundle signed by someone else is refused before anything runs.
	other := filepath.Join(dir, "other")
	m3sup("bundle", "keygen", "-o", other)
	n2 := newNode(t, nodeOpts{releaseURL: base + "/m3_1.5.0_linux_amd64.tar.gz", checksum: "file:" + base + "/m3_1.5.0_checksums.txt"})
	n2.start("--bundle", bundleFile, "--trust", other+".pub")
	if code := n2.waitExit(2 * time.Minute); code != 1 {
		t.Fatalf("exit %d with an untrusted bundle, want 1; log:\n%s", code, n2.log())
	}
	if last := lastLine(n2.log()); !strings.Contains(last, "signature") {
		t.Fatalf("last line %q does not say the signature is bad", last)
	}
	assertNothingRan(t, n2)
}
