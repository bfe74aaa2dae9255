// Package logrotate caps the disk a component's log file can take, and reads
// that log across rotations: the crash reason of one run (Mark, ReadSince),
// the last lines (Tail, TailStart) and `m3sup logs -f` (Follower).
//
// # Why copytruncate
//
// containerd's shim writes a task's stdout and stderr to the file named by
// cio.LogFile: containerd v2.2's runc shim (and 1.6's, the daemon this
// project runs against) opens it once with O_APPEND|O_CREATE|O_WRONLY and
// holds it for the task's life, which outlives m3sup (--keep-running,
// adoption). Renaming the file would leave the shim writing into the renamed
// file forever. The alternatives were weighed:
//
//   - FIFOs read by m3sup (cio.NewCreator): output is lost, or the component
//     blocks on a full pipe, while m3sup is down — and containers outlive it.
//   - containerd's binary:// log driver: the shim starts a logging process per
//     task that outlives m3sup, but then that process must be the m3sup binary
//     at a stable path for the task's whole life, its settings are frozen at
//     task creation, and a logger that dies takes the component's output with it.
//   - copytruncate (chosen): m3sup copies the live file to NAME.1 and
//     truncates the live file to zero. Because the shim's descriptor is
//     O_APPEND, its next write lands at the new end, offset 0: no hole, no
//     sparse file (tested in this package with a writer in another process,
//     and end to end with the real shim in e2e's TestE2ELogRotation).
//
// What copytruncate can lose: bytes the component writes between the copy
// reaching the end of the file and the truncate (microseconds; a line cut
// there loses its tail), and nothing else. Rotation is checked every few
// seconds, so a file may exceed the cap by what is written in that time.
//
// # Files
//
// For a live file NAME with Policy{MaxSize, MaxFiles, Compress}: NAME is
// rotated once it reaches MaxSize; NAME.1 is the newest rotated file (never
// compressed, so readers can continue into it), NAME.2 … NAME.<MaxFiles-1>
// older ones, gzipped (NAME.2.gz …) when Compress is set. At most MaxFiles
// files exist, the live one included; MaxFiles 1 truncates without keeping
// anything. A rotation's steps, in order: delete what falls off the end,
// rename NAME.k to NAME.k+1 from the oldest down, copy NAME to a temporary
// file, truncate NAME, rename the copy to NAME.1, gzip NAME.2. The truncate
// comes before NAME.1 appears so that a reader that sees a new NAME.1 knows
// the live file was already truncated (Follower relies on that).
//
// Decide is the pure part: given the policy, the live file's size and the
// rotated files present, it returns the plan; Rotate carries a plan out;
// Rotator is the run.Group actor that checks every few seconds.
//
// Import rule: the standard library and zap only.
package logrotate
