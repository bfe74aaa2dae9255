package bundle

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const bundleBenchSize = 96 << 20

// BenchmarkBundleImport imports a bundle holding a 96 MiB synthetic release
// (random bytes: a real release is compressed, so incompressible) into an
// empty cache each iteration — one read of the bundle, sha256 of the file
// and of each member, a copy into tmp/, fsync and rename — and, in the same
// run, times `tar xf` of the same bundle into an empty directory (no
// hashing, no fsync). It reports both rates and import's time as a multiple
// of tar's.
func BenchmarkBundleImport(b *testing.B) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		b.Skip("no tar")
	}
	base := b.TempDir()
	payload := make([]byte, bundleBenchSize)
	rng := rand.NewChaCha8([32]byte{'m', '3'})
	_, _ = rng.Read(payload)
	rel := filepath.Join(base, "m3_1.5.0_linux_amd64.tar.gz")
	if err := os.WriteFile(rel, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	maker, err := OpenCache(filepath.Join(base, "maker"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	bundlePath := filepath.Join(base, "bench.m3sup")
	out, err := os.Create(bundlePath)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Create(context.Background(), out, CreateOptions{
		Cache: maker, M3Version: "1.5.0",
		Releases: []Source{{URL: rel, Checksum: string(digestOf(payload))}},
	}); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	// Warm the page cache for both contenders.
	if _, err := VerifyFile(context.Background(), bundlePath, VerifyOptions{}); err != nil {
		b.Fatal(err)
	}

	var importTime, tarTime time.Duration
	b.SetBytes(bundleBenchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cacheDir := filepath.Join(base, "cache")
		tarDir := filepath.Join(base, "tar")
		for _, d := range []string{cacheDir, tarDir} {
			_ = os.Chmod(filepath.Join(d, "sha256"), 0o755)
			if err := os.RemoveAll(d); err != nil {
				b.Fatal(err)
			}
		}
		c, err := OpenCache(cacheDir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(tarDir, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		start := time.Now()
		res, err := c.ImportBundle(context.Background(), bundlePath, VerifyOptions{})
		importTime += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if res.Written != 1 {
			b.Fatalf("import wrote %d files", res.Written)
		}

		b.StopTimer()
		start = time.Now()
		if out, err := exec.Command(tarBin, "xf", bundlePath, "-C", tarDir).CombinedOutput(); err != nil {
			b.Fatalf("tar xf: %v: %s", err, out)
		}
		tarTime += time.Since(start)
		b.StartTimer()
	}
	b.StopTimer()
	mib := float64(bundleBenchSize) / (1 << 20)
	n := float64(b.N)
	b.ReportMetric(mib/(importTime.Seconds()/n), "import-MiB/s")
	b.ReportMetric(mib/(tarTime.Seconds()/n), "tar-xf-MiB/s")
	b.ReportMetric(float64(tarTime.Nanoseconds())/n, "tar-xf-ns/op")
	b.ReportMetric(importTime.Seconds()/tarTime.Seconds(), "import/tar-xf")
}
