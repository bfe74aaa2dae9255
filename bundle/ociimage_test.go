package bundle_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/internal/registrytest"
)

// TestPullImageArchive pulls a real image from a real registry (on
// loopback, plain HTTP) into an archive, and refuses plain HTTP unless asked.
func TestPullImageArchive(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	payload := filepath.Join(dir, "hello")
	if err := os.WriteFile(payload, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.Image([]registrytest.File{{Source: payload, Path: "/bin/hello"}}, []string{"/bin/hello"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref, digest, err := reg.Push(ctx, "m3db/hello", "v1", img)
	if err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "hello.tar")
	if _, err := bundle.PullImageArchive(ctx, ref, dst, bundle.ImagePullOptions{}); !errors.Is(err, bundle.ErrFetch) {
		t.Fatalf("plain HTTP without PlainHTTP: %v, want a refused fetch", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("a refused pull left an archive behind")
	}
	d, err := bundle.PullImageArchive(ctx, ref, dst, bundle.ImagePullOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(d) != digest {
		t.Fatalf("digest %s, want %s", d, digest)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "manifest.json") {
		t.Fatalf("archive has no manifest.json: %v", names)
	}
}
