// Package cpucore guards M3 v1.5 against a CPU-id defect on virtual machines.
//
// M3 v1.5 sizes its per-core insert queues by counting the "processor" lines
// of /proc/cpuinfo (src/x/sync/num_cores_linux.go) and indexes them with the
// core id that the RDTSCP instruction returns (the bottom byte of TSC_AUX,
// src/x/sync/cpu_linux_amd64.s). Some hypervisors report the host's CPU
// number there (a thread pinned to vCPU 0 read 249 on a 2-vCPU VM), so the
// first write of a new series panics with "index out of range [61] with
// length 2" in storage.(*dbShardInsertQueue).Insert; on VMs without RDTSCP
// M3 dies with SIGILL instead (M3 issues #3105, #3827, #4080). When M3
// counts exactly one processor it never executes RDTSCP.
//
// Probe checks the host: CPUID must advertise RDTSCP, and a thread pinned to
// each CPU of this process's affinity set must read its own CPU number back.
// Decide turns the probe and the operator's Mode into a Decision, and
// OneProcessor builds the cpuinfo that m3sup bind-mounts read-only over
// /proc/cpuinfo in m3dbnode's container when the guard is on.
//
// Only m3dbnode reaches that code: M3's standalone coordinator
// (src/query/server) builds no storage database, so it never calls
// xsync.CPUCore (checked against the v1.5.0 source).
//
// Import rule: standard library and golang.org/x/sys/unix only.
package cpucore
