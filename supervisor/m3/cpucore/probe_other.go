//go:build !(linux && amd64)

package cpucore

// Probe reports the defect as not applicable: M3 executes RDTSCP only on
// linux/amd64.
func Probe() Result { return Result{Applicable: false} }
