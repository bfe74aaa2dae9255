package bundle

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImagePullOptions says how to reach a registry for PullImageArchive.
type ImagePullOptions struct {
	// PlainHTTP allows http:// for the image's registry; only for
	// registries the user marked so.
	PlainHTTP bool
	// Username and Password authenticate (basic, or a bearer token exchange).
	Username, Password string
	// Timeout bounds the whole pull (default 30 minutes).
	Timeout time.Duration
}

// PullImageArchive pulls ref (linux/amd64) from its registry and writes it
// as an image archive (a docker-save tar, which containerd imports) to dst,
// for an air-gap bundle. It returns the image's manifest digest.
func PullImageArchive(ctx context.Context, ref, dst string, o ImagePullOptions) (Digest, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var nameOpts []name.Option
	if o.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	tag, err := name.NewTag(ref, nameOpts...)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	auth := authn.Anonymous
	if o.Username != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password})
	}
	img, err := remote.Image(tag, remote.WithContext(ctx), remote.WithAuth(auth),
		remote.WithTransport(httpsOnly{allowHTTP: o.PlainHTTP, next: http.DefaultTransport}),
		remote.WithPlatform(v1Platform()))
	if err != nil {
		return "", fmt.Errorf("pull %s: %w: %w", ref, err, ErrFetch)
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("pull %s: digest: %w", ref, err)
	}
	if err := tarball.WriteToFile(dst, tag, img); err != nil {
		return "", fmt.Errorf("write image archive for %s: %w", ref, err)
	}
	return Digest(d.String()), nil
}

func v1Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: "amd64"} }

// httpsOnly refuses plain-HTTP requests unless the user allowed them for
// this registry (go-containerregistry would use HTTP for loopback hosts on
// its own).
type httpsOnly struct {
	allowHTTP bool
	next      http.RoundTripper
}

func (t httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !t.allowHTTP {
		return nil, fmt.Errorf("plain HTTP to %s refused: mark the registry as plain-HTTP to allow it", r.URL.Host)
	}
	return t.next.RoundTrip(r)
}
