package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on
// every Linux architecture m3sup builds for (getconf CLK_TCK).
const clkTck = 100

// idleWindow is how long BenchmarkIdleCPU samples: 5 minutes, or
// $M3SUP_BENCH_IDLE (a Go duration, e.g. 60s) for a quick run.
func idleWindow(b *testing.B) time.Duration {
	if v := os.Getenv("M3SUP_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("M3SUP_BENCH_IDLE=%q: want a positive Go duration", v)
		}
		return d
	}
	return 5 * time.Minute
}

// idleSettle is how long after the first /readyz 200 the idle window starts:
// the tail of start-up (the last status observation, log flushes) is not idle.
const idleSettle = 10 * time.Second

// cpuTicks is utime+stime of pid (all its threads), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return ut + st, nil
}

// BenchmarkIdleCPU: m3sup's own CPU (utime+stime of the process, embedded
// etcd included) while a ready single-node cluster idles, as a percentage of
// one core (target ≤ 0.5). Reported separately, for information: the managed
// containerd child, and m3dbnode and m3coordinator (M3's own idle work,
// outside m3sup's control). The window is 5 minutes (M3SUP_BENCH_IDLE
// overrides), starting idleSettle after the first /readyz 200; per-minute
// figures are logged so that a periodic spike shows.
//
//	M3SUP_E2E_RELEASE=$PWD/.cache/m3-release/m3_1.5.0_linux_amd64.tar.gz \
//	  go test ./bench -run '^$' -bench IdleCPU -benchtime 1x -timeout 30m -v
func BenchmarkIdleCPU(b *testing.B) {
	needE2E(b)
	f := setup(b)
	window := idleWindow(b)
	for b.Loop() {
		b.StopTimer()
		n := newM3supNode(b, f)
		n.start(b, f)
		n.waitReady(b, 5*time.Minute)
		st, err := n.recordPIDs()
		if err != nil {
			n.stop(b)
			b.Fatalf("status: %v", err)
		}
		time.Sleep(idleSettle)

		procs := []struct {
			name string
			pid  int
		}{{"m3sup", n.proc.cmd.Process.Pid}}
		if st.Containerd.PID > 0 {
			procs = append(procs, struct {
				name string
				pid  int
			}{"containerd", int(st.Containerd.PID)})
		}
		for _, c := range []string{"m3dbnode", "m3coordinator"} {
			if pid := n.pids[c]; pid > 0 {
				procs = append(procs, struct {
					name string
					pid  int
				}{c, pid})
			}
		}
		read := func() ([]int64, error) {
			out := make([]int64, len(procs))
			for i, p := range procs {
				t, err := cpuTicks(p.pid)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p.name, err)
				}
				out[i] = t
			}
			return out, nil
		}

		first, err := read()
		if err != nil {
			n.stop(b)
			b.Fatal(err)
		}
		t0 := time.Now()
		prev, prevT := first, t0
		perMin := make([][]float64, len(procs)) // per process, % of a core per minute
		step := min(time.Minute, window)
		for elapsed := time.Duration(0); elapsed < window; {
			d := min(step, window-elapsed)
			time.Sleep(d)
			elapsed += d
			cur, err := read()
			if err != nil {
				n.stop(b)
				b.Fatalf("after %s: %v (m3sup log tail:\n%s)", elapsed, err, n.proc.tail(20))
			}
			now := time.Now()
			for i := range procs {
				perMin[i] = append(perMin[i], pct(cur[i]-prev[i], now.Sub(prevT)))
			}
			prev, prevT = cur, now
		}
		total := time.Since(t0)
		n.stop(b)

		var lines []string
		for i, p := range procs {
			used := prev[i] - first[i]
			v := pct(used, total)
			lines = append(lines, fmt.Sprintf("%-14s pid %-7d %5d ticks in %s = %.3f%% of a core; per minute %s",
				p.name, p.pid, used, total.Round(time.Second), v, fmtPct(perMin[i])))
			b.ReportMetric(v, p.name+"-%cpu")
		}
		b.Logf("idle CPU (after ready + %s settle):\n  %s", idleSettle, strings.Join(lines, "\n  "))
		b.StartTimer()
	}
}

