package supervisor

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/runtime/containerd"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/render"
	"github.com/m3sup/m3sup/supervisor/spec"
)

// artifacts owns what this host fetches to run M3: the releases (fetched,
// verified and unpacked once per release spec), the images (pulled through
// containerd once per reference) and the air-gap bundles that may carry
// both. Its mutex guards only its caches and the runtime it pulls through.
type artifacts struct {
	cfg         config.Config
	bundles     []string
	trustedKeys []ed25519.PublicKey
	progress    io.Writer
	log         *zap.Logger
	metrics     *metrics

	mu sync.Mutex
	// rt pulls images and imports bundled ones; nil until it runs.
	rt *containerd.Runtime
	// releases remembers fetched releases by their spec, so a reconcile
	// that does not change the release does no I/O for it.
	releases map[spec.Release]render.Release
	// images remembers pulled images by reference (image mode), so a
	// reconcile resolves each reference once per process.
	images map[string]containerd.Image
	// bundled are image archives from --bundle files, for containerd.
	bundled []string
}

func newArtifacts(opts Options, m *metrics) *artifacts {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &artifacts{cfg: opts.Config, bundles: opts.Bundles, trustedKeys: opts.TrustedKeys,
		progress: opts.Progress, log: log, metrics: m}
}

func (a *artifacts) cacheDir() string { return layout{root: a.cfg.DataDir}.cache() }

// setRuntime hands the artifacts the running container runtime and imports
// the image archives of the bundles imported at start.
func (a *artifacts) setRuntime(ctx context.Context, rt *containerd.Runtime) {
	a.mu.Lock()
	a.rt = rt
	bundled := a.bundled
	a.mu.Unlock()
	for _, p := range bundled {
		a.importImage(ctx, p)
	}
}

// fetch makes what desired needs present: its release (only when a
// component runs the release's binaries) and its images.
func (a *artifacts) fetch(ctx context.Context, desired spec.Cluster) (render.Release, error) {
	rel, err := a.release(ctx, desired.Release, needsRelease(desired))
	if err != nil {
		return rel, err
	}
	return rel, a.pullImages(ctx, desired)
}

