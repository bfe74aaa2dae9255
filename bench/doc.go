// Package bench holds m3sup's end-to-end benchmarks; it has no code of its
// own, only benchmarks (`make bench`, figures in BENCHMARKS.md):
//
//   - BenchmarkTimeToReady: `m3sup run` from an empty data dir with a warm
//     artifact cache until its /readyz answers 200, next to a baseline that
//     starts the same m3dbnode and m3coordinator binaries directly (no
//     containers) against a plain etcd and performs M3's set-up steps with
//     tight polling. Both run in the same `go test -bench` process; with
//     -count N the two alternate, so noise hits both.
//   - BenchmarkIdleRSS: m3sup's resident memory (embedded etcd included)
//     after 20 s idle with a ready single-node cluster.
//   - BenchmarkBinarySize: the stripped static m3sup binary.
//
// The first two need root, containerd, runc and M3SUP_E2E_RELEASE (the M3
// release tarball); without them they skip.
package bench
