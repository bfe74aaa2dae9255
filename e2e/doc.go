// Package e2e holds m3sup's end-to-end tests; it has no code of its own,
// only tests (`make e2e`). Each test runs the real thing: the m3sup binary
// (built once by TestMain, with -race when the tests run with -race, or the
// one named by M3SUP_BIN), its embedded etcd, a managed containerd, runc and
// the M3 binaries of the release tarball named by M3SUP_E2E_RELEASE, served
// over a local HTTP server. Multi-host tests start three to five hosts on
// 127.0.0.2–6.
//
// They need root, containerd, runc and the tarball; without them they skip,
// except under CI=true where they fail. Every test uses its own temporary
// data dirs, loopback ports and containerd namespace, and ends every process
// it started. Run one at a time with e.g.
//
//	M3SUP_E2E_RELEASE=$PWD/.cache/m3-release/m3_1.5.0_linux_amd64.tar.gz \
//	  go test -race -count=1 -run TestE2ESingleNode ./e2e/
//
// BenchmarkThreeHosts (the multi-host figures of BENCHMARKS.md) lives here
// too, for it uses the same hosts; `make bench` runs it.
package e2e
