package bundle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// curlBenchSize is the artifact BenchmarkFetchVsCurl transfers.
const curlBenchSize = 256 << 20

// BenchmarkFetchVsCurl compares Cache.Fetch of a 256 MiB artifact over
// loopback HTTP (download, sha256, fsync, atomic rename into a fresh cache)
// with `sh -c "curl -s URL | sha256sum"` of the same URL from the same
// server. Each iteration runs both, in alternating order, so that load
// noise hits both arms alike. Reported:
//
//	fetch-MB/s   median throughput of Cache.Fetch (MB = 10^6 bytes)
//	curl-MB/s    median throughput of curl | sha256sum
//	fetch/curl   fetch-MB/s ÷ curl-MB/s (issue target ≥ 0.9)
//
// ns/op is the time of one pair. Use -benchtime Nx (N pairs); each pair
// moves 512 MiB. Needs curl and sha256sum on PATH.
func BenchmarkFetchVsCurl(b *testing.B) {
	for _, tool := range []string{"curl", "sha256sum", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("needs %s (apt-get install -y curl)", tool)
		}
	}
	payload := make([]byte, curlBenchSize)
	rng := rand.NewChaCha8([32]byte{'m', '3', 's', 'u', 'p'})
	_, _ = rng.Read(payload) // incompressible, like a release tarball
	want := digestOf(payload)
	srv := newFileServer(b, map[string][]byte{"/m3_bench_linux_amd64.tar.gz": payload})
	url := srv.URL + "/m3_bench_linux_amd64.tar.gz"
	src := Source{URL: url, Checksum: string(want)}
	base := b.TempDir()

	fetchOnce := func() time.Duration {
		dir := filepath.Join(base, "cache")
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		c, err := OpenCache(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		res, err := c.Fetch(context.Background(), src)
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if !res.Downloaded || res.Bytes != curlBenchSize || res.Digest != want {
			b.Fatalf("fetch result %+v", res)
		}
		return took
	}
	curlOnce := func() time.Duration {
		cmd := exec.Command("sh", "-c", fmt.Sprintf("curl -s %s | sha256sum", url))
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("curl | sha256sum: %v: %s", err, out.String())
		}
		if got := strings.Fields(out.String()); len(got) == 0 || "sha256:"+got[0] != string(want) {
			b.Fatalf("curl | sha256sum printed %q, want %s", out.String(), want)
		}
		return took
	}

	var fetchT, curlT []float64
	b.SetBytes(2 * curlBenchSize)
	i := 0
	for b.Loop() {
		var f, c time.Duration
		if i%2 == 0 {
			f = fetchOnce()
			c = curlOnce()
		} else {
			c = curlOnce()
			f = fetchOnce()
		}
		i++
		fetchT = append(fetchT, f.Seconds())
		curlT = append(curlT, c.Seconds())
		b.Logf("pair %d: fetch %6.1f ms (%6.1f MB/s)  curl|sha256sum %6.1f ms (%6.1f MB/s)  ratio %.3f",
			i, f.Seconds()*1e3, mbps(f), c.Seconds()*1e3, mbps(c), c.Seconds()/f.Seconds())
	}
	fm, cm := medianOf(fetchT), medianOf(curlT)
	b.ReportMetric(curlBenchSize/fm/1e6, "fetch-MB/s")
	b.ReportMetric(curlBenchSize/cm/1e6, "curl-MB/s")
	b.ReportMetric(cm/fm, "fetch/curl")
}

func mbps(d time.Duration) float64 { return curlBenchSize / d.Seconds() / 1e6 }

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestProgressBarTerminal: a terminal Progress writer gets a header line,
// then one line redrawn with \r (bar, percent, sizes, MB/s, ETA), finished
// with "done" and a newline. (The non-terminal line format is
// TestProgressWriter's.)
func TestProgressBarTerminal(t *testing.T) {
	old := progressIsTerminal
	progressIsTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { progressIsTerminal = old })

	payload := bytes.Repeat([]byte("p"), 3<<20)
	srv := newFileServer(t, map[string][]byte{"/m3_x.tar.gz": payload})
	var out bytes.Buffer
	c, _ := testCache(t, Options{Progress: &out})
	var ticks atomic.Int64 // a clock that moves 1 s per reading
	c.now = func() time.Time { return time.Unix(ticks.Add(1), 0) }
	if _, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/m3_x.tar.gz", Checksum: string(digestOf(payload))}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	header, bar, ok := strings.Cut(got, "\n")
	if !ok || header != "fetch m3_x.tar.gz (3.0 MiB)" {
		t.Fatalf("header = %q (output %q)", header, got)
	}
	if strings.Count(got, "\n") != 2 || !strings.HasSuffix(got, "\n") {
		t.Errorf("want exactly the header and the finished bar as lines: %q", got)
	}
	draws := strings.Split(strings.TrimSuffix(bar, "\n"), "\r")[1:]
	if len(draws) < 2 {
		t.Fatalf("bar drawn %d times, want progress and a final draw: %q", len(draws), bar)
	}
	last := draws[len(draws)-1]
	if !strings.HasPrefix(last, "[============================] 100%  3.0/3.0 MiB  ") ||
		!strings.Contains(last, " MB/s  done ") && !strings.Contains(last, " kB/s  done ") {
		t.Errorf("final bar = %q", last)
	}
	sawETA := false
	for _, d := range draws {
		if len(strings.TrimRight(d, " ")) > 80 {
			t.Errorf("bar wider than 80 columns: %q", d)
		}
		sawETA = sawETA || strings.Contains(d, "ETA ")
	}
	if !sawETA {
		t.Errorf("no ETA in any draw: %q", draws)
	}
}

func TestProgressBarFormat(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{sizePair(13<<20+512<<10, 30<<20), "13.5/30.0 MiB"},
		{sizePair(0, 100), "0/100 B"},
		{sizePair(1<<30, 2<<30), "1.0/2.0 GiB"},
		{formatRate(85.34e6), "85.3 MB/s"},
		{formatRate(1.5e9), "1.50 GB/s"},
		{formatRate(900), "1 kB/s"},
		{formatETA(62 * time.Second), "1:02"},
		{formatETA(3723 * time.Second), "1:02:03"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
