package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// pointWriter writes one point every 200 ms through a coordinator (whose
// writes are at majority consistency), each point its own series so every
// one is visible in a query, and records which writes failed.
type pointWriter struct {
	metric string
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	written []writtenPoint
	failed  []string
}

type writtenPoint struct {
	seq int
	ts  time.Time
}

func startPointWriter(coordURL, metric string) *pointWriter {
	ctx, stop := context.WithCancel(context.Background())
	w := &pointWriter{metric: metric, stop: stop}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		mc := &m3.Client{BaseURL: coordURL}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ts := time.Now().Truncate(time.Millisecond)
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := mc.WriteJSON(wctx, metric, map[string]string{"host": "e2e", "seq": strconv.Itoa(seq)}, ts, float64(seq))
			cancel()
			w.mu.Lock()
			if err != nil {
				w.failed = append(w.failed, fmt.Sprintf("seq %d at %s: %v", seq, ts.Format(time.TimeOnly), err))
			} else {
				w.written = append(w.written, writtenPoint{seq, ts})
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// counts reports the writes so far: succeeded and failed.
func (w *pointWriter) counts() (ok, failed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.written), len(w.failed)
}

// finish stops the writer and waits for it.
func (w *pointWriter) finish() {
	w.stop()
	w.wg.Wait()
}

// missing queries coordURL until every written point reads back (or two
// minutes pass) and returns the sequence numbers it could not read.
func (w *pointWriter) missing(coordURL string) []int {
	w.mu.Lock()
	written := slices.Clone(w.written)
	w.mu.Unlock()
	if len(written) == 0 {
		return nil
	}
	seqs := make([]int, len(written))
	for i, p := range written {
		seqs[i] = p.seq
	}
	return unreadable(coordURL, w.metric, seqs, written[0].ts, written[len(written)-1].ts)
}

// unreadable queries metric through coordURL until every point whose value
// is one of seqs (written between first and last) reads back, or two
// minutes pass, and returns the values it could not read.
func unreadable(coordURL, metric string, seqs []int, first, last time.Time) []int {
	mc := &m3.Client{BaseURL: coordURL}
	var missing []int
	for deadline := time.Now().Add(2 * time.Minute); ; {
		qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := mc.QueryRange(qctx, metric, first.Add(-time.Minute), last.Add(time.Minute), 5*time.Second)
		cancel()
		missing = missing[:0]
		for _, seq := range seqs {
			if err != nil || !hasValue(res, float64(seq)) {
				missing = append(missing, seq)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(time.Second)
	}
}

// verify stops the writer and checks what it wrote while something
// happened (during, e.g. "while host2 left"): some write succeeded, none
// failed, and every point reads back through coordURL. It returns the
// writes that succeeded and failed.
func (w *pointWriter) verify(t testing.TB, coordURL, during string) (ok, failed int) {
	t.Helper()
	w.finish()
	ok, failed = w.counts()
	if failed > 0 {
		t.Errorf("%d of %d majority writes failed %s, first: %s", failed, ok+failed, during, w.failed[0])
	}
	if ok == 0 {
		t.Fatalf("no write succeeded %s", during)
	}
	missing := w.missing(coordURL)
	if len(missing) > 0 {
		t.Errorf("%d of %d points written %s not readable through %s, e.g. seq %v", len(missing), ok, during, coordURL, missing[:min(10, len(missing))])
	}
	t.Logf("%s: %d majority writes, %d failed, all readable through %s: %t", during, ok+failed, failed, coordURL, len(missing) == 0)
	return ok, failed
}

// loseHost simulates losing a host of a 3-host RF=3 cluster: its m3sup,
// containerd, shims and M3 processes are all SIGKILLed, as in a power cut.
// Writes through another host's coordinator (majority consistency) keep
// succeeding, the survivors' registry drops the host, and etcd keeps its
// quorum. Started again with the same arguments, the host comes back from
// its data dir (cluster.json: no new join), replaces its dead containers,
// is an etcd voter again, bootstraps, and every point written while it was
// gone reads back through its own coordinator.
func loseHost(t testing.TB, cli *clientv3.Client, lost, writeVia *hostNode, restartArgs ...string) {
	t.Helper()
	node := lost.waitReady(time.Minute).Node
	w := startPointWriter(writeVia.coordURL, "m3sup_e2e_host_loss")
	time.Sleep(time.Second) // some writes with every host up
	lostAt := time.Now()
	killHost(t, cli, lost)
	ok, failed := w.counts()
	t.Logf("%s unregistered %s after the loss; writes so far: %d ok, %d failed", node, time.Since(lostAt).Round(100*time.Millisecond), ok, failed)
	if st := writeVia.waitReady(time.Minute); st.Cluster == nil || len(st.Cluster.Hosts) != 2 {
		t.Errorf("status on %s while %s is gone: %+v (want 2 hosts)", writeVia.ip, node, st.Cluster)
	}

	back := time.Now()
	lost.start(restartArgs...)
	lost.waitReady(5 * time.Minute)
	t.Logf("%s back and ready %s after its restart (%s after the loss)", lost.ip, time.Since(back).Round(100*time.Millisecond), time.Since(lostAt).Round(100*time.Millisecond))
	waitVoters(t, cli, 3, 2*time.Minute)
	time.Sleep(time.Second) // some writes with every host back
	w.verify(t, lost.coordURL, "while a host was lost and came back")
}
