package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/m3"
)

// repackRelease writes the release tarball again as version v (goreleaser
// layout m3_<v>_linux_amd64/…) with one extra file, so it has a different
// digest; replace swaps binaries (name → a local file), else they are the
// same. It returns the path and the sha256.
func repackRelease(t *testing.T, src, v string, replace map[string]string) (string, string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "m3_"+v+"_linux_amd64.tar.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, h), gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	dir := "m3_" + v + "_linux_amd64/"
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(hdr.Name, "/")
		hdr.Name = dir + rest
		var body io.Reader = tr
		if with, ok := replace[rest]; ok {
			b, err := os.ReadFile(with)
			if err != nil {
				t.Fatal(err)
			}
			hdr.Size, body = int64(len(b)), bytes.NewReader(b)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	note := []byte("m3sup e2e: release " + v + " repacked from the 1.5.0 binaries\n")
	if err := tw.WriteHeader(&tar.Header{Name: dir + "RELEASE-NOTE", Mode: 0o644, Size: int64(len(note)), ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(note); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out, hex.EncodeToString(h.Sum(nil))
}

// exitingBinary builds a static program that prints msg and exits 1 at
// once: an m3dbnode build that cannot start.
func exitingBinary(t *testing.T, msg string) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport \"os\"\n\nfunc main() {\n\tos.Stderr.WriteString(" + strconv.Quote(msg+"\n") + ")\n\tos.Exit(1)\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m3dbnode")
	cmd := exec.Command("go", "build", "-o", out, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the exiting m3dbnode: %v\n%s", err, b)
	}
	return out
}

// rolloutWatch writes a point every 200 ms (majority writes; a write goes
// to host 1's coordinator and, if that one is down for its own restart, to
// the next host's: it fails only when every coordinator refuses it) and
// polls every host's status every 100 ms: how many m3dbnodes are down at
// once, every m3dbnode pid seen per host, the permit holders and the
// rollout messages.
type rolloutWatch struct {
	hosts []*hostNode
	apis  []*api.Client
	cli   *clientv3.Client
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu        sync.Mutex
	written   []int
	writeAt   []time.Time
	failed    []string
	failover  int // writes the first coordinator refused and another took
	maxDown   int
	downSeen  string
	firstDown time.Time         // when the poller first saw an m3dbnode down
	early     int               // points finish read back at consistency one
	pids      []map[uint32]bool // per host: m3dbnode pids seen
	holders   map[string]bool
	messages  map[string]bool
	pollError int
}

const rolloutMetric = "m3sup_e2e_rollout"

func watchRollout(t *testing.T, cli *clientv3.Client, seq0 int, hosts ...*hostNode) *rolloutWatch {
	w := &rolloutWatch{hosts: hosts, cli: cli, holders: map[string]bool{}, messages: map[string]bool{}}
	for range hosts {
		w.pids = append(w.pids, map[uint32]bool{})
	}
	for _, h := range hosts {
		w.apis = append(w.apis, api.NewClient(h.socket))
	}
	ctx, stop := context.WithCancel(context.Background())
	w.stop = stop
	w.wg.Add(2)
	go func() { // writer
		defer w.wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for seq := seq0; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ts := time.Now().Truncate(time.Millisecond)
			var errs []string
			for _, h := range hosts {
				mc := &m3.Client{BaseURL: h.coordURL}
				wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := mc.WriteJSON(wctx, rolloutMetric, map[string]string{"seq": strconv.Itoa(seq)}, ts, float64(seq))
				cancel()
				if err == nil {
					break
				}
				errs = append(errs, h.ip+": "+err.Error())
			}
			w.mu.Lock()
			switch {
			case len(errs) == len(hosts):
				w.failed = append(w.failed, strings.Join(errs, "; "))
			default:
				if len(errs) > 0 {
					w.failover++
				}
				w.written = append(w.written, seq)
				w.writeAt = append(w.writeAt, ts)
			}
			w.mu.Unlock()
		}
	}()
	go func() { // poller
		defer w.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			down, line, seen := 0, "", []int(nil)
			for i, c := range w.apis {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := c.Status(sctx)
				cancel()
				w.mu.Lock()
				if err != nil {
					w.pollError++
					w.mu.Unlock()
					continue
				}
				db := compOf(st, "m3dbnode")
				if db.PID != 0 {
					w.pids[i][db.PID] = true
				}
				if st.Rollout != nil {
					w.messages[st.Rollout.Message] = true
				}
				w.mu.Unlock()
				if dbnodeDown(db) {
					down++
					line += hosts[i].ip + ": " + compLine(db) + "; "
					seen = append(seen, i)
				}
			}
			if down > 1 {
				down, line = confirmDown(ctx, w.apis, hosts, seen)
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			holder, held, err := cluster.PermitHolder(pctx, cli)
			cancel()
			w.mu.Lock()
			if down > w.maxDown {
				w.maxDown, w.downSeen = down, line
			}
			if down > 0 && w.firstDown.IsZero() {
				w.firstDown = time.Now()
			}
			if err == nil && held {
				w.holders[holder] = true
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer and poller, checks no write failed and every
// point reads back, and returns the next sequence number.
func (w *rolloutWatch) finish(t *testing.T) int {
	t.Helper()
	time.Sleep(time.Second) // a few writes after the change
	w.stop()
	w.wg.Wait()
	t.Logf("writes: %d ok (%d through another coordinator), %d failed; most m3dbnodes down at once: %d %s; permit holders seen: %v; status poll errors: %d",
		len(w.written), w.failover, len(w.failed), w.maxDown, w.downSeen, w.holders, w.pollError)
	if len(w.written) == 0 {
		t.Fatal("no write succeeded")
	}
	if len(w.failed) > 0 {
		t.Errorf("%d of %d writes failed, first: %s", len(w.failed), len(w.failed)+len(w.written), w.failed[0])
	}
	if w.maxDown > 1 {
		t.Errorf("%d m3dbnodes down at once: %s", w.maxDown, w.downSeen)
	}
	first, last := w.writeAt[0], w.writeAt[len(w.writeAt)-1]
	missing := unreadable(w.hosts[0].coordURL, rolloutMetric, w.written, first, last)
	// Points written before any m3dbnode went down are on every replica,
	// and every replica's index must still find them after its restart:
	// a read at consistency one (one replica's answer) through each
	// coordinator returns them all. M3 v1.5 with cold writes off loses
	// the index of series it recovers from snapshots (see m3.Namespace).
	var early []int
	for i, seq := range w.written {
		if !w.firstDown.IsZero() && w.writeAt[i].Before(w.firstDown.Add(-2*time.Second)) {
			early = append(early, seq)
		}
	}
	w.early = len(early)
	if len(early) > 0 {
		var lacks []string
		for _, h := range w.hosts {
			mc := &m3.Client{BaseURL: h.coordURL, HTTP: &http.Client{Transport: headerTransport{map[string]string{"M3-Read-Consistency-Level": "one"}}}}
			// Three answers from each coordinator; one still restarting
			// (a reverted host's) is asked again until it answers.
			answers, deadline := 0, time.Now().Add(90*time.Second)
			for answers < 3 {
				qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := mc.QueryRange(qctx, rolloutMetric, first.Add(-time.Minute), last.Add(time.Minute), 5*time.Second)
				cancel()
				if err != nil {
					if time.Now().After(deadline) {
						t.Errorf("%s answered no read at consistency one within 90s: %v", h.coordURL, err)
						break
					}
					time.Sleep(time.Second)
					continue
				}
				answers++
				var gone []int
				for _, seq := range early {
					if !hasValue(res, float64(seq)) {
						gone = append(gone, seq)
					}
				}
				if len(gone) > 0 {
					lacks = append(lacks, fmt.Sprintf("%s: %s", h.coordURL, seqRanges(gone)))
				}
			}
		}
		t.Logf("%d points written before the first m3dbnode went down; reads at consistency one lacking some: %d of %d", len(early), len(lacks), 3*len(w.hosts))
		if len(lacks) > 0 {
			t.Errorf("a replica's index lost points written before the rollout: %s", strings.Join(lacks, "; "))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d points not readable, e.g. seq %v", len(missing), len(w.written), missing[:min(10, len(missing))])
	}
	if t.Failed() {
		var nodes []*node
		for _, h := range w.hosts {
			nodes = append(nodes, h.node)
		}
		diagnoseMissing(t, nodes, rolloutMetric, w.written, missing, first, last)
	}
	return w.written[len(w.written)-1] + 1
}

// waitRollout polls every host's status until cond holds on all of them.
func waitRollout(t *testing.T, timeout time.Duration, what string, hosts []*hostNode, cond func(api.Status) bool) []api.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	sts := make([]api.Status, len(hosts))
	for {
		ok := true
		for i, h := range hosts {
			select {
			case <-h.done:
				t.Fatalf("%s exited (%v); log:\n%s", h.ip, h.exitErr, h.log())
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			st, err := api.NewClient(h.socket).Status(ctx)
			cancel()
			sts[i] = st
			if err != nil || !cond(st) {
				ok = false
			}
		}
		if ok {
			return sts
		}
		if time.Now().After(deadline) {
			for i, st := range sts {
				b, _ := json.MarshalIndent(st.Rollout, "", " ")
				t.Logf("%s: rollout %s; m3dbnode %s", hosts[i].ip, b, compLine(compOf(st, "m3dbnode")))
			}
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func dbPIDs(sts []api.Status) []uint32 {
	out := make([]uint32, len(sts))
	for i, st := range sts {
		out[i] = compOf(st, "m3dbnode").PID
	}
	return out
}

// TestE2ERollout: one three-host cluster (127.0.0.2–4, RF 3,
// cluster.rolloutDeadline 90s) under continuous majority writes:
//
//	a. a rolling upgrade to a second release build with another digest
//	   (1.5.1, the same binaries repacked) served by a second HTTP server:
//	   every host ends on the new digest, m3dbnodes restart one at a time
//	   and each host holds the permit in turn; status shows the progress
//	   and 3/3 on desired;
//	b. a bad version (1.5.2, whose m3dbnode exits at start): only the
//	   first permit holder restarts, misses the deadline,
//	   goes back to the previous spec and is healthy again; the permit is
//	   released; the other hosts never restart; every host's status says
//	   the rollout halted and why;
//	c. a good change after that (1.5.1 again, dbnode log level warn)
//	   rolls to all three.
//
// No write fails and every point reads back in each step.
func TestE2ERollout(t *testing.T) {
	env := needE2E(t)
	const deadline = 90 * time.Second
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()

	over := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(over, []byte("cluster:\n  rolloutDeadline: "+deadline.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h1 := newHostNode(t, "host1", "127.0.0.2", true, rs.url, sum)
	h1.start("--config", over)
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "2")
	cli := h1.tlsEtcd(t)
	h2 := newHostNode(t, "host2", "127.0.0.3", false, rs.url, sum)
	h2.start("--config", over, "--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 2, 2*time.Minute, h1, h2)
	h3 := newHostNode(t, "host3", "127.0.0.4", false, rs.url, sum)
	h3.start("--config", over, "--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 3, 2*time.Minute, h1, h2, h3)
	hosts := []*hostNode{h1, h2, h3}
	for _, h := range hosts {
		h.waitReady(6 * time.Minute)
	}
	t.Logf("three hosts ready after %s", time.Since(start).Round(100*time.Millisecond))
	defer stopHosts(t, h3, h2, h1)

	// Every host on the 1.5.0 spec, 3/3 on desired.
	sts := waitRollout(t, 2*time.Minute, "3/3 on the first spec", hosts, func(st api.Status) bool {
		return st.Rollout != nil && st.Rollout.Hosts == 3 && st.Rollout.OnDesired == 3
	})
	rev0 := sts[0].Rollout.DesiredRevision
	t.Logf("rollout status before any change: %s", sts[2].Rollout.Message)
	seq := 1
	getDoc := func(t *testing.T) api.ClusterDoc {
		var doc api.ClusterDoc
		if err := json.Unmarshal([]byte(hostCLI(t, h1, "get", "cluster", "-o", "json")), &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	onDesired := func(rev string) func(api.Status) bool {
		return func(st api.Status) bool {
			r := st.Rollout
			return r != nil && r.DesiredRevision == rev && r.Hosts == 3 && r.OnDesired == 3 && !r.Halted &&
				st.Cluster != nil && !st.Cluster.PermitHeld
		}
	}

	// 1.5.1: the same binaries, another digest. 1.5.2: an m3dbnode that
	// exits at start (the coordinator is the real one).
	tarball, digest := repackRelease(t, env.tarball, "1.5.1", nil)
	if digest == env.digest {
		t.Fatal("the repacked release has the same digest")
	}
	rs2 := serveRelease(t, tarball)
	badTarball, badDigest := repackRelease(t, env.tarball, "1.5.2",
		map[string]string{"m3dbnode": exitingBinary(t, "m3dbnode 1.5.2: this build exits at start")})
	rs3 := serveRelease(t, badTarball)

	var revA string
	ok := t.Run("a_rolling_upgrade_two_digests", func(t *testing.T) {
		before := waitRollout(t, time.Minute, "every host ready", hosts, func(st api.Status) bool { return st.Ready })
		doc := getDoc(t)
		doc.Spec.Release.Version, doc.Spec.Release.URL, doc.Spec.Release.Checksum = "1.5.1", rs2.url, "sha256:"+digest

		w := watchRollout(t, cli, seq, hosts...)
		time.Sleep(time.Second)
		applied := time.Now()
		t.Logf("apply release 1.5.1 (sha256:%s…):\n%s", digest[:12], hostCLI(t, h1, "apply", "-f", writeDoc(t, doc)))
		sts := waitRollout(t, 12*time.Minute, "every host on 1.5.1, permit free", hosts, func(st api.Status) bool {
			co := compOf(st, "m3coordinator")
			return st.Rollout != nil && st.Rollout.DesiredVersion == "1.5.1" && onDesired(st.Rollout.DesiredRevision)(st) &&
				co.Version == "1.5.1" && co.State == agent.StateRunning && co.Healthy
		})
		took := time.Since(applied)
		seq = w.finish(t)
		if w.early == 0 {
			t.Errorf("no point was written before the first m3dbnode went down: the replicas' indexes went unchecked")
		}
		revA = sts[0].Rollout.DesiredRevision
		t.Logf("rolled to 1.5.1 (%s) in %s; status: %s", revA, took.Round(100*time.Millisecond), sts[2].Rollout.Message)
		if revA == rev0 {
			t.Fatal("the desired revision did not change")
		}
		for i, h := range hosts {
			db, co := compOf(sts[i], "m3dbnode"), compOf(sts[i], "m3coordinator")
			b := compOf(before[i], "m3dbnode")
			if db.Restarts != b.Restarts+1 || db.LastReason != agent.ReasonSpec || db.Version != "1.5.1" {
				t.Errorf("%s: m3dbnode %s, want one spec-change restart onto 1.5.1 (before: %s)", h.ip, compLine(db), compLine(b))
			}
			if co.Restarts != compOf(before[i], "m3coordinator").Restarts+1 {
				t.Errorf("%s: m3coordinator %s, want one restart onto 1.5.1", h.ip, compLine(co))
			}
			if n := len(w.pids[i]); n != 2 {
				t.Errorf("%s: %d m3dbnode pids seen during the rollout, want 2 (old and new)", h.ip, n)
			}
			// Every host's status shows every host on the new digest.
			for _, hs := range sts[i].Cluster.Hosts {
				if hs.DBNode == nil || !strings.Contains(hs.DBNode.Digest, digest) || !hs.DBNode.OnDesired || len(hs.Components) != 2 {
					t.Errorf("%s's status of %s: dbnode %+v components %+v, want the new digest, on desired, two components", h.ip, hs.Name, hs.DBNode, hs.Components)
				}
			}
		}
		for _, h := range []string{"host1", "host2", "host3"} {
			if !w.holders[h] {
				t.Errorf("%s never held the permit (holders seen %v)", h, w.holders)
			}
		}
		var progress []string
		for m := range w.messages {
			if strings.HasPrefix(m, "rolling: 1/3") || strings.HasPrefix(m, "rolling: 2/3") {
				progress = append(progress, m)
			}
		}
		t.Logf("rollout progress seen in status: %q", progress)
		if len(progress) == 0 {
			t.Errorf("status never showed progress (1/3 or 2/3); messages seen: %v", w.messages)
		}
		out := hostCLI(t, h3, "status")
		t.Logf("status on host3 after the upgrade:\n%s", out)
		if !strings.Contains(out, "rollout: 3/3 on desired m3dbnode 1.5.1") || !strings.Contains(out, "permit: none") ||
			!strings.Contains(out, "m3dbnode running healthy") {
			t.Errorf("status table lacks the finished rollout, the permit or the components")
		}
	})
	if !ok {
		t.Fatal("step a failed; skipping the rest")
	}

	ok = t.Run("b_bad_change_reverts", func(t *testing.T) {
		before := waitRollout(t, time.Minute, "every host ready", hosts, func(st api.Status) bool { return st.Ready })
		pids := dbPIDs(before)
		doc := getDoc(t)
		doc.Spec.Release.Version, doc.Spec.Release.URL, doc.Spec.Release.Checksum = "1.5.2", rs3.url, "sha256:"+badDigest

		w := watchRollout(t, cli, seq, hosts...)
		time.Sleep(time.Second)
		applied := time.Now()
		t.Logf("apply release 1.5.2, whose m3dbnode exits at start:\n%s", hostCLI(t, h1, "apply", "-f", writeDoc(t, doc)))
		var revB string
		sts := waitRollout(t, deadline+5*time.Minute, "rollout halted, every m3dbnode healthy on the previous spec, permit free", hosts, func(st api.Status) bool {
			r, db := st.Rollout, compOf(st, "m3dbnode")
			if r == nil || !r.Halted || r.DesiredRevision == revA || st.Cluster == nil || st.Cluster.PermitHeld {
				return false
			}
			revB = r.DesiredRevision
			for _, hs := range st.Cluster.Hosts {
				if hs.DBNode == nil || hs.DBNode.Revision != revA {
					return false
				}
			}
			return db.State == agent.StateRunning && db.Healthy
		})
		took := time.Since(applied)
		seq = w.finish(t)
		f := sts[0].Rollout.Failure
		t.Logf("halted and reverted %s after apply; failure: %+v", took.Round(100*time.Millisecond), f)
		if f == nil || f.Revision != revB || f.Version != "1.5.2" || !strings.Contains(f.Reason, "exits at start") {
			t.Fatalf("failure %+v, want revision %s version 1.5.2 and m3dbnode's last log line", f, revB)
		}
		if took < deadline {
			t.Errorf("reverted after %s, before the %s deadline", took, deadline)
		}
		wantMsg := "rollout halted: " + f.Host + ": m3dbnode 1.5.2 not healthy within " + deadline.String() + ": "
		for i, h := range hosts {
			r := sts[i].Rollout
			if !strings.HasPrefix(r.Message, wantMsg) || !strings.HasSuffix(r.Message, "; running previous spec") {
				t.Errorf("%s: rollout message %q, want %q…; running previous spec", h.ip, r.Message, wantMsg)
			}
			db := compOf(sts[i], "m3dbnode")
			name := "host" + strconv.Itoa(i+1)
			if name == f.Host {
				if db.PID == pids[i] || len(w.pids[i]) < 3 {
					t.Errorf("%s (failed host): m3dbnode pids seen %v, want the old, the bad and the reverted one", h.ip, w.pids[i])
				}
				continue
			}
			if db.PID != pids[i] || len(w.pids[i]) != 1 || db.Restarts != compOf(before[i], "m3dbnode").Restarts {
				t.Errorf("%s: m3dbnode restarted during the halted rollout: pids seen %v, now %s", h.ip, w.pids[i], compLine(db))
			}
		}
		out := hostCLI(t, h2, "status")
		t.Logf("status on host2 after the revert:\n%s", out)
		if !strings.Contains(out, "rollout: rollout halted: "+f.Host) || !strings.Contains(out, "permit: none") {
			t.Errorf("status table lacks the halt or the free permit")
		}
	})
	if !ok {
		t.Fatal("step b failed; skipping the rest")
	}

	t.Run("c_good_change_rolls_again", func(t *testing.T) {
		before := waitRollout(t, time.Minute, "every host ready", hosts, func(st api.Status) bool { return st.Ready })
		doc := getDoc(t)
		doc.Spec.Release.Version, doc.Spec.Release.URL, doc.Spec.Release.Checksum = "1.5.1", rs2.url, "sha256:"+digest
		doc.Spec.DBNode.LogLevel = "warn"
		w := watchRollout(t, cli, seq, hosts...)
		time.Sleep(time.Second)
		applied := time.Now()
		t.Logf("apply a good dbnode change (logLevel warn):\n%s", hostCLI(t, h1, "apply", "-f", writeDoc(t, doc)))
		var revC string
		sts := waitRollout(t, 12*time.Minute, "every host on the new spec, permit free", hosts, func(st api.Status) bool {
			if st.Rollout == nil || st.Rollout.DesiredRevision == revA {
				return false
			}
			revC = st.Rollout.DesiredRevision
			return onDesired(revC)(st)
		})
		took := time.Since(applied)
		w.finish(t)
		t.Logf("rolled to %s in %s; status: %s", revC, took.Round(100*time.Millisecond), sts[0].Rollout.Message)
		for i, h := range hosts {
			db, b := compOf(sts[i], "m3dbnode"), compOf(before[i], "m3dbnode")
			if db.Restarts != b.Restarts+1 || db.PID == b.PID {
				t.Errorf("%s: m3dbnode %s, want exactly one restart (before: %s)", h.ip, compLine(db), compLine(b))
			}
		}
		if len(w.holders) != 3 {
			t.Errorf("permit holders seen %v, want all three hosts", w.holders)
		}
	})
	t.Logf("total %s", time.Since(start).Round(100*time.Millisecond))
}
