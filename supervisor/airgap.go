package supervisor

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/bundle"
)

// importBundles imports the bundles given with --bundle before anything is
// fetched, and points the release at the bundled artifact's digest so the
// fetch is a cache hit with every network source unreachable. When a bundle
// carries containerd and the host has none, it returns the bundled binary and
// the directories holding its shim and runc.
func (s *Supervisor) importBundles(ctx context.Context, lay layout) (ctdBinary string, pathDirs []string, err error) {
	if len(s.opts.Bundles) == 0 {
		return "", nil, nil
	}
	cache, err := bundle.OpenCache(lay.cache(), bundle.Options{Logger: s.log.Named("bundle")})
	if err != nil {
		return "", nil, err
	}
	_, hostErr := exec.LookPath(s.cfg.Runtime.Containerd.Binary)
	for _, f := range s.opts.Bundles {
		res, err := cache.ImportBundle(ctx, f, bundle.VerifyOptions{TrustedKeys: s.opts.TrustedKeys})
		if err != nil {
			return "", nil, err // names the bundle and what is wrong
		}
		// ImportBundle refuses binaries and images from a bundle no trusted
		// key signed; check again where they are used.
		trusted := res.Bundle.Trusted()
		if hostErr != nil && trusted {
			for _, b := range res.Binaries {
				pathDirs = append(pathDirs, filepath.Dir(b.Path))
				if b.Member.Name() == "containerd" {
					ctdBinary = b.Path
					s.log.Info("this host has no containerd: using the bundled one", zap.String("path", b.Path))
				}
			}
		}
		if trusted {
			for _, img := range res.Images {
				s.bundledImages = append(s.bundledImages, img.Path)
			}
		}
		s.log.Info("imported air-gap bundle", zap.String("file", f), zap.Int("releases", len(res.Releases)),
			zap.Int("images", len(res.Images)), zap.Int("binaries", len(res.Binaries)),
			zap.String("signature", string(res.Bundle.Signature)), zap.String("signed_by", res.Bundle.SignedBy))
		if r, ok := res.Release(s.cfg.Release.Version); ok {
			s.cfg.Release.Checksum = string(r.Member.Digest())
			s.log.Info("using the bundled M3 release", zap.String("version", s.cfg.Release.Version), zap.String("digest", string(r.Member.Digest())))
			continue
		}
		return "", nil, fmt.Errorf("bundle %s carries no M3 %s release (release.version)", f, s.cfg.Release.Version)
	}
	return ctdBinary, pathDirs, nil
}

// watchBundles imports bundles dropped into <dataDir>/bundles while running.
func (s *Supervisor) watchBundles(ctx context.Context, lay layout) error {
	cache, err := bundle.OpenCache(lay.cache(), bundle.Options{Logger: s.log.Named("bundle")})
	if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.DataDir, "bundles")
	return cache.WatchBundles(ctx, dir, bundle.WatchOptions{Verify: bundle.VerifyOptions{TrustedKeys: s.opts.TrustedKeys}},
		func(res bundle.ImportResult, err error) {
			if err != nil {
				s.log.Error("refused air-gap bundle", zap.Error(err))
				return
			}
			versions := []string{}
			for _, r := range res.Releases {
				versions = append(versions, r.Member.Version)
			}
			s.log.Info("imported air-gap bundle", zap.String("file", res.Path), zap.Strings("releases", versions),
				zap.Int("images", len(res.Images)), zap.Int("written", res.Written))
			if !res.Bundle.Trusted() {
				return // ImportBundle refuses images from an untrusted bundle; never import one anyway
			}
			for _, img := range res.Images {
				s.importImage(ctx, img.Path)
			}
		})
}

// importImages hands the image archives of bundles imported at start to
// containerd, once it runs.
func (s *Supervisor) importImages(ctx context.Context) {
	for _, p := range s.bundledImages {
		s.importImage(ctx, p)
	}
}

func (s *Supervisor) importImage(ctx context.Context, path string) {
	s.mu.Lock()
	rt := s.rt
	s.mu.Unlock()
	if rt == nil {
		return
	}
	refs, err := rt.ImportArchive(ctx, path)
	if err != nil {
		s.log.Error("import bundled image archive into containerd", zap.String("archive", path), zap.Error(err))
		return
	}
	s.log.Info("imported bundled images into containerd", zap.Strings("images", refs))
}
