package registrytest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry's executable (apt-get install -y docker-registry).
const Binary = "docker-registry"

// Registry is a running registry on 127.0.0.1.
type Registry struct {
	// Host is host:port, the first component of the registry's image refs.
	Host               string
	Username, Password string // set when started WithAuth
}

// Options configure Start.
type Options struct {
	// Username and Password, when set, make the registry demand them (basic
	// auth from an htpasswd file).
	Username, Password string
}

// Start runs docker-registry on a free loopback port with its storage in a
// temporary directory, waits until /v2/ answers and stops it when the test
// ends. Without the binary the test skips, or fails under CI=true.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		msg := "needs " + Binary + " in PATH (apt-get install -y docker-registry)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()

	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "storage"), host)
	if o.Username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: m3sup-test\n    path: %s\n", htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("registry log:\n%s", b)
		}
	})

	// /v2/ answers 200, or 401 with auth, once the registry listens.
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("registry on %s did not answer within 15s (%v); log:\n%s", host, err, b)
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("registry exited: %v; log:\n%s", err, b)
		case <-tick.C:
		}
	}
	return &Registry{Host: host, Username: o.Username, Password: o.Password}
}

// File is one regular file of an image layer.
type File struct {
	Source string // host file
	Path   string // absolute path in the image, like /bin/m3dbnode
	Mode   int64  // permission bits; 0 means 0755
}

// Image builds a linux/amd64 image of one layer holding files (plus /tmp),
// with entrypoint and env.
func Image(files []File, entrypoint []string, env []string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	addDir := func(d string) error {
		if d == "" || d == "." || dirs[d] {
			return nil
		}
		dirs[d] = true
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: time.Unix(0, 0)})
	}
	if err := addDir("tmp"); err != nil {
		return nil, err
	}
	for _, f := range files {
		p := strings.TrimPrefix(filepath.Clean(f.Path), "/")
		var parents []string
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := addDir(d); err != nil {
				return nil, err
			}
		}
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = env
	return mutate.ConfigFile(img, cf)
}

// Push writes img to the registry as repo:tag (repo like "m3db/m3dbnode")
// and returns the full reference and the manifest digest.
func (r *Registry) Push(ctx context.Context, repo, tag string, img v1.Image) (ref, digest string, err error) {
	ref = r.Host + "/" + repo + ":" + tag
	nref, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", "", err
	}
	auth := authn.Anonymous
	if r.Username != "" {
		auth = &authn.Basic{Username: r.Username, Password: r.Password}
	}
	if err := remote.Write(nref, img, remote.WithContext(ctx), remote.WithAuth(auth)); err != nil {
		return "", "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", "", err
	}
	return ref, d.String(), nil
}

// WriteArchive writes img as a docker-save tar archive naming it ref.
func WriteArchive(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}
