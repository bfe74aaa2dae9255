package cpucore

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Mode is the operator's choice (dbnode.cpuCoreGuard).
type Mode string

const (
	// ModeAuto guards when the probe finds the per-core path unsafe.
	ModeAuto Mode = "auto"
	// ModeOn always guards.
	ModeOn Mode = "on"
	// ModeOff never guards, whatever the probe says.
	ModeOff Mode = "off"
)

// Modes lists the valid modes.
var Modes = []Mode{ModeAuto, ModeOn, ModeOff}

// ParseMode checks a mode; "" means ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeOn, ModeOff:
		return Mode(s), nil
	}
	return "", fmt.Errorf("%q: must be auto, on or off", s)
}

// Issues are M3's issues for this defect, for log lines and status.
const Issues = "M3 issues #3105, #3827, #4080"

// Result is what the probe saw.
type Result struct {
	// Applicable is false where M3 never executes RDTSCP (not linux/amd64).
	Applicable bool `json:"applicable"`
	// HasRDTSCP is CPUID's answer (leaf 0x80000001, EDX bit 27).
	HasRDTSCP bool `json:"hasRDTSCP"`
	// CPUs are the CPUs of m3sup's affinity set, in order.
	CPUs []int `json:"cpus,omitempty"`
	// Read is the core id RDTSCP returned on each CPU of CPUs (M3's
	// reading: TSC_AUX & 0xff); empty when RDTSCP was not executed.
	Read []int `json:"read,omitempty"`
	// Err is set when the probe could not pin a thread.
	Err string `json:"error,omitempty"`
	// Took is how long the probe ran.
	Took time.Duration `json:"took"`
}

// Safe reports whether M3's per-core path is safe on this host, and why not.
func (r Result) Safe() (bool, string) {
	switch {
	case !r.Applicable:
		return true, "M3 does not use RDTSCP on this platform"
	case !r.HasRDTSCP:
		return false, "CPUID does not advertise RDTSCP: M3 would die with SIGILL where the instruction is missing, or index its queues with whatever a hypervisor emulates"
	case r.Err != "":
		return false, "cannot probe the CPU ids RDTSCP reports: " + r.Err
	case len(r.Read) != len(r.CPUs) || len(r.CPUs) == 0:
		return false, "the probe read no CPU id"
	}
	n := len(r.CPUs)
	for i, cpu := range r.CPUs {
		got := r.Read[i]
		if got >= n {
			return false, fmt.Sprintf("RDTSCP reports core %d on CPU %d, beyond M3's %d per-core queues: the first write of a new series would panic", got, cpu, n)
		}
		if got != cpu {
			return false, fmt.Sprintf("RDTSCP reports core %d on CPU %d: the hypervisor misreports CPU ids", got, cpu)
		}
	}
	return true, fmt.Sprintf("RDTSCP reports every CPU's own id (%d CPUs)", n)
}

// Decision is whether m3dbnode runs with the one-processor cpuinfo.
type Decision struct {
	Mode  Mode   `json:"mode"`
	Guard bool   `json:"guard"`
	Why   string `json:"reason"`
	Probe Result `json:"probe"`
}

// Decide combines the mode and the probe; it is pure.
func Decide(mode Mode, r Result) Decision {
	safe, why := r.Safe()
	d := Decision{Mode: mode, Probe: r}
	switch mode {
	case ModeOn:
		d.Guard, d.Why = true, "dbnode.cpuCoreGuard is on (probe: "+why+")"
	case ModeOff:
		d.Guard, d.Why = false, "dbnode.cpuCoreGuard is off (probe: "+why+")"
	default:
		d.Mode, d.Guard, d.Why = ModeAuto, !safe, why
	}
	return d
}

// String is one line for logs, status and preflight: "on: " or "off: "
// and the Detail.
func (d Decision) String() string {
	if d.Guard {
		return "on: " + d.Detail()
	}
	return "off: " + d.Detail()
}

// Detail says what the decision does and why.
func (d Decision) Detail() string {
	if d.Guard {
		return "m3dbnode sees one processor (" + d.Why + "; " + Issues + ")"
	}
	return d.Why
}

// OneProcessor returns a cpuinfo that lists exactly one processor: the
// first processor block of host (the host's /proc/cpuinfo), numbered 0, so
// tools that read the model or flags still find them. Without a usable host
// block it returns a minimal one.
func OneProcessor(host []byte) []byte {
	block, _, _ := bytes.Cut(bytes.TrimLeft(host, "\n"), []byte("\n\n"))
	var out strings.Builder
	sawProcessor := false
	for _, line := range strings.Split(string(block), "\n") {
		key, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if strings.HasPrefix(line, "processor") && strings.TrimSpace(key) != "processor" {
			continue // M3 would count it as a processor
		}
		switch strings.TrimSpace(key) {
		case "processor":
			if sawProcessor {
				continue
			}
			sawProcessor = true
			line = "processor\t: 0"
		case "physical id", "core id", "apicid", "initial apicid":
			line = strings.TrimRight(key, " \t") + "\t: 0"
		case "siblings", "cpu cores":
			line = strings.TrimRight(key, " \t") + "\t: 1"
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if !sawProcessor {
		return []byte("processor\t: 0\n\n")
	}
	s := out.String()
	if !strings.HasPrefix(s, "processor") {
		// M3 counts lines that start with "processor"; keep it first.
		s = "processor\t: 0\n" + strings.Replace(s, "processor\t: 0\n", "", 1)
	}
	return []byte(s + "\n")
}

// CountProcessors counts lines that start with "processor", as M3 does.
func CountProcessors(cpuinfo []byte) int {
	n := 0
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if strings.HasPrefix(line, "processor") {
			n++
		}
	}
	return n
}
