package cpucore

import (
	"fmt"
	goruntime "runtime"
	"time"

	"golang.org/x/sys/unix"
)

func hasRDTSCP() bool
func rdtscpCore() int

// Probe checks this host. It executes RDTSCP only when CPUID advertises it,
// and only on a thread of its own that it pins to each CPU in turn and then
// lets die, so no other goroutine's affinity changes.
func Probe() Result {
	start := time.Now()
	r := Result{Applicable: true, HasRDTSCP: hasRDTSCP()}
	if !r.HasRDTSCP {
		r.Took = time.Since(start)
		return r
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the pinned thread exits with this goroutine.
		goruntime.LockOSThread()
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			r.Err = fmt.Sprintf("read CPU affinity: %v", err)
			return
		}
		for cpu := 0; cpu < len(set)*64 && len(r.CPUs) < set.Count(); cpu++ {
			if !set.IsSet(cpu) {
				continue
			}
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				r.Err = fmt.Sprintf("pin a thread to CPU %d: %v", cpu, err)
				return
			}
			r.CPUs = append(r.CPUs, cpu)
			r.Read = append(r.Read, rdtscpCore())
		}
	}()
	<-done
	r.Took = time.Since(start)
	return r
}
