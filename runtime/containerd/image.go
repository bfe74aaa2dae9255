package containerd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"go.uber.org/zap"

	goruntime "github.com/m3sup/m3sup/runtime"
)

// LabelInUse marks an image m3sup runs or may run. containerd keeps every
// named image and the content and snapshots it references; the label tells
// people and pruning tools that m3sup relies on it, and the containers m3sup
// creates from it hold its snapshot chain as well.
const LabelInUse = "io.m3sup.in-use"

// pullLease bounds the lease that protects content while a pull or an import
// is in flight, should m3sup die before releasing it.
const pullLease = time.Hour

// Registry configures how images are pulled from one registry host.
type Registry struct {
	// Mirrors are tried in order before the registry itself, each as
	// host[:port][/path] with no scheme. A mirror's own entry in Registries
	// (if any) gives its scheme, credentials and CA.
	Mirrors []string
	// Username and Password are basic credentials (also used to obtain a
	// bearer token when the registry asks for one).
	Username, Password string
	// InsecurePlainHTTP talks plain HTTP to this host. Without it, only
	// HTTPS is used, loopback included.
	InsecurePlainHTTP bool
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
}

// Registries maps a registry host ("quay.io", "127.0.0.1:5000") to its
// settings. Hosts without an entry are reached over HTTPS, anonymously
// (docker.io through registry-1.docker.io).
type Registries map[string]Registry

// Image is an image the daemon holds: the name it is stored under and the
// digest of the manifest (or index) the name points to.
type Image struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// hosts returns the resolver's host configuration. It reads CA files now,
// so that a bad file fails the pull with its name.
func (regs Registries) hosts() (docker.RegistryHosts, error) {
	clients := map[string]*http.Client{}
	for host, reg := range regs {
		if reg.CAFile == "" {
			continue
		}
		pem, err := os.ReadFile(reg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry %s: read CA: %w", host, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry %s: CA %s holds no PEM certificate", host, reg.CAFile)
		}
		clients[host] = &http.Client{Transport: docker.DefaultHTTPTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}
	}
	// endpoint is one host to contact, configured by its own entry.
	endpoint := func(hostPath string, caps docker.HostCapabilities) docker.RegistryHost {
		host, path, _ := strings.Cut(hostPath, "/")
		reg := regs[host]
		c := clients[host]
		if c == nil {
			c = &http.Client{Transport: docker.DefaultHTTPTransport(nil)}
		}
		scheme := "https"
		if reg.InsecurePlainHTTP {
			scheme = "http"
		}
		urlPath := "/v2"
		if path = strings.Trim(path, "/"); path != "" {
			urlPath = "/" + path + "/v2"
		}
		user, pass := reg.Username, reg.Password
		auth := docker.NewDockerAuthorizer(docker.WithAuthClient(c),
			docker.WithAuthCreds(func(string) (string, string, error) { return user, pass, nil }))
		return docker.RegistryHost{Client: c, Authorizer: auth, Host: host, Scheme: scheme, Path: urlPath, Capabilities: caps}
	}
	return func(host string) ([]docker.RegistryHost, error) {
		var out []docker.RegistryHost
		for _, m := range regs[host].Mirrors {
			out = append(out, endpoint(m, docker.HostCapabilityPull|docker.HostCapabilityResolve))
		}
		self := endpoint(host, docker.HostCapabilityPull|docker.HostCapabilityResolve|docker.HostCapabilityPush)
		if host == "docker.io" {
			self.Host = "registry-1.docker.io"
		}
		return append(out, self), nil
	}, nil
}

// Pull fetches ref through the daemon's content store (mirrors first, as
// regs says), unpacks it for this platform into the default snapshotter and
// labels it LabelInUse. A lease protects the content while it arrives.
// Pulling an image that is already present only resolves its name again.
func (r *Runtime) Pull(ctx context.Context, ref string, regs Registries) (Image, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	hosts, err := regs.hosts()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	ctx, done, err := c.WithLease(ctx, leaseOpts()...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: take a lease: %w", ref, err)
	}
	defer done(context.WithoutCancel(ctx)) //nolint:errcheck // the lease expires anyway

	start := time.Now()
	img, err := c.Pull(ctx, ref,
		client.WithPullUnpack,
		client.WithResolver(docker.NewResolver(docker.ResolverOptions{Hosts: hosts})),
		client.WithPullLabel(LabelInUse, "true"),
	)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, native(err))
	}
	out := Image{Ref: img.Name(), Digest: img.Target().Digest.String()}
	r.log.Info("image pulled", zap.String("ref", out.Ref), zap.String("digest", out.Digest),
		zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	return out, nil
}

