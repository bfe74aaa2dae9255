package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/internal/e2etest"
)

// idleFor is how long m3sup idles with a ready cluster before its RSS is read.
const idleFor = 20 * time.Second

// BenchmarkIdleRSS: m3sup's own resident memory (the embedded etcd is
// in-process; containerd and the M3 processes are separate and not counted)
// after idleFor with a ready single-node cluster. Reported in MB (10^6
// bytes): MB-rss is VmRSS, MB-hwm is VmHWM (the peak, i.e. during start-up).
// containerd-MB-rss is the managed containerd child, for information.
func BenchmarkIdleRSS(b *testing.B) {
	needE2E(b)
	f := setup(b)
	var rss, hwm, ctrd []float64
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
		time.Sleep(idleFor)
		pid := n.proc.cmd.Process.Pid
		r, err1 := procStatusKB(pid, "VmRSS")
		h, err2 := procStatusKB(pid, "VmHWM")
		var c int64 = -1
		if st.Containerd.PID > 0 {
			c, _ = procStatusKB(int(st.Containerd.PID), "VmRSS")
		}
		n.stop(b)
		if err1 != nil || err2 != nil {
			b.Fatalf("read /proc/%d/status: %v %v", pid, err1, err2)
		}
		rss = append(rss, kbToMB(r))
		hwm = append(hwm, kbToMB(h))
		if c >= 0 {
			ctrd = append(ctrd, kbToMB(c))
		}
		b.Logf("m3sup pid %d after %s idle: VmRSS %.1f MB (%.1f MiB), VmHWM %.1f MB; managed containerd VmRSS %.1f MB",
			pid, idleFor, kbToMB(r), float64(r)/1024, kbToMB(h), kbToMB(c))
		b.StartTimer()
	}
	b.ReportMetric(median(rss), "MB-rss")
	b.ReportMetric(median(hwm), "MB-hwm")
	if len(ctrd) > 0 {
		b.ReportMetric(median(ctrd), "containerd-MB-rss")
	}
}

// kbToMB turns /proc's kB (KiB) into MB (10^6 bytes).
func kbToMB(kb int64) float64 { return float64(kb) * 1024 / 1e6 }

// BenchmarkBinarySize: `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"
// ./cmd/m3sup`, in MB (10^6 bytes). Needs only the Go toolchain.
func BenchmarkBinarySize(b *testing.B) {
	dir := b.TempDir()
	root, err := e2etest.ModuleDir()
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	for b.Loop() {
		out := filepath.Join(dir, "m3sup")
		if err := e2etest.Build(root, out, "./cmd/m3sup", e2etest.BuildOptions{Stripped: true}); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			b.Fatal(err)
		}
		size = fi.Size()
	}
	b.ReportMetric(float64(size)/1e6, "MB")
	b.Logf("stripped m3sup: %d bytes (%.1f MB, %.1f MiB)", size, float64(size)/1e6, float64(size)/(1<<20))
}
