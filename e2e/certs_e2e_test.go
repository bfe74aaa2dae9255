package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/m3"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// certFiles are the certificate files of a voter, relative to its data dir.
var certFiles = []string{
	filepath.Join("pki", pki.PeerCertFile),
	filepath.Join("pki", pki.ClientCertFile),
	filepath.Join("pki", "m3", pki.ClientCertFile),
}

// serials reads h's certificate files' serials (a client-only host has no
// member certificate).
func serials(t testing.TB, h *hostNode) map[string]string {
	t.Helper()
	out := map[string]string{}
	files := certFiles
	if h.clientOnly {
		files = certFiles[1:]
	}
	for _, f := range files {
		info, _, err := pki.ReadCertFile(filepath.Join(h.dir, f))
		if err != nil {
			t.Fatalf("%s: %v", h.ip, err)
		}
		out[f] = info.Serial
	}
	return out
}

// failoverWriter writes one point every 200 ms (each its own series), at
// majority consistency, through the first coordinator that takes it: the
// coordinators restart too when M3's certificate is renewed, one host at
// a time. A point fails only if no coordinator took it.
type failoverWriter struct {
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu       sync.Mutex
	seqs     []int
	first    time.Time
	last     time.Time
	failed   []string
	failover int // points the first coordinator refused
}

