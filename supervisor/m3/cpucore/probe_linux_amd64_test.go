package cpucore

import (
	"golang.org/x/sys/unix"
	"testing"
	"time"
	"unsafe"
)

// TestProbeThisHost runs the real probe; it must answer quickly and say
// something either way. CI's log shows the verdict for its machine.
func TestProbeThisHost(t *testing.T) {
	r := Probe()
	safe, why := r.Safe()
	t.Logf("CPU-core probe on this host: safe=%v (%s); probe %+v", safe, why, r)
	if !r.Applicable {
		t.Fatal("linux/amd64 must be applicable")
	}
	if r.HasRDTSCP && r.Err == "" && len(r.CPUs) == 0 {
		t.Fatal("RDTSCP present but no CPU probed")
	}
	if r.Took > 100*time.Millisecond {
		t.Errorf("probe took %s; it must be cheap", r.Took)
	}
}

// getcpu is the kernel's idea of the current CPU (getcpu(2)).
func getcpu() int {
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 {
		return -1
	}
	return int(cpu)
}

// TestProbePinned drives the pinned path with getcpu(2), which is right by
// definition: every CPU of the affinity set must read its own id back.
func TestProbePinned(t *testing.T) {
	r := probeWith(func() bool { return true }, getcpu)
	if safe, why := r.Safe(); !safe || len(r.CPUs) == 0 {
		t.Fatalf("pinned probe with getcpu: %v (%s) %+v", safe, why, r)
	}
}

// BenchmarkProbePinned times the whole pinned path (a fresh thread pinned
// to each CPU in turn), as on a host whose CPUID advertises RDTSCP.
func BenchmarkProbePinned(b *testing.B) {
	for b.Loop() {
		probeWith(func() bool { return true }, getcpu)
	}
}