// pct is ticks over d as a percentage of one core.
func pct(ticks int64, d time.Duration) float64 {
	return float64(ticks) / clkTck / d.Seconds() * 100
}

func fmtPct(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " ")
}

// notifyListener is a unixgram socket playing systemd's NOTIFY_SOCKET: it
// records every datagram with its arrival time.
type notifyListener struct {
	conn *net.UnixConn
	path string

	mu   sync.Mutex
	msgs []notifyMsg
	got  chan struct{} // signalled (non-blocking) on every datagram
}

type notifyMsg struct {
	at   time.Time
	line string // one assignment, e.g. "READY=1" or "STATUS=ready: …"
}

func listenNotify(b *testing.B, dir string) *notifyListener {
	b.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	l := &notifyListener{conn: conn, path: path, got: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			at := time.Now()
			l.mu.Lock()
			// sd_notify may carry several newline-separated assignments.
			for line := range strings.SplitSeq(strings.TrimRight(string(buf[:n]), "\n"), "\n") {
				l.msgs = append(l.msgs, notifyMsg{at: at, line: line})
			}
			l.mu.Unlock()
			select {
			case l.got <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

func (l *notifyListener) close() { _ = l.conn.Close() }

// first returns the first datagram line with prefix.
func (l *notifyListener) first(prefix string) (notifyMsg, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.HasPrefix(m.line, prefix) {
			return m, true
		}
	}
	return notifyMsg{}, false
}

func (l *notifyListener) all() []notifyMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]notifyMsg(nil), l.msgs...)
}

// BenchmarkTimeToReadyNotify: m3sup run with NOTIFY_SOCKET set to a
// unixgram socket the benchmark listens on, as systemd's Type=notify does.
// From the exec to the READY=1 datagram (what ends `systemctl start`:
// m3sup sends it once every component first runs, or at cluster ready if
// that is earlier), and to the first STATUS=ready datagram (the cluster is
// ready: placement AVAILABLE, bootstrapped, namespaces ready). The first
// /readyz 200 (50 ms polling) is reported too, for comparison with
// BenchmarkTimeToReady. Warm cache, fresh data dir, managed containerd.
// -benchtime Nx runs N starts.
func BenchmarkTimeToReadyNotify(b *testing.B) {
	needE2E(b)
	f := setup(b)
	var readyMs, statusMs, readyzMs []float64
	for b.Loop() {
		b.StopTimer()
		n := newM3supNode(b, f)
		l := listenNotify(b, n.dir)
		// The child inherits the environment at exec; nothing else in this
		// process reads NOTIFY_SOCKET.
		b.Setenv("NOTIFY_SOCKET", l.path)
		n.start(b, f)
		readyz := n.waitReady(b, 5*time.Minute)
		// STATUS=ready is sent before /readyz turns 200; allow for the
		// datagram being read a moment later.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok := l.first("STATUS=ready"); ok {
				break
			}
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-l.got:
			case <-time.After(50 * time.Millisecond):
			}
		}
		_, _ = n.recordPIDs()
		n.stop(b)
		l.close()
		os.Unsetenv("NOTIFY_SOCKET")

		rdy, ok1 := l.first("READY=1")
		sts, ok2 := l.first("STATUS=ready")
		var trail []string
		for _, m := range l.all() {
			trail = append(trail, fmt.Sprintf("%7.0f ms %s", ms(m.at.Sub(n.started)), m.line))
		}
		if !ok1 || !ok2 {
			b.Fatalf("READY=1 seen %v, STATUS=ready seen %v; datagrams:\n%s", ok1, ok2, strings.Join(trail, "\n"))
		}
		r, s := ms(rdy.at.Sub(n.started)), ms(sts.at.Sub(n.started))
		readyMs = append(readyMs, r)
		statusMs = append(statusMs, s)
		readyzMs = append(readyzMs, ms(readyz))
		b.Logf("exec → READY=1 %.0f ms, → STATUS=ready %.0f ms, → /readyz 200 %.0f ms; datagrams:\n%s",
			r, s, ms(readyz), strings.Join(trail, "\n"))
		b.StartTimer()
	}
	b.ReportMetric(median(readyMs), "ms-READY=1")
	b.ReportMetric(median(statusMs), "ms-STATUS=ready")
	b.ReportMetric(median(readyzMs), "ms-readyz")
}
