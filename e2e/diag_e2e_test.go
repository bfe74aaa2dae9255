package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// headerTransport adds fixed headers to every request.
type headerTransport struct{ h map[string]string }

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// diagnoseMissing explains points that did not read back: which of the
// written points each coordinator lacks at read consistency one (three
// times: each answer is one replica's), unstrict_majority and all, each
// host's commit-log and snapshot files, and each m3dbnode's log lines about
// bootstrap, snapshots, flushes and commit logs. It only logs.
func diagnoseMissing(t testing.TB, nodes []*node, metric string, written, missing []int, from, to time.Time) {
	t.Helper()
	var b strings.Builder
	for _, n := range nodes {
		for _, level := range []string{"one", "one", "one", "unstrict_majority", "all"} {
			mc := &m3.Client{BaseURL: n.coordURL, HTTP: &http.Client{Transport: headerTransport{map[string]string{"M3-Read-Consistency-Level": level}}}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := mc.QueryRange(ctx, metric, from.Add(-time.Minute), to.Add(time.Minute), 5*time.Second)
			cancel()
			if err != nil {
				fmt.Fprintf(&b, "%s read %s: %v\n", n.coordURL, level, err)
				continue
			}
			var lacks []int
			for _, seq := range written {
				if !hasValue(res, float64(seq)) {
					lacks = append(lacks, seq)
				}
			}
			fmt.Fprintf(&b, "%s read %s: %d series, lacks %s\n", n.coordURL, level, len(res.Series), seqRanges(lacks))
		}
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "== %s files:\n", n.dir)
		_ = filepath.WalkDir(n.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if strings.Contains(p, "/commitlogs/") || strings.Contains(p, "/snapshots/") {
				if info, err := d.Info(); err == nil {
					fmt.Fprintf(&b, "  %s %d %s\n", strings.TrimPrefix(p, n.dir), info.Size(), info.ModTime().UTC().Format("15:04:05.000"))
				}
			}
			return nil
		})
		fmt.Fprintf(&b, "== %s m3dbnode log lines about bootstrap, snapshots, flushes and commit logs:\n%s\n", n.dir, m3dbnodeLogLines(n))
	}
	t.Logf("missing points %v of %s (written %s–%s):\n%s", missing[:min(10, len(missing))], metric,
		from.UTC().Format("15:04:05.000"), to.UTC().Format("15:04:05.000"), b.String())
}

// m3dbnodeLogLines returns n's m3dbnode log lines about bootstrap,
// snapshots, flushes, commit logs, cleanup, shutdown and errors.
func m3dbnodeLogLines(n *node) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "components", "m3dbnode", "logs", "m3dbnode.log"))
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		low := strings.ToLower(l)
		if slices.ContainsFunc([]string{"bootstrap", "snapshot", "commit", "cleanup", "flush", "error", "shutdown", "closing", "starting"},
			func(w string) bool { return strings.Contains(low, w) }) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// seqRanges prints sorted sequence numbers as ranges: "1-50 77 80-82".
func seqRanges(seqs []int) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		} else {
			parts = append(parts, strconv.Itoa(seqs[i]))
		}
		i = j + 1
	}
	return "[" + strings.Join(parts, " ") + "]"
}
