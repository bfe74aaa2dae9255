package supervisor

import (
	"os"
	"slices"
	"testing"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/config"
)

// TestRenderImageMode: a component with an image renders to a Spec that
// runs the image (no rootfs, no binary mount) with binary mode's arguments
// and mounts, and its hash follows the resolved digest, not just the tag.
func TestRenderImageMode(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.DBNode.Image = "quay.io/m3db/m3dbnode:v1.5.0"
	s := New(Options{Config: cfg})
	desired := SpecFromConfig(cfg)
	if desired.DBNode.Image != cfg.DBNode.Image || desired.Coordinator.Image != "" {
		t.Fatalf("spec images: %q, %q", desired.DBNode.Image, desired.Coordinator.Image)
	}
	if !needsRelease(desired) {
		t.Fatal("the coordinator still runs the release binary")
	}
	lay := layout{root: cfg.DataDir}
	rel := release{Version: "1.5.0", Dir: t.TempDir()}
	writeExecutable(t, rel.Dir+"/m3coordinator")

	s.images = map[string]containerd.Image{cfg.DBNode.Image: {Ref: cfg.DBNode.Image, Digest: "sha256:aaaa"}}
	r, err := s.render(lay, desired, nil, rel, "127.0.0.1:2379")
	if err != nil {
		t.Fatal(err)
	}
	db, co := r.comps[0], r.comps[1]
	if db.Spec.Image != cfg.DBNode.Image || db.Spec.RootFS != "" {
		t.Fatalf("dbnode spec: image %q rootfs %q", db.Spec.Image, db.Spec.RootFS)
	}
	if want := []string{"/bin/m3dbnode", "-f", "/etc/m3dbnode/m3dbnode.yml"}; !slices.Equal(db.Spec.Args, want) {
		t.Fatalf("args %q, want %q", db.Spec.Args, want)
	}
	dests := map[string]runtime.Mount{}
	for _, m := range db.Spec.Mounts {
		dests[m.Destination] = m
	}
	for dest, ro := range map[string]bool{"/etc/m3dbnode": true, containerKV: false, containerData: false, "/tmp": false} {
		if m, ok := dests[dest]; !ok || m.ReadOnly != ro {
			t.Errorf("mount %s: %+v (present %v), want read-only %v", dest, m, ok, ro)
		}
	}
	if _, ok := dests["/bin/m3dbnode"]; ok {
		t.Error("image mode bind-mounts the release binary")
	}
	if db.Spec.NoFile == 0 || db.Spec.Labels[LabelImageDigest] != "sha256:aaaa" {
		t.Errorf("nofile %d, labels %v", db.Spec.NoFile, db.Spec.Labels)
	}
	if co.Spec.Image != "" || co.Spec.RootFS == "" {
		t.Fatalf("coordinator should stay in binary mode: %+v", co.Spec)
	}

	// The tag now points elsewhere: only m3dbnode's hash changes.
	s.images[cfg.DBNode.Image] = containerd.Image{Ref: cfg.DBNode.Image, Digest: "sha256:bbbb"}
	r2, err := s.render(lay, desired, nil, rel, "127.0.0.1:2379")
	if err != nil {
		t.Fatal(err)
	}
	if r2.comps[0].Hash == db.Hash {
		t.Error("m3dbnode's hash ignores the image digest")
	}
	if r2.comps[1].Hash != co.Hash {
		t.Error("m3coordinator's hash changed with m3dbnode's image")
	}
}

func TestComponentImages(t *testing.T) {
	cfg := config.Default()
	c := SpecFromConfig(cfg)
	if refs := componentImages(c); len(refs) != 0 || !needsRelease(c) {
		t.Fatalf("binary mode: %v, needsRelease %v", refs, needsRelease(c))
	}
	c.DBNode.Image, c.Coordinator.Image = "quay.io/m3db/m3:v1", "quay.io/m3db/m3:v1"
	if refs := componentImages(c); !slices.Equal(refs, []string{"quay.io/m3db/m3:v1"}) || needsRelease(c) {
		t.Fatalf("image mode: %v, needsRelease %v", refs, needsRelease(c))
	}
}

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}
