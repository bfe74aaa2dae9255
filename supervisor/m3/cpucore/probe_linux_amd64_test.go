package cpucore

import (
	"testing"
	"time"
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