// cachedRelease returns the release of r if this process fetched it.
func (a *artifacts) cachedRelease(r spec.Release) (render.Release, bool) {
	if a == nil {
		return render.Release{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	rel, ok := a.releases[r]
	return rel, ok
}

// release returns the fetched and unpacked release for r, fetching it only
// when this process has not done so yet. When no component needs the
// binaries (every one runs an image) nothing is fetched: the release then
// only names the version.
func (a *artifacts) release(ctx context.Context, r spec.Release, need bool) (render.Release, error) {
	rel, ok := a.cachedRelease(r)
	if ok && (rel.Dir != "" || !need) {
		return rel, nil
	}
	var err error
	if need {
		rel, err = a.fetchRelease(ctx, r)
	} else {
		rel = render.Release{Version: r.Version}
	}
	if err != nil {
		return rel, err
	}
	a.mu.Lock()
	if a.releases == nil {
		a.releases = map[spec.Release]render.Release{}
	}
	a.releases[r] = rel
	a.mu.Unlock()
	return rel, nil
}

func (a *artifacts) fetchRelease(ctx context.Context, r spec.Release) (render.Release, error) {
	cache, err := bundle.OpenCache(a.cacheDir(), bundle.Options{Logger: a.log.Named("fetch"), Progress: a.progress,
		MaxDownload: a.cfg.Release.MaxDownloadBytes})
	if err != nil {
		return render.Release{}, err
	}
	if r.InsecureSkipChecksum {
		a.log.Warn("INSECURE: fetching the M3 release WITHOUT checksum verification (release.insecureSkipChecksum)")
	}
	start := time.Now()
	res, err := cache.Fetch(ctx, bundle.Source{URL: r.URL, Checksum: r.Checksum, InsecureSkipChecksum: r.InsecureSkipChecksum})
	if err != nil {
		return render.Release{}, fmt.Errorf("fetch M3 release %s: %w", r.Version, err)
	}
	a.metrics.fetchTime.Observe(time.Since(start).Seconds())
	if res.Downloaded {
		a.metrics.fetchBytes.Add(float64(res.Bytes))
		a.log.Info("downloaded M3 release", zap.String("version", r.Version), zap.String("digest", string(res.Digest)),
			zap.Int64("bytes", res.Bytes), zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	} else {
		a.log.Info("M3 release found in cache", zap.String("version", r.Version), zap.String("digest", string(res.Digest)))
	}
	dir, err := cache.Unpack(ctx, res.Digest)
	if err != nil {
		return render.Release{}, fmt.Errorf("unpack M3 release %s: %w", r.Version, err)
	}
	return unpackedRelease(r.Version, string(res.Digest), dir), nil
}

// unpackedRelease is the release unpacked in dir, with the binaries it has.
func unpackedRelease(version, digest, dir string) render.Release {
	rel := render.Release{Version: version, Digest: digest, Dir: dir, Binaries: map[string]string{}}
	for _, name := range []string{DBNode, Coordinator} {
		if bin, err := findBinary(dir, name); err == nil {
			rel.Binaries[name] = bin
		}
	}
	return rel
}

// findBinary finds name at the top of an unpacked release or one directory
// down (goreleaser's m3_<v>_linux_amd64/ wrapper).
func findBinary(dir, name string) (string, error) {
	candidates := []string{filepath.Join(dir, name)}
	more, _ := filepath.Glob(filepath.Join(dir, "*", name))
	candidates = append(candidates, more...)
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("no executable %s in the release archive", name)
}

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
func (a *artifacts) pullImages(ctx context.Context, c spec.Cluster) error {
	for _, ref := range componentImages(c) {
		if _, err := a.image(ctx, ref); err != nil {
			return err
		}
	}
	return nil
}

// image returns ref pulled through containerd with the configured
// registries, resolving it only the first time this process asks. When the
// registry cannot be reached but containerd already holds ref (an earlier
// pull, or an air-gap bundle), that copy is used.
func (a *artifacts) image(ctx context.Context, ref string) (containerd.Image, error) {
	a.mu.Lock()
	img, ok := a.images[ref]
	rt := a.rt
	a.mu.Unlock()
	if ok {
		return img, nil
	}
	if rt == nil {
		return img, errors.New("pull image " + ref + ": the container runtime is not ready")
	}
	regs, err := a.registries()
	if err != nil {
		return img, err
	}
	img, err = rt.Pull(ctx, ref, regs)
	if err != nil {
		local, lerr := rt.Image(ctx, ref)
		if lerr != nil || ctx.Err() != nil {
			return img, fmt.Errorf("pull image %s: %w", ref, err)
		}
		a.log.Warn("cannot pull the image; using the copy containerd already holds",
			zap.String("ref", ref), zap.String("digest", local.Digest), zap.Error(err))
		img = local
	}
	a.mu.Lock()
	if a.images == nil {
		a.images = map[string]containerd.Image{}
	}
	a.images[ref] = img
	a.mu.Unlock()
	return img, nil
}

// resolvedImages maps every reference pulled in this process to the digest
// it resolved to; one not pulled yet (a dry run of a new image) is missing.
func (a *artifacts) resolvedImages() map[string]string {
	out := map[string]string{}
	if a == nil {
		return out
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for ref, img := range a.images {
		out[ref] = img.Digest
	}
	return out
}

// registries turns the config's registries section into the runtime's,
// reading password files now so that a rotated password takes effect at the
// next pull.
func (a *artifacts) registries() (containerd.Registries, error) {
	out := make(containerd.Registries, len(a.cfg.Registries))
	for host, r := range a.cfg.Registries {
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

// bundled is what the --bundle files brought that the daemon uses beyond
// the cache: a containerd for a host without one, and the release's digest.
type bundled struct {
	// ctdBinary is the bundled containerd, pathDirs the directories
	// holding its shim and runc; empty when the host has its own.
	ctdBinary string
	pathDirs  []string
	// releaseChecksum is the digest of the bundled release.version, for
	// the config's release.checksum; empty without bundles.
	releaseChecksum string
}

// importBundles imports the bundles given with --bundle before anything is
// fetched; the release's checksum it returns makes the fetch a cache hit
// with every network source unreachable. When a bundle carries containerd
// and the host has none, it returns the bundled binary and the directories
// holding its shim and runc.
func (a *artifacts) importBundles(ctx context.Context) (bundled, error) {
	var out bundled
	if len(a.bundles) == 0 {
		return out, nil
	}
	cache, err := bundle.OpenCache(a.cacheDir(), bundle.Options{Logger: a.log.Named("bundle")})
	if err != nil {
		return out, err
	}
	_, hostErr := exec.LookPath(a.cfg.Runtime.Containerd.Binary)
	for _, f := range a.bundles {
		res, err := cache.ImportBundle(ctx, f, bundle.VerifyOptions{TrustedKeys: a.trustedKeys})
		if err != nil {
			return bundled{}, err // names the bundle and what is wrong
		}
		// ImportBundle refuses binaries and images from a bundle no trusted
		// key signed; check again where they are used.
		trusted := res.Bundle.Trusted()
		if hostErr != nil && trusted {
			for _, b := range res.Binaries {
				out.pathDirs = append(out.pathDirs, filepath.Dir(b.Path))
				if b.Member.Name() == "containerd" {
					out.ctdBinary = b.Path
					a.log.Info("this host has no containerd: using the bundled one", zap.String("path", b.Path))
				}
			}
		}
		if trusted {
			a.mu.Lock()
			for _, img := range res.Images {
				a.bundled = append(a.bundled, img.Path)
			}
			a.mu.Unlock()
		}
		a.log.Info("imported air-gap bundle", zap.String("file", f), zap.Int("releases", len(res.Releases)),
			zap.Int("images", len(res.Images)), zap.Int("binaries", len(res.Binaries)),
			zap.String("signature", string(res.Bundle.Signature)), zap.String("signed_by", res.Bundle.SignedBy))
		if r, ok := res.Release(a.cfg.Release.Version); ok {
			out.releaseChecksum = string(r.Member.Digest())
			a.log.Info("using the bundled M3 release", zap.String("version", a.cfg.Release.Version), zap.String("digest", string(r.Member.Digest())))
			continue
		}
		return bundled{}, fmt.Errorf("bundle %s carries no M3 %s release (release.version)", f, a.cfg.Release.Version)
	}
	return out, nil
}

// watchBundles imports bundles dropped into <dataDir>/bundles while running.
func (a *artifacts) watchBundles(ctx context.Context) error {
	cache, err := bundle.OpenCache(a.cacheDir(), bundle.Options{Logger: a.log.Named("bundle")})
	if err != nil {
		return err
	}
	dir := filepath.Join(a.cfg.DataDir, "bundles")
	return cache.WatchBundles(ctx, dir, bundle.WatchOptions{Verify: bundle.VerifyOptions{TrustedKeys: a.trustedKeys}},
		func(res bundle.ImportResult, err error) {
			if err != nil {
				a.log.Error("refused air-gap bundle", zap.Error(err))
				return
			}
			versions := []string{}
			for _, r := range res.Releases {
				versions = append(versions, r.Member.Version)
			}
			a.log.Info("imported air-gap bundle", zap.String("file", res.Path), zap.Strings("releases", versions),
				zap.Int("images", len(res.Images)), zap.Int("written", res.Written))
			if !res.Bundle.Trusted() {
				return // ImportBundle refuses images from an untrusted bundle; never import one anyway
			}
			for _, img := range res.Images {
				a.importImage(ctx, img.Path)
			}
		})
}

func (a *artifacts) importImage(ctx context.Context, path string) {
	a.mu.Lock()
	rt := a.rt
	a.mu.Unlock()
	if rt == nil {
		return
	}
	refs, err := rt.ImportArchive(ctx, path)
	if err != nil {
		a.log.Error("import bundled image archive into containerd", zap.String("archive", path), zap.Error(err))
		return
	}
	a.log.Info("imported bundled images into containerd", zap.Strings("images", refs))
}