func startFailoverWriter(metric string, coords ...string) *failoverWriter {
	ctx, stop := context.WithCancel(context.Background())
	w := &failoverWriter{stop: stop}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ts := time.Now().Truncate(time.Millisecond)
			var errs []string
			for _, c := range coords {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := (&m3.Client{BaseURL: c}).WriteJSON(wctx, metric, map[string]string{"host": "e2e", "seq": strconv.Itoa(seq)}, ts, float64(seq))
				cancel()
				if err == nil {
					break
				}
				errs = append(errs, err.Error())
			}
			w.mu.Lock()
			switch {
			case len(errs) == len(coords):
				w.failed = append(w.failed, fmt.Sprintf("seq %d at %s: %s", seq, ts.Format(time.TimeOnly), strings.Join(errs, "; ")))
			default:
				if len(errs) > 0 {
					w.failover++
				}
				if len(w.seqs) == 0 {
					w.first = ts
				}
				w.seqs, w.last = append(w.seqs, seq), ts
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// TestE2ECertRenewal: three voters and a client-only host with a
// six-minute certificate lifetime. Every host renews its etcd and M3
// certificates in place (new serials on disk) between 4 and 4.5 minutes
// after issue (the client-only host at host1's join endpoint); etcd keeps serving and M3
// restarts with its new certificate through the restart permit, while
// majority writes keep succeeding (through any coordinator) and all read
// back; status shows the later expiry, and the metric carries it.
func TestE2ECertRenewal(t *testing.T) {
	env := needE2E(t)
	rs := serveRelease(t, env.tarball)
	sum := "sha256:" + env.digest
	start := time.Now()
	o := hostOpts{certLifetime: "6m"}

	h1 := newHostNodeWith(t, "host1", "127.0.0.2", true, rs.url, sum, o)
	h1.start()
	tok := h1.createToken(t, 2*time.Minute, "--voter", "--uses", "2")
	cli := h1.tlsEtcd(t)
	h2 := newHostNodeWith(t, "host2", "127.0.0.3", false, rs.url, sum, o)
	h2.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 2, 3*time.Minute, h1, h2)
	h3 := newHostNodeWith(t, "host3", "127.0.0.4", false, rs.url, sum, o)
	h3.start("--join", h1.joinURL, "--token", tok)
	waitVoters(t, cli, 3, 3*time.Minute, h1, h2, h3)
	// A fourth host is an etcd client-only host (the voter seats are
	// taken), without the CA: it renews at host1's join endpoint.
	plain := h1.createToken(t, 2*time.Minute)
	co := o
	co.roles = []string{"coordinator"}
	h4 := newHostNodeWith(t, "host4", "127.0.0.5", false, rs.url, sum, co)
	h4.clientOnly = true
	h4.start("--join", h1.joinURL, "--token", plain)
	hosts := []*hostNode{h1, h2, h3, h4}
	before := map[*hostNode]map[string]string{}
	firstExpiry := map[*hostNode]time.Time{}
	pids := map[*hostNode]map[string]uint32{}
	for _, h := range hosts {
		st := h.waitReady(5 * time.Minute)
		if st.Certs == nil || st.Certs.EarliestExpiry.IsZero() || time.Until(st.Certs.EarliestExpiry) > 6*time.Minute {
			t.Fatalf("%s: status certs %+v, want an expiry within 6m", h.ip, st.Certs)
		}
		firstExpiry[h] = st.Certs.EarliestExpiry
		before[h] = serials(t, h)
		pids[h] = map[string]uint32{}
		for _, c := range st.Components {
			pids[h][c.Name] = c.PID
		}
	}
	t.Logf("three hosts ready after %s; earliest expiries %v", time.Since(start).Round(time.Second), firstExpiry)
	if out := hostCLI(t, h1, "status"); !strings.Contains(out, "CERTS") || !strings.Contains(out, "earliest expiry") {
		t.Errorf("status lacks the CERTS line:\n%s", out)
	}

	w := startFailoverWriter("m3sup_e2e_certs", h1.coordURL, h2.coordURL, h3.coordURL)
	defer w.stop()

	// Every host renews every certificate, and afterwards is ready again
	// with a later earliest expiry.
	deadline := time.Now().Add(9 * time.Minute)
	renewed := map[*hostNode]bool{}
	for len(renewed) < len(hosts) {
		if time.Now().After(deadline) {
			t.Fatalf("not every host renewed its certificates and became ready again by %s: %d of %d", deadline.Format(time.TimeOnly), len(renewed), len(hosts))
		}
		time.Sleep(2 * time.Second)
		for _, h := range hosts {
			if renewed[h] {
				continue
			}
			now := serials(t, h)
			all := true
			for f, s := range now {
				all = all && s != before[h][f]
			}
			if !all {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := api.NewClient(h.socket).Status(ctx)
			cancel()
			if err != nil || st.Certs == nil || !st.Certs.EarliestExpiry.After(firstExpiry[h]) || !st.Ready {
				continue
			}
			renewed[h] = true
			t.Logf("%s renewed (%s); earliest expiry %s, was %s; ready", h.ip, time.Since(start).Round(time.Second),
				st.Certs.EarliestExpiry.Format(time.TimeOnly), firstExpiry[h].Format(time.TimeOnly))
		}
	}
	// M3 restarted with the renewed certificate, and M3 and etcd work
	// after the first certificates expired.
	if wait := time.Until(latest(firstExpiry)) + 10*time.Second; wait > 0 {
		time.Sleep(wait)
	}
	for _, h := range hosts {
		st := h.waitReady(3 * time.Minute)
		if st.Certs.Warning != "" {
			t.Errorf("%s: certificate warning after renewal: %s", h.ip, st.Certs.Warning)
		}
		for _, c := range st.Components {
			if c.PID == pids[h][c.Name] {
				t.Errorf("%s: %s did not restart with its renewed certificate (pid %d)", h.ip, c.Name, c.PID)
			}
		}
	}
	for _, h := range hosts {
		v, err := strconv.ParseFloat(socketMetric(h.socket, "m3sup_cert_earliest_expiry_timestamp_seconds"), 64)
		if err != nil || time.Unix(int64(v), 0).Before(time.Now()) {
			t.Errorf("%s: m3sup_cert_earliest_expiry_timestamp_seconds %v (%v), want a time to come", h.ip, v, err)
		}
	}
	w.stop()
	w.wg.Wait()
	w.mu.Lock()
	seqs, first, last, failed, failover := w.seqs, w.first, w.last, w.failed, w.failover
	w.mu.Unlock()
	if len(failed) > 0 {
		t.Errorf("%d of %d majority writes failed on every coordinator, first: %s", len(failed), len(failed)+len(seqs), failed[0])
	}
	if len(seqs) == 0 {
		t.Fatal("no write succeeded")
	}
	if missing := unreadable(h2.coordURL, "m3sup_e2e_certs", seqs, first, last); len(missing) > 0 {
		t.Errorf("%d of %d points not readable, e.g. %v", len(missing), len(seqs), missing[:min(10, len(missing))])
	}
	t.Logf("%d majority writes (%d through a second coordinator), %d failed; took %s", len(seqs)+len(failed), failover, len(failed), time.Since(start).Round(time.Second))
	stopHosts(t, hosts...)
}

func latest(ts map[*hostNode]time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}
