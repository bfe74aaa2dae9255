package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/runtime"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// LabelImageDigest records, on an image-mode container, the manifest digest
// its image reference resolved to; being part of the spec hash, a tag that
// moves restarts the component on the next pull.
const LabelImageDigest = "io.m3sup.image-digest"

// images of the components of c that run in image mode, in a stable order.
func componentImages(c spec.Cluster) []string {
	var refs []string
	for _, ref := range []string{c.DBNode.Image, c.Coordinator.Image} {
		if ref != "" && (len(refs) == 0 || refs[0] != ref) {
			refs = append(refs, ref)
		}
	}
	return refs
}

// needsRelease reports whether some component runs the release's binaries.
func needsRelease(c spec.Cluster) bool {
	return c.DBNode.Image == "" || c.Coordinator.Image == ""
}

// pullImages makes every image of c present in containerd, pulling each
// reference once per process (see image).
func (s *Supervisor) pullImages(ctx context.Context, c spec.Cluster) error {
	for _, ref := range componentImages(c) {
		if _, err := s.image(ctx, ref); err != nil {
			return err
		}
	}
	return nil
}

// image returns ref pulled through containerd with the configured
// registries, resolving it only the first time this process asks. When the
// registry cannot be reached but containerd already holds ref (an earlier
// pull, or an air-gap bundle), that copy is used.
func (s *Supervisor) image(ctx context.Context, ref string) (containerd.Image, error) {
	s.mu.Lock()
	img, ok := s.images[ref]
	rt := s.rt
	s.mu.Unlock()
	if ok {
		return img, nil
	}
	if rt == nil {
		return img, errors.New("pull image " + ref + ": the container runtime is not ready")
	}
	regs, err := s.registries()
	if err != nil {
		return img, err
	}
	img, err = rt.Pull(ctx, ref, regs)
	if err != nil {
		local, lerr := rt.Image(ctx, ref)
		if lerr != nil || ctx.Err() != nil {
			return img, fmt.Errorf("pull image %s: %w", ref, err)
		}
		s.log.Warn("cannot pull the image; using the copy containerd already holds",
			zap.String("ref", ref), zap.String("digest", local.Digest), zap.Error(err))
		img = local
	}
	s.mu.Lock()
	if s.images == nil {
		s.images = map[string]containerd.Image{}
	}
	s.images[ref] = img
	s.mu.Unlock()
	return img, nil
}

// resolvedImage returns the digest ref resolved to in this process, or ""
// if it has not been pulled yet (a dry run of a new image).
func (s *Supervisor) resolvedImage(ref string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.images[ref].Digest
}

// registries turns the config's registries section into the runtime's,
// reading password files now so that a rotated password takes effect at the
// next pull.
func (s *Supervisor) registries() (containerd.Registries, error) {
	out := make(containerd.Registries, len(s.cfg.Registries))
	for host, r := range s.cfg.Registries {
		pass := r.Password
		if r.PasswordFile != "" {
			b, err := os.ReadFile(r.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("registries.%s.passwordFile: %w", host, err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		out[host] = containerd.Registry{
			Mirrors:           r.Mirrors,
			Username:          r.Username,
			Password:          pass,
			InsecurePlainHTTP: r.InsecurePlainHTTP,
			CAFile:            r.CA,
		}
	}
	return out, nil
}

// imageSpec is a component's container in image mode: the image's snapshot
// as rootfs, the same arguments, mounts and labels as binary mode, and a
// private /tmp.
func imageSpec(name, ref, digest string, dirs map[string]string, configSum string, withData bool) runtime.Spec {
	etc := "/etc/" + name
	sp := runtime.Spec{
		ID:    name,
		Image: ref,
		Args:  []string{"/bin/" + name, "-f", etc + "/" + name + ".yml"},
		Env:   []string{"HOME=/tmp"},
		Mounts: []runtime.Mount{
			{Source: dirs["config"], Destination: etc, ReadOnly: true},
			{Source: dirs["kv"], Destination: containerKV},
			{Source: dirs["tmp"], Destination: "/tmp"},
		},
		LogPath: filepath.Join(dirs["logs"], name+".log"),
		Labels:  map[string]string{"io.m3sup.config-sha256": configSum, LabelImageDigest: digest},
	}
	if withData {
		sp.Mounts = append(sp.Mounts, runtime.Mount{Source: dirs["data"], Destination: containerData})
	}
	return sp
}