// Image returns an image the daemon already holds; a missing one gives an
// error wrapping runtime.ErrNotFound.
func (r *Runtime) Image(ctx context.Context, ref string) (Image, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	img, err := c.ImageService().Get(ctx, ref)
	if err = native(err); errdefs.IsNotFound(err) {
		return Image{}, fmt.Errorf("image %s: %w", ref, goruntime.ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return Image{Ref: img.Name, Digest: img.Target.Digest.String()}, nil
}

// ImportArchive imports an image archive (docker save or OCI layout tar) of
// this platform, unpacks every image it names and labels them LabelInUse.
// It returns the names of the imported images.
func (r *Runtime) ImportArchive(ctx context.Context, path string) ([]string, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.current()
	if err != nil {
		return nil, fmt.Errorf("import image archive %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	defer f.Close()
	ctx, done, err := c.WithLease(ctx, leaseOpts()...)
	if err != nil {
		return nil, fmt.Errorf("import image archive %s: take a lease: %w", path, err)
	}
	defer done(context.WithoutCancel(ctx)) //nolint:errcheck // the lease expires anyway

	imgs, err := c.Import(ctx, f, client.WithImageLabels(map[string]string{LabelInUse: "true"}))
	if err != nil {
		return nil, fmt.Errorf("import image archive %s: %w", path, native(err))
	}
	var refs []string
	for _, meta := range imgs {
		if err := client.NewImage(c, meta).Unpack(ctx, ""); err != nil {
			return refs, fmt.Errorf("import image archive %s: unpack %s: %w", path, meta.Name, native(err))
		}
		refs = append(refs, meta.Name)
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("import image archive %s: it names no image", path)
	}
	return refs, nil
}

// leaseOpts are the options of a pull's or an import's lease.
func leaseOpts() []leases.Opt { return []leases.Opt{leases.WithExpiration(pullLease)} }

// imageForRun returns spec.Image unpacked, ready for a new snapshot.
func imageForRun(ctx context.Context, c *client.Client, ref string) (client.Image, error) {
	img, err := c.GetImage(ctx, ref)
	if err = native(err); errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %s is not present (pull or import it first): %w: %w", ref, goruntime.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	ok, err := img.IsUnpacked(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, native(err))
	}
	if !ok {
		if err := img.Unpack(ctx, ""); err != nil {
			return nil, fmt.Errorf("unpack image %s: %w", ref, native(err))
		}
	}
	return img, nil
}

// imageContainerOpts are the container options of image mode: the image, a
// fresh writable snapshot named after the container, then the spec (the
// image's environment and working directory, overridden by spec).
func imageContainerOpts(ctx context.Context, c *client.Client, spec goruntime.Spec, img client.Image) ([]client.NewContainerOpts, error) {
	// A snapshot left by a container that no longer exists (m3sup or the
	// daemon died between the two) would make the new one fail.
	sn, err := snapshotter(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := c.SnapshotService(sn).Remove(ctx, spec.ID); err != nil && !errdefs.IsNotFound(native(err)) {
		return nil, fmt.Errorf("remove stale snapshot %q: %w", spec.ID, native(err))
	}
	opts := append([]oci.SpecOpts{oci.WithImageConfig(img)}, specOpts(spec)...)
	return []client.NewContainerOpts{
		client.WithImage(img),
		client.WithSnapshotter(sn),
		client.WithNewSnapshot(spec.ID, img),
		client.WithNewSpec(opts...),
	}, nil
}

// snapshotter is the snapshotter the client uses when none is named: the
// namespace's default label, else the platform default (as the client does).
func snapshotter(ctx context.Context, c *client.Client) (string, error) {
	name, err := c.GetLabel(ctx, defaults.DefaultSnapshotterNSLabel)
	if err != nil {
		return "", fmt.Errorf("read the namespace's default snapshotter: %w", native(err))
	}
	if name == "" {
		name = defaults.DefaultSnapshotter
	}
	return name, nil
}
