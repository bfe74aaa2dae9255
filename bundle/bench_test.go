package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

const benchSize = 64 << 20

// BenchmarkFetchLoopback downloads 64 MiB over loopback HTTP into an empty
// cache each iteration: transfer, sha256, fsync and commit.
func BenchmarkFetchLoopback(b *testing.B) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), benchSize/16)
	srv := newFileServer(b, map[string][]byte{"/big.tar.gz": payload})
	src := Source{URL: srv.URL + "/big.tar.gz", Checksum: string(digestOf(payload))}
	base := b.TempDir()
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(base, "cache")
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		c, err := OpenCache(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := c.Fetch(context.Background(), src)
		if err != nil {
			b.Fatal(err)
		}
		if !res.Downloaded {
			b.Fatal("not downloaded")
		}
	}
}

// BenchmarkFetchCached measures the cache-hit path, which re-hashes the
// stored 64 MiB artifact every time.
func BenchmarkFetchCached(b *testing.B) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), benchSize/16)
	srv := newFileServer(b, map[string][]byte{"/big.tar.gz": payload})
	src := Source{URL: srv.URL + "/big.tar.gz", Checksum: string(digestOf(payload))}
	c, _ := testCache(b, Options{})
	if _, err := c.Fetch(context.Background(), src); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := c.Fetch(context.Background(), src)
		if err != nil {
			b.Fatal(err)
		}
		if res.Downloaded {
			b.Fatal("downloaded again")
		}
	}
	b.StopTimer()
	if n := srv.requests.Load(); n != 1 {
		b.Fatalf("%d requests, want 1", n)
	}
}
