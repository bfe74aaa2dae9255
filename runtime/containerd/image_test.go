package containerd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/m3sup/m3sup/internal/registrytest"
	goruntime "github.com/m3sup/m3sup/runtime"
)

// tinyImage builds an image holding tinyproc at /bin/tinyproc.
func tinyImage(t *testing.T) registrytest.File {
	t.Helper()
	requireHost(t)
	return registrytest.File{Source: filepath.Join(tinyDir, "tinyproc"), Path: "/bin/tinyproc"}
}

// pushTiny pushes the tinyproc image to reg as repo:tag.
func pushTiny(t *testing.T, reg *registrytest.Registry, repo, tag string) (ref, digest string) {
	t.Helper()
	img, err := registrytest.Image([]registrytest.File{tinyImage(t)}, []string{"/bin/tinyproc"}, []string{"PATH=/bin", "FROM_IMAGE=1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref, digest, err = reg.Push(ctx, repo, tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return ref, digest
}

// imageSpec is tinySpec running from image ref instead of a rootfs dir.
func imageSpec(t *testing.T, id, ref string, args ...string) (goruntime.Spec, string) {
	spec, data := tinySpec(t, id, args...)
	spec.RootFS, spec.Image = "", ref
	spec.Args = append([]string{"/bin/tinyproc"}, args...)
	return spec, data
}

// TestPullRunImage: an image pushed to a real registry on loopback (plain
// HTTP, marked so) is pulled, labelled in-use and run from its snapshot with
// the same mounts, rlimit and env as binary mode; removing the container
// removes its snapshot; a re-pull only resolves.
func TestPullRunImage(t *testing.T) {
	requireHost(t)
	reg := registrytest.Start(t, registrytest.Options{})
	r := newManaged(t)
	ref, digest := pushTiny(t, reg, "m3sup/tiny", "v1")
	regs := Registries{reg.Host: {InsecurePlainHTTP: true}}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	img, err := r.Pull(ctx, ref, regs)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	t.Logf("pull %s: %s", ref, time.Since(start))
	if img.Ref != ref || img.Digest != digest {
		t.Fatalf("pulled %+v, want %s@%s", img, ref, digest)
	}
	c, _ := r.current()
	meta, err := c.ImageService().Get(r.nsCtx(ctx), ref)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Labels[LabelInUse] != "true" {
		t.Fatalf("image labels %v, want %s=true", meta.Labels, LabelInUse)
	}
	if got, err := r.Image(ctx, ref); err != nil || got != img {
		t.Fatalf("Image(%s) = %+v, %v", ref, got, err)
	}

	spec, data := imageSpec(t, "img", ref, "-touch", "/data/hello", "-exit", "0")
	run(t, r, spec)
	exitC, err := r.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exitC, 10*time.Second); e.Code != 0 {
		t.Fatalf("exit %d", e.Code)
	}
	out, _ := os.ReadFile(spec.LogPath)
	for _, want := range []string{
		"nofile soft=" + itoa(spec.NoFile) + " hard=" + itoa(spec.NoFile),
		`args=["/bin/tinyproc" "-touch" "/data/hello" "-exit" "0"]`,
		"env TINY=yes",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(data, "hello")); err != nil || string(b) != "hello\n" {
		t.Fatalf("rw mount: %q, %v", b, err)
	}
	sn, _ := snapshotter(r.nsCtx(ctx), c)
	if _, err := c.SnapshotService(sn).Stat(r.nsCtx(ctx), spec.ID); err != nil {
		t.Fatalf("container snapshot: %v", err)
	}
	if err := r.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SnapshotService(sn).Stat(r.nsCtx(ctx), spec.ID); !errdefs.IsNotFound(native(err)) {
		t.Fatalf("snapshot after Remove: %v, want not found", err)
	}

	// A stale snapshot under the container's id does not block a new run.
	spec2, _ := imageSpec(t, "img", ref, "-sleep", "1h")
	if _, err := c.SnapshotService(sn).Prepare(r.nsCtx(ctx), spec2.ID, ""); err != nil {
		t.Fatal(err)
	}
	run(t, r, spec2)
	waitReady(t, spec2.LogPath)
	if _, err := r.Stop(ctx, spec2.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// Pulling again is cheap and gives the same digest.
	start = time.Now()
	if again, err := r.Pull(ctx, ref, regs); err != nil || again != img {
		t.Fatalf("re-pull: %+v, %v", again, err)
	}
	t.Logf("re-pull: %s", time.Since(start))
}

// TestPullPlainHTTPOnlyWhenMarked: a loopback registry that is not marked
// insecurePlainHTTP is reached over HTTPS only, and the pull fails.
func TestPullPlainHTTPOnlyWhenMarked(t *testing.T) {
	requireHost(t)
	reg := registrytest.Start(t, registrytest.Options{})
	r := newManaged(t)
	ref, _ := pushTiny(t, reg, "m3sup/tiny", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := r.Pull(ctx, ref, nil)
	if err == nil || !strings.Contains(err.Error(), "https://"+reg.Host) && !strings.Contains(strings.ToLower(err.Error()), "http response to https") {
		t.Fatalf("pull over unmarked plain HTTP: %v, want an HTTPS failure", err)
	}
	if _, err := r.Image(ctx, ref); !errors.Is(err, goruntime.ErrNotFound) {
		t.Fatalf("Image after failed pull: %v, want ErrNotFound", err)
	}
}

// TestPullMirrorAndCredentials: a registry host that does not exist is
// served by its mirror, a real registry that demands credentials.
func TestPullMirrorAndCredentials(t *testing.T) {
	requireHost(t)
	reg := registrytest.Start(t, registrytest.Options{Username: "robot", Password: "s3cret"})
	r := newManaged(t)
	_, digest := pushTiny(t, reg, "m3db/tiny", "v2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ref := "registry.invalid/m3db/tiny:v2"
	noCreds := Registries{
		"registry.invalid": {Mirrors: []string{reg.Host}},
		reg.Host:           {InsecurePlainHTTP: true},
	}
	if _, err := r.Pull(ctx, ref, noCreds); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	withCreds := Registries{
		"registry.invalid": {Mirrors: []string{reg.Host}},
		reg.Host:           {InsecurePlainHTTP: true, Username: "robot", Password: "s3cret"},
	}
	img, err := r.Pull(ctx, ref, withCreds)
	if err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	if img.Ref != ref || img.Digest != digest {
		t.Fatalf("pulled %+v, want %s@%s", img, ref, digest)
	}
}

// TestImportArchive: a docker-save archive is imported, unpacked, labelled
// and runnable.
func TestImportArchive(t *testing.T) {
	r := newManaged(t)
	img, err := registrytest.Image([]registrytest.File{tinyImage(t)}, []string{"/bin/tinyproc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "bundle.local/m3sup/tiny:v3"
	archive := filepath.Join(t.TempDir(), "tiny.tar")
	if err := registrytest.WriteArchive(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	refs, err := r.ImportArchive(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0] != ref {
		t.Fatalf("imported %v, want [%s]", refs, ref)
	}
	c, _ := r.current()
	meta, err := c.ImageService().Get(r.nsCtx(ctx), ref)
	if err != nil || meta.Labels[LabelInUse] != "true" {
		t.Fatalf("imported image %+v, %v", meta, err)
	}
	spec, _ := imageSpec(t, "imported", ref, "-exit", "3")
	run(t, r, spec)
	exitC, err := r.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exitC, 10*time.Second); e.Code != 3 {
		t.Fatalf("exit %d, want 3", e.Code)
	}
}

func TestRunMissingImage(t *testing.T) {
	r := newManaged(t)
	spec, _ := imageSpec(t, "missing", "registry.invalid/none:v1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Run(ctx, spec); !errors.Is(err, goruntime.ErrNotFound) {
		t.Fatalf("run a missing image: %v, want ErrNotFound", err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
