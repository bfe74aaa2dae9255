package cpucore

import (
	"os"
	"strings"
	"testing"
)

func TestSafe(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Result
		safe bool
		why  string
	}{
		{"not linux/amd64", Result{}, true, "does not use RDTSCP"},
		{"no RDTSCP", Result{Applicable: true}, false, "CPUID does not advertise RDTSCP"},
		{"ids match", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 1}}, true, "every CPU's own id"},
		{"one CPU", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0}, Read: []int{0}}, true, "1 CPUs"},
		// The VM this was found on: pinned to vCPU 0 and 1, RDTSCP said 249 and 217 (& 0xff).
		{"id at or above the CPU count", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{249, 217}}, false, "beyond M3's 2 per-core queues"},
		{"id equal to the CPU count", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 2}}, false, "core 2 on CPU 1"},
		{"id differs from the pinned CPU", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{1, 0}}, false, "misreports"},
		// An affinity set of CPUs 2 and 3: M3 counts every processor of
		// /proc/cpuinfo, but the ids must still be the pinned CPUs.
		{"restricted affinity", Result{Applicable: true, HasRDTSCP: true, CPUs: []int{2, 3}, Read: []int{2, 3}}, false, "beyond"},
		{"pinning failed", Result{Applicable: true, HasRDTSCP: true, Err: "pin a thread to CPU 0: EPERM"}, false, "cannot probe"},
		{"nothing read", Result{Applicable: true, HasRDTSCP: true}, false, "read no CPU id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			safe, why := tc.r.Safe()
			if safe != tc.safe || !strings.Contains(why, tc.why) {
				t.Errorf("Safe() = %v, %q; want %v, containing %q", safe, why, tc.safe, tc.why)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	bad := Result{Applicable: true}
	good := Result{Applicable: true, HasRDTSCP: true, CPUs: []int{0, 1}, Read: []int{0, 1}}
	for _, tc := range []struct {
		mode  Mode
		r     Result
		guard bool
	}{
		{ModeAuto, bad, true}, {ModeAuto, good, false}, {"", bad, true},
		{ModeOn, good, true}, {ModeOn, bad, true},
		{ModeOff, bad, false}, {ModeOff, good, false},
	} {
		d := Decide(tc.mode, tc.r)
		if d.Guard != tc.guard || d.Why == "" {
			t.Errorf("Decide(%q, %+v) = %+v; want guard %v", tc.mode, tc.r, d, tc.guard)
		}
		if tc.mode == "" && d.Mode != ModeAuto {
			t.Errorf("empty mode decided as %q", d.Mode)
		}
	}
	if s := Decide(ModeAuto, bad).String(); !strings.Contains(s, "#4080") || !strings.HasPrefix(s, "on:") {
		t.Errorf("String() = %q; want the M3 issues", s)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"", "auto", "on", "off"} {
		if _, err := ParseMode(s); err != nil {
			t.Errorf("ParseMode(%q): %v", s, err)
		}
	}
	for _, s := range []string{"yes", "ON", "true"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
}

const twoCPUs = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum
physical id	: 0
siblings	: 2
core id		: 0
cpu cores	: 2
apicid		: 0
initial apicid	: 0
flags		: fpu vme de pse tsc
processor_extra	: x

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum
physical id	: 0
core id		: 1
apicid		: 1
flags		: fpu vme de pse tsc
`

func TestOneProcessor(t *testing.T) {
	out := string(OneProcessor([]byte(twoCPUs)))
	// M3 counts lines beginning with "processor": "processor_extra" counts
	// too, so it must go; exactly one must stay.
	if n := CountProcessors([]byte(out)); n != 1 {
		t.Fatalf("M3 would count %d processors in:\n%s", n, out)
	}
	for _, want := range []string{"processor\t: 0\n", "model name\t: Intel(R) Xeon(R) Platinum", "flags\t\t: fpu vme", "siblings\t: 1", "cpu cores\t: 1", "core id\t: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "core id\t\t: 1") || !strings.HasSuffix(out, "\n\n") {
		t.Errorf("second processor leaked or no block end:\n%s", out)
	}
	for _, host := range []string{"", "garbage without colons", "\n\n\n"} {
		if got := OneProcessor([]byte(host)); CountProcessors(got) != 1 {
			t.Errorf("OneProcessor(%q) = %q", host, got)
		}
	}
	// This host's own cpuinfo.
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if n := CountProcessors(OneProcessor(b)); n != 1 {
			t.Errorf("this host's cpuinfo gave %d processors", n)
		}
	}
}

func BenchmarkProbe(b *testing.B) {
	for b.Loop() {
		Probe()
	}
}
