package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/backup"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// TestE2EBackupRestore: the round trip of the issue with real M3 data —
// write points, `m3sup backup`, stop, wipe <data>/etcd, `m3sup restore`,
// start: the cluster comes back ready with the same placement and the
// points (also one written after the backup) read back.
// It logs the backup and restore times for the figures.
func TestE2EBackupRestore(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	n := newNode(t, nodeOpts{releaseURL: rs.url, checksum: "sha256:" + env.digest})
	n.start()
	n.waitReady(4 * time.Minute)

	// The data set: a few series, one point each, read back.
	ts := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	const series = 5
	for i := range series {
		writeAndRead(t, n.coordURL, fmt.Sprintf("m3sup_e2e_backup_%d", i), ts, float64(100+i))
	}
	before := m3Placement(t, n.coordURL)
	placementRev := n.placementRevision()

	file := filepath.Join(t.TempDir(), "brain.tar.gz")
	start := time.Now()
	out1 := backupCLI(t, "backup", "-o", file, "--socket", n.socket)
	backupTook := time.Since(start)
	info, err := backup.Inspect(file)
	if err != nil {
		t.Fatalf("the backup does not verify: %v", err)
	}
	if info.Node != "e2e-node" || info.Release != "1.5.0" || info.Revision == 0 {
		t.Fatalf("backup manifest: %+v", info)
	}
	if !strings.Contains(out1, file) {
		t.Errorf("`m3sup backup` output does not name the file:\n%s", out1)
	}
	var placement backup.Keys
	if b, err := backup.ReadMember(file, backup.MemberPlacement); err != nil || json.Unmarshal(b, &placement) != nil || len(placement.Keys) != 1 {
		t.Fatalf("backup's placement member: %v %s", err, b)
	}

	// M3 data written after the backup lives in M3's data dir, not in etcd:
	// it survives the restore too.
	writeAndRead(t, n.coordURL, "m3sup_e2e_after_backup", ts, 7)

	// Give the commit log time to flush (it flushes every second).
	time.Sleep(2 * time.Second)
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM; log:\n%s", code, n.log())
	}
	if err := os.RemoveAll(filepath.Join(n.dir, "etcd")); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	out := backupCLI(t, "restore", file, "--config", n.configFile)
	restoreTook := time.Since(start)
	if !strings.Contains(out, "m3sup run --config "+n.configFile) {
		t.Errorf("`m3sup restore` does not say how to start the node:\n%s", out)
	}
	if strings.Contains(out, "moved the previous etcd data") {
		t.Errorf("restore moved etcd data that was wiped:\n%s", out)
	}

	start = time.Now()
	n.start()
	st := n.waitReady(4 * time.Minute)
	readyTook := time.Since(start)
	after := m3Placement(t, n.coordURL)
	if !reflect.DeepEqual(before, after) {
		b1, _ := json.MarshalIndent(before, "", "  ")
		b2, _ := json.MarshalIndent(after, "", "  ")
		t.Fatalf("placement changed by backup+restore:\nbefore %s\nafter %s", b1, b2)
	}
	if rev := n.placementRevision(); rev != placementRev {
		t.Errorf("placement key rewritten: mod revision %d → %d", placementRev, rev)
	}
	if strings.Count(n.log(), "placement initialized") > 1 {
		t.Errorf("placement initialized again after the restore")
	}
	if !st.M3.PlacementExists || st.M3.Shards["AVAILABLE"] != 16 {
		t.Errorf("M3 status after restore: %+v", st.M3)
	}
	for i := range series {
		readBack(t, n.coordURL, fmt.Sprintf("m3sup_e2e_backup_%d", i), ts, float64(100+i))
	}
	readBack(t, n.coordURL, "m3sup_e2e_after_backup", ts, 7)

	// The commands' own "took" is the work; the wall time adds the start of
	// a (race-built, under -race) m3sup binary.
	t.Logf("figure: backup of the e2e data set: %s (command wall time %s; %d bytes, etcd revision %d, %d keys)",
		tookOf(t, out1), backupTook.Round(time.Millisecond), info.Size, info.Revision, info.Keys)
	t.Logf("figure: restore of the e2e data set: %s (command wall time %s); ready after the restore in %s",
		tookOf(t, out), restoreTook.Round(time.Millisecond), readyTook.Round(time.Millisecond))
	if code := n.stop(90 * time.Second); code != 0 {
		t.Fatalf("m3sup exited with %d after SIGTERM", code)
	}
}

// backupCLI runs m3sup with args and returns its
// output; a non-zero exit fails the test.
func backupCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := m3sup(args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("m3sup %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("m3sup %s:\n%s", strings.Join(args, " "), out.String())
	return out.String()
}

func m3Placement(t *testing.T, coordURL string) m3.Placement {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, ok, err := (&m3.Client{BaseURL: coordURL}).Placement(ctx)
	if err != nil || !ok {
		t.Fatalf("M3 placement: exists %v, %v", ok, err)
	}
	return p
}

// tookOf is the duration after "took " in a command's output.
func tookOf(t *testing.T, out string) time.Duration {
	t.Helper()
	_, rest, ok := strings.Cut(out, "took ")
	if !ok {
		t.Fatalf("no \"took\" in:\n%s", out)
	}
	d, err := time.ParseDuration(strings.Fields(rest)[0])
	if err != nil {
		t.Fatalf("took: %v in:\n%s", err, out)
	}
	return d
}
