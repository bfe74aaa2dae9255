package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeRelease is a small but real M3 release tarball.
func fakeRelease(t testing.TB) []byte {
	t.Helper()
	return gzipOf(t, tarOf(t,
		dir("m3_1.5.0_linux_amd64/"),
		file("m3_1.5.0_linux_amd64/m3dbnode", 0o755, "#!/bin/true\ndbnode "+strings.Repeat("d", 4096)),
		file("m3_1.5.0_linux_amd64/m3coordinator", 0o755, "#!/bin/true\ncoordinator"),
		file("m3_1.5.0_linux_amd64/LICENSE", 0o644, "Apache-2.0"),
		file("m3_1.5.0_linux_amd64/README.md", 0o644, "# M3"),
	))
}

// fixture is a release, a checksums file, an image archive and two fake
// binaries on disk, and a cache to make bundles with.
type fixture struct {
	base      string
	release   []byte
	relPath   string
	sumsPath  string
	imagePath string
	binaries  []string
	maker     *Cache
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{base: base, release: fakeRelease(t)}
	src := filepath.Join(base, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	f.relPath = filepath.Join(src, "m3_1.5.0_linux_amd64.tar.gz")
	writeFile(t, f.relPath, f.release, 0o644)
	f.sumsPath = filepath.Join(src, "m3_1.5.0_checksums.txt")
	writeFile(t, f.sumsPath, []byte(digestOf(f.release).Hex()+"  m3_1.5.0_linux_amd64.tar.gz\n"), 0o644)
	f.imagePath = filepath.Join(src, "m3dbnode-image.tar")
	writeFile(t, f.imagePath, tarOf(t, file("oci-layout", 0o644, `{"imageLayoutVersion":"1.0.0"}`), file("index.json", 0o644, `{"schemaVersion":2,"manifests":[]}`)), 0o644)
	for _, name := range []string{"containerd", "runc"} {
		p := filepath.Join(src, name)
		writeFile(t, p, []byte("#!/bin/sh\necho \""+name+" version 9.9.9\"\n"), 0o755)
		f.binaries = append(f.binaries, p)
	}
	var err error
	if f.maker, err = OpenCache(filepath.Join(base, "maker-cache"), Options{}); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFile(t testing.TB, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) options() CreateOptions {
	return CreateOptions{
		Cache:        f.maker,
		M3Version:    "1.5.0",
		M3supVersion: "test",
		Releases:     []Source{{URL: f.relPath, Checksum: "file:" + f.sumsPath}},
		Images:       []string{f.imagePath},
		Binaries:     f.binaries,
	}
}

// create writes a bundle to <base>/<name> and returns its path.
func (f *fixture) create(t testing.TB, name string, opts CreateOptions) (string, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := Create(context.Background(), &buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(f.base, name)
	writeFile(t, p, buf.Bytes(), 0o644)
	return p, m
}

// freshCache opens an empty cache at <tmp>/data/cache.
func freshCache(t testing.TB) (*Cache, string) {
	t.Helper()
	return testCache(t, Options{})
}

// closedPortURL is an http URL on which nothing listens.
func closedPortURL(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/" + name
}

func tarNames(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

func TestBundleRoundTrip(t *testing.T) {
	f := newFixture(t)
	sk, pk := genKey(t)
	trust := VerifyOptions{TrustedKeys: []ed25519.PublicKey{pk}}
	opts := f.options()
	opts.SignKey = sk
	path, m := f.create(t, "m3.m3sup", opts)

	// The format: manifest first, its signature, then the members.
	wantNames := []string{"manifest.json", "manifest.sig", "releases/m3_1.5.0_linux_amd64.tar.gz", "images/m3dbnode-image.tar", "bin/containerd", "bin/runc"}
	if got := tarNames(t, path); !slices.Equal(got, wantNames) {
		t.Errorf("bundle entries = %v, want %v", got, wantNames)
	}
	if m.FormatVersion != 1 || m.M3Version != "1.5.0" || m.M3supVersion != "test" || m.Created.IsZero() || len(m.Members) != 4 {
		t.Errorf("manifest = %+v", m)
	}
	rel := m.Members[0]
	if rel.Kind != KindRelease || rel.Digest() != digestOf(f.release) || rel.Size != int64(len(f.release)) ||
		rel.URL != f.relPath || rel.Checksum != "file:"+f.sumsPath || rel.Version != "1.5.0" {
		t.Errorf("release member = %+v", rel)
	}
	if bin := m.Members[2]; bin.Kind != KindBinary || bin.Version != "containerd version 9.9.9" {
		t.Errorf("binary member = %+v", bin)
	}

	v, err := VerifyFile(context.Background(), path, trust)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if v.Digest != digestOf(data) || v.Bytes != int64(len(data)) || v.Signature != SignatureVerified || v.SignedBy != KeyID(pk) {
		t.Errorf("verified = digest %s bytes %d signature %s by %q", v.Digest, v.Bytes, v.Signature, v.SignedBy)
	}
	if !equalJSON(t, v.Manifest, m) {
		t.Errorf("verified manifest differs from the created one")
	}

	// Import into a fresh cache on a "host with no network".
	c, base := freshCache(t)
	res, err := c.ImportBundle(context.Background(), path, trust)
	if err != nil {
		t.Fatal(err)
	}
	// Four members and the checksums-file shortcut of the signed release.
	if res.Written != 5 || len(res.Releases) != 1 || len(res.Images) != 1 || len(res.Binaries) != 2 {
		t.Fatalf("import = %+v", res)
	}
	d := digestOf(f.release)
	if res.Releases[0].Path != c.Path(d) || !res.Releases[0].New {
		t.Errorf("release imported to %+v", res.Releases[0])
	}
	assertContent(t, c.Path(d), f.release)
	assertMode(t, c.Path(d), 0o444)
	img, _ := os.ReadFile(f.imagePath)
	wantImg := filepath.Join(c.Dir(), "images", digestOf(img).Hex()+".tar")
	if res.Images[0].Path != wantImg {
		t.Errorf("image at %s, want %s", res.Images[0].Path, wantImg)
	}
	assertContent(t, wantImg, img)
	for i, b := range f.binaries {
		content, _ := os.ReadFile(b)
		want := filepath.Join(c.Dir(), "bin", digestOf(content).Hex(), filepath.Base(b))
		if res.Binaries[i].Path != want {
			t.Errorf("binary at %s, want %s", res.Binaries[i].Path, want)
		}
		assertContent(t, want, content)
		assertMode(t, want, 0o555)
		if out, err := exec.Command(want).Output(); err != nil || !strings.Contains(string(out), "9.9.9") {
			t.Errorf("imported %s does not run: %q %v", want, out, err)
		}
	}
	assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
	if got := dirNames(t, base); !slices.Equal(got, []string{"data"}) {
		t.Errorf("%s holds %v", base, got)
	}

	// Fetch with every network source unreachable: a cache hit.
	for _, src := range []Source{
		{URL: closedPortURL(t, "m3_1.5.0_linux_amd64.tar.gz"), Checksum: string(d)},
		res.Releases[0].Source(),
	} {
		got, err := c.Fetch(context.Background(), src)
		if err != nil {
			t.Fatalf("Fetch(%+v) after import: %v", src, err)
		}
		if got.Downloaded || got.Digest != d || got.Path != c.Path(d) {
			t.Errorf("Fetch after import = %+v", got)
		}
	}
	if r, ok := res.Release("1.5.0"); !ok || r.Member.Digest() != d {
		t.Errorf("Release(1.5.0) = %+v, %v", r, ok)
	}
	if _, ok := res.Release("1.4.0"); ok {
		t.Error("Release(1.4.0) found")
	}
	tree, err := c.Unpack(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tree, "m3_1.5.0_linux_amd64", "m3dbnode")); err != nil {
		t.Error(err)
	}

	// A second import writes nothing.
	before := snapshot(t, c.Dir())
	res2, err := c.ImportBundle(context.Background(), path, trust)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Written != 0 {
		t.Errorf("second import wrote %d files", res2.Written)
	}
	for _, r := range slices.Concat(res2.Releases, res2.Images, res2.Binaries) {
		if r.New {
			t.Errorf("%s is new on the second import", r.Member.Path)
		}
	}
	if after := snapshot(t, c.Dir()); !maps2Equal(before, after) {
		t.Errorf("second import changed the cache:\nbefore %v\nafter  %v", before, after)
	}
}

func assertMode(t testing.TB, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != want {
		t.Errorf("%s: mode %s, want regular %s", path, fi.Mode(), want)
	}
}

func equalJSON(t testing.TB, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// snapshot maps every path under dir to its size, mode and modification
// time.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%d %s %d", fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func genKey(t testing.TB) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	var priv, pub bytes.Buffer
	id, err := GenerateKey(&priv, &pub)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ParsePrivateKey(priv.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(pub.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(pk) != id || !pk.Equal(sk.Public()) {
		t.Fatalf("key id %s, public key does not match the private key", id)
	}
	return sk, pk
}

func TestKeys(t *testing.T) {
	sk, pk := genKey(t)
	if _, err := ParsePublicKey(nil); err == nil {
		t.Error("empty public key parsed")
	}
	// A private key where a public key is wanted, and the other way round.
	var priv, pub bytes.Buffer
	if _, err := GenerateKey(&priv, &pub); err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublicKey(priv.Bytes()); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("ParsePublicKey(private) = %v", err)
	}
	if _, err := ParsePrivateKey(pub.Bytes()); err == nil {
		t.Error("ParsePrivateKey(public) succeeded")
	}
	if _, err := ParsePrivateKey(append(priv.Bytes(), priv.Bytes()...)); err == nil {
		t.Error("two PEM blocks accepted")
	}
	_ = sk
	_ = pk

	// Keys made by openssl are read, and our keys are openssl's format.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Skipf("openssl genpkey: %v: %s", err, out)
	}
	pubOut, err := exec.Command("openssl", "pkey", "-in", key, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(key)
	osk, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatalf("openssl private key: %v", err)
	}
	opk, err := ParsePublicKey(pubOut)
	if err != nil {
		t.Fatalf("openssl public key: %v", err)
	}
	if !opk.Equal(osk.Public()) {
		t.Error("openssl key pair does not match")
	}
}

func TestBundleSigned(t *testing.T) {
	f := newFixture(t)
	sk, pk := genKey(t)
	_, otherPK := genKey(t)
	opts := f.options()
	opts.SignKey = sk
	signed, _ := f.create(t, "signed.m3sup", opts)
	unsigned, _ := f.create(t, "unsigned.m3sup", f.options())
	// Releases only: usable unsigned.
	relOnly := f.options()
	relOnly.Images, relOnly.Binaries = nil, nil
	unsignedReleases, _ := f.create(t, "unsigned-releases.m3sup", relOnly)
	if got := tarNames(t, signed); len(got) < 2 || got[0] != "manifest.json" || got[1] != "manifest.sig" {
		t.Errorf("signed bundle entries = %v", got)
	}

	ctx := context.Background()
	v, err := VerifyFile(ctx, signed, VerifyOptions{TrustedKeys: []ed25519.PublicKey{otherPK, pk}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Signature != SignatureVerified || v.SignedBy != KeyID(pk) || !v.Trusted() {
		t.Errorf("signature %s by %q, want verified by %q", v.Signature, v.SignedBy, KeyID(pk))
	}

	// A manifest changed after signing.
	tampered := rewriteManifest(t, signed, func(m *Manifest) { m.M3Version = "1.4.0" })

	for _, tt := range []struct {
		name, path string
		keys       []ed25519.PublicKey
		mention    string
	}{
		{"wrong key", signed, []ed25519.PublicKey{otherPK}, "not signed by any of the 1 trusted keys"},
		{"unsigned but trust required", unsigned, []ed25519.PublicKey{pk}, "not signed"},
		{"manifest changed after signing", tampered, []ed25519.PublicKey{pk}, "not signed by any"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyFile(ctx, tt.path, VerifyOptions{TrustedKeys: tt.keys})
			if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("VerifyFile = %v; want ErrSignature mentioning %q", err, tt.mention)
			}
			c, base := freshCache(t)
			if _, err := c.ImportBundle(ctx, tt.path, VerifyOptions{TrustedKeys: tt.keys}); !errors.Is(err, ErrSignature) {
				t.Errorf("ImportBundle = %v; want ErrSignature", err)
			}
			assertNothingImported(t, c, base)
		})
	}

	// A signed import remembers the checksums-file resolution: the exact
	// source of the bundle now resolves with its sources gone.
	c, _ := freshCache(t)
	res, err := c.ImportBundle(ctx, signed, VerifyOptions{TrustedKeys: []ed25519.PublicKey{pk}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 5 || res.Bundle.SignedBy != KeyID(pk) {
		t.Errorf("signed import wrote %d files, signed by %q", res.Written, res.Bundle.SignedBy)
	}
	unsignedCache, _ := freshCache(t)
	if _, err := unsignedCache.ImportBundle(ctx, unsignedReleases, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.relPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.sumsPath); err != nil {
		t.Fatal(err)
	}
	src := Source{URL: f.relPath, Checksum: "file:" + f.sumsPath}
	got, err := c.Fetch(ctx, src)
	if err != nil || got.Downloaded || got.Digest != digestOf(f.release) {
		t.Errorf("Fetch of the bundled source after a signed import = %+v, %v", got, err)
	}
	if _, err := unsignedCache.Fetch(ctx, src); !errors.Is(err, ErrFetch) {
		t.Errorf("Fetch of a file: source after an unsigned import = %v; want ErrFetch (no shortcut from unsigned bundles)", err)
	}
	// Idempotent, refs included.
	if res, err := c.ImportBundle(ctx, signed, VerifyOptions{TrustedKeys: []ed25519.PublicKey{pk}}); err != nil || res.Written != 0 {
		t.Errorf("second signed import: wrote %d, %v", res.Written, err)
	}
}

// rewriteManifest copies the bundle at path with its manifest changed and
// everything else (signature included) as it was.
func rewriteManifest(t testing.TB, path string, change func(*Manifest)) string {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == BundleManifestName {
			var m Manifest
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			change(&m)
			body, _ = json.MarshalIndent(m, "", "  ")
			hdr.Size = int64(len(body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := path + ".rewritten"
	writeFile(t, p, out.Bytes(), 0o644)
	return p
}

// assertNothingImported: the cache holds only its empty directories and
// nothing appeared beside it.
func assertNothingImported(t testing.TB, c *Cache, base string) {
	t.Helper()
	if got := dirNames(t, c.Dir()); strings.Join(got, ",") != "corrupt,refs,sha256,tmp,unpacked" {
		t.Errorf("cache dir holds %v", got)
	}
	for _, sub := range []string{"corrupt", "refs", "sha256", "tmp", "unpacked"} {
		assertEmpty(t, filepath.Join(c.Dir(), sub))
	}
	if got := dirNames(t, base); !slices.Equal(got, []string{"data"}) {
		t.Errorf("%s holds %v", base, got)
	}
	if got := dirNames(t, filepath.Join(base, "data")); !slices.Equal(got, []string{"cache"}) {
		t.Errorf("data dir holds %v", got)
	}
}

// rawBundle builds a bundle by hand: manifest.json of m, then the entries.
func rawBundle(t testing.TB, m Manifest, entries ...member) []byte {
	t.Helper()
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return tarOf(t, append([]member{file(BundleManifestName, 0o644, string(mj))}, entries...)...)
}

func releaseMember(path string, body []byte) Member {
	return Member{Path: path, Kind: KindRelease, Size: int64(len(body)), SHA256: digestOf(body).Hex(), Version: "1.5.0"}
}

func TestBundleRefusesHostileBundles(t *testing.T) {
	release := fakeRelease(t)
	other := []byte("another file")
	const relName = "releases/m3_1.5.0_linux_amd64.tar.gz"
	rel := releaseMember(relName, release)
	manifest := func(members ...Member) Manifest {
		return Manifest{FormatVersion: 1, M3supVersion: "test", Created: time.Unix(1700000000, 0).UTC(), M3Version: "1.5.0", Members: members}
	}
	relEntry := file(relName, 0o644, string(release))
	tampered := slices.Clone(release)
	tampered[len(tampered)/2] ^= 0xff
	good := rawBundle(t, manifest(rel), relEntry)
	evilAbs := fmt.Sprintf("/tmp/m3sup-airgap-test-evil-%d", os.Getpid())

	tests := []struct {
		name    string
		bundle  []byte
		opts    VerifyOptions
		want    error
		mention string
	}{
		{"manifest lies about a sha256", rawBundle(t, manifest(rel), file(relName, 0o644, string(tampered))),
			VerifyOptions{}, ErrChecksumMismatch, `member "releases/m3_1.5.0_linux_amd64.tar.gz": sha256`},
		{"member missing", rawBundle(t, manifest(rel, releaseMember("releases/second.tar.gz", other)), relEntry),
			VerifyOptions{}, ErrUnsafeArchive, `"releases/second.tar.gz" is in the manifest but not in the bundle`},
		{"member not in the manifest", rawBundle(t, manifest(rel), relEntry, file("images/extra.tar", 0o644, "surprise")),
			VerifyOptions{}, ErrUnsafeArchive, `"images/extra.tar" is not in the manifest`},
		{"dot dot entry", rawBundle(t, manifest(rel), relEntry, file("../evil", 0o644, "pwned")),
			VerifyOptions{}, ErrUnsafeArchive, `"../evil": path traversal`},
		{"dot dot inside an entry", rawBundle(t, manifest(rel), file("releases/../../evil", 0o644, "pwned"), relEntry),
			VerifyOptions{}, ErrUnsafeArchive, `"releases/../../evil"`},
		{"dot dot in the manifest", rawBundle(t, manifest(rel, releaseMember("releases/../../evil", other)), relEntry, file("releases/../../evil", 0o644, string(other))),
			VerifyOptions{}, ErrUnsafeArchive, `bad file name`},
		{"absolute entry", rawBundle(t, manifest(rel), relEntry, file(evilAbs, 0o644, "pwned")),
			VerifyOptions{}, ErrUnsafeArchive, "absolute path"},
		{"symlink member", rawBundle(t, manifest(rel),
			member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: relName, Linkname: "/etc/passwd"}}),
			VerifyOptions{}, ErrUnsafeArchive, "is a symlink"},
		{"hard link", rawBundle(t, manifest(rel), relEntry,
			member{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "bin/runc", Linkname: "../../etc/passwd"}}),
			VerifyOptions{}, ErrUnsafeArchive, "is a hard link"},
		{"device node", rawBundle(t, manifest(rel), relEntry,
			member{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "bin/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}),
			VerifyOptions{}, ErrUnsafeArchive, "device"},
		{"directory", rawBundle(t, manifest(rel), dir("releases/"), relEntry),
			VerifyOptions{}, ErrUnsafeArchive, "is a directory"},
		{"truncated", good[:len(good)/2], VerifyOptions{}, ErrUnsafeArchive, "truncated"},
		{"truncated in the manifest", good[:600], VerifyOptions{}, ErrUnsafeArchive, "truncated"},
		{"duplicate member", rawBundle(t, manifest(rel), relEntry, relEntry),
			VerifyOptions{}, ErrUnsafeArchive, "appears twice"},
		{"duplicate manifest", rawBundle(t, manifest(rel), relEntry, file(BundleManifestName, 0o644, "{}")),
			VerifyOptions{}, ErrUnsafeArchive, "appears again"},
		{"listed twice", rawBundle(t, manifest(rel, rel), relEntry),
			VerifyOptions{}, ErrUnsafeArchive, "listed twice"},
		{"member larger than the manifest says", rawBundle(t, manifest(Member{Path: relName, Kind: KindRelease, Size: 10, SHA256: rel.SHA256}), relEntry),
			VerifyOptions{}, ErrChecksumMismatch, fmt.Sprintf("has %d bytes, the manifest says 10", len(release))},
		{"over the size limit", good, VerifyOptions{MaxBytes: 100}, ErrUnsafeArchive, "over the limit of 100 bytes"},
		{"over the member limit", rawBundle(t, manifest(rel, releaseMember("releases/b.tar.gz", other)), relEntry, file("releases/b.tar.gz", 0o644, string(other))),
			VerifyOptions{MaxMembers: 1}, ErrUnsafeArchive, "more than the limit of 1"},
		{"manifest not first", tarOf(t, relEntry), VerifyOptions{}, ErrUnsafeArchive, "not an m3sup bundle"},
		{"no release", rawBundle(t, manifest(Member{Path: "images/x.tar", Kind: KindImage, Size: 1, SHA256: digestOf([]byte("x")).Hex()}), file("images/x.tar", 0o644, "x")),
			VerifyOptions{}, ErrUnsafeArchive, "no release"},
		{"unknown kind", rawBundle(t, manifest(rel, Member{Path: "etc/x", Kind: "config", Size: 1, SHA256: digestOf([]byte("x")).Hex()}), relEntry),
			VerifyOptions{}, ErrUnsafeArchive, "unknown kind"},
		{"newer format", rawBundle(t, Manifest{FormatVersion: 2, Members: []Member{rel}}, relEntry),
			VerifyOptions{}, ErrUnsafeArchive, "format version 2"},
		{"data after the end", append(slices.Clone(good), []byte("smuggled")...),
			VerifyOptions{}, ErrUnsafeArchive, "data after the end"},
		{"not a tar", []byte("hello, I am not a bundle"), VerifyOptions{}, ErrUnsafeArchive, ""},
		{"empty", nil, VerifyOptions{}, ErrUnsafeArchive, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, base := freshCache(t)
			bundleDir := t.TempDir()
			path := filepath.Join(bundleDir, "hostile.m3sup")
			writeFile(t, path, tt.bundle, 0o644)

			_, err := VerifyFile(context.Background(), path, tt.opts)
			t.Logf("refused: %v", err)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("VerifyFile = %v; want %v mentioning %q", err, tt.want, tt.mention)
			}
			res, err := c.ImportBundle(context.Background(), path, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Errorf("ImportBundle = %+v, %v; want %v", res, err, tt.want)
			}
			assertNothingImported(t, c, base)
			if got := dirNames(t, bundleDir); !slices.Equal(got, []string{"hostile.m3sup"}) {
				t.Errorf("bundle dir holds %v", got)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(bundleDir), "evil")); err == nil {
				t.Error("evil was written next to the bundle dir")
			}
			if _, err := os.Lstat(evilAbs); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s was written", evilAbs)
				os.Remove(evilAbs)
			}
		})
	}

	// The good bundle of the corpus is accepted, so the refusals above are
	// about what each case changed.
	c, _ := freshCache(t)
	p := filepath.Join(t.TempDir(), "good.m3sup")
	writeFile(t, p, good, 0o644)
	if _, err := c.ImportBundle(context.Background(), p, VerifyOptions{}); err != nil {
		t.Fatalf("the corpus' good bundle: %v", err)
	}
}

func TestBundleCreateRefuses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		change func(*CreateOptions)
		want   error
	}{
		{"release without checksum", func(o *CreateOptions) { o.Releases[0].Checksum = ""; o.Releases[0].InsecureSkipChecksum = true }, ErrNoChecksum},
		{"release with a wrong checksum", func(o *CreateOptions) { o.Releases[0].Checksum = string(digestOf([]byte("other"))) }, ErrChecksumMismatch},
		{"missing image", func(o *CreateOptions) { o.Images = []string{filepath.Join(f.base, "nope.tar")} }, fs.ErrNotExist},
		{"missing binary", func(o *CreateOptions) { o.Binaries = []string{"m3sup-no-such-binary"} }, exec.ErrNotFound},
		{"two images of one name", func(o *CreateOptions) { o.Images = []string{f.imagePath, f.imagePath} }, nil},
		{"no version", func(o *CreateOptions) { o.M3Version = "" }, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := f.options()
			opts.Releases = slices.Clone(opts.Releases)
			tt.change(&opts)
			var buf bytes.Buffer
			_, err := Create(ctx, &buf, opts)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("Create = %v; want %v", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Create wrote %d bytes before failing its checks", buf.Len())
			}
		})
	}
}

func TestBundleCreateProgress(t *testing.T) {
	f := newFixture(t)
	var progress bytes.Buffer
	c, err := OpenCache(filepath.Join(f.base, "progress-cache"), Options{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(0, 0)
	c.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	opts := f.options()
	opts.Cache = c
	f.create(t, "p.m3sup", opts)
	out := progress.String()
	if !strings.Contains(out, "bundle: ") || !strings.Contains(out, "in 4 members done") {
		t.Errorf("progress output:\n%s", out)
	}
}

func TestWatchBundles(t *testing.T) {
	f := newFixture(t)
	sk, pk := genKey(t)
	signed := f.options()
	signed.SignKey = sk
	good, _ := f.create(t, "good.m3sup", signed)
	opts := signed
	opts.M3supVersion = "other"
	good2, _ := f.create(t, "good2.m3sup", opts)
	goodData, _ := os.ReadFile(good)
	good2Data, _ := os.ReadFile(good2)

	c, base := freshCache(t)
	dir := filepath.Join(base, "data", "bundles")
	type event struct {
		res ImportResult
		err error
	}
	events := make(chan event, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		verify := VerifyOptions{TrustedKeys: []ed25519.PublicKey{pk}}
		done <- c.WatchBundles(ctx, dir, WatchOptions{Verify: verify, Interval: 10 * time.Millisecond}, func(r ImportResult, err error) {
			events <- event{r, err}
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchBundles = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("WatchBundles did not return after cancel")
		}
	}()
	next := func() event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no import reported within 10 s")
			return event{}
		}
	}
	drop := func(name string, data []byte) {
		t.Helper()
		waitFor(t, func() bool { _, err := os.Stat(dir); return err == nil })
		tmp := filepath.Join(dir, name+".part")
		writeFile(t, tmp, data, 0o644)
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	drop("a.m3sup", goodData)
	ev := next()
	if ev.err != nil {
		t.Fatal(ev.err)
	}
	// Four members and the signed release's checksums-file shortcut.
	if ev.res.Written != 5 || ev.res.Path != filepath.Join(dir, "imported", "a.m3sup") {
		t.Errorf("import = written %d, path %s", ev.res.Written, ev.res.Path)
	}
	if !c.Has(digestOf(f.release)) {
		t.Error("release not in the cache")
	}

	// The same bundle again, under another name: moved aside, no import.
	drop("again.m3sup", goodData)
	waitFor(t, func() bool { _, err := os.Stat(filepath.Join(dir, "imported", "again.m3sup")); return err == nil })

	// A hostile one: reported once, left in place.
	drop("bad.m3sup", goodData[:len(goodData)/2])
	ev = next()
	if !errors.Is(ev.err, ErrUnsafeArchive) || ev.res.Path != filepath.Join(dir, "bad.m3sup") {
		t.Errorf("bad bundle: %+v, %v", ev.res, ev.err)
	}
	// Another good one: the next event is its import, not the bad one again.
	drop("b.tar", good2Data)
	ev = next()
	if ev.err != nil || ev.res.Path != filepath.Join(dir, "imported", "b.tar") || ev.res.Written != 0 {
		t.Errorf("second bundle: %+v, %v", ev.res, ev.err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.m3sup")); err != nil {
		t.Errorf("refused bundle was moved: %v", err)
	}
	select {
	case ev := <-events:
		t.Errorf("unexpected event %+v, %v", ev.res, ev.err)
	default:
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBundleRealRelease bundles the real M3 release tarball named by
// M3SUP_E2E_RELEASE (its checksums file beside it, if there is one).
func TestBundleRealRelease(t *testing.T) {
	rel := os.Getenv("M3SUP_E2E_RELEASE")
	if rel == "" {
		t.Skip("M3SUP_E2E_RELEASE is not set")
	}
	rel, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	checksum := ""
	if sums, _ := filepath.Glob(filepath.Join(filepath.Dir(rel), "*checksums.txt")); len(sums) == 1 {
		checksum = "file:" + sums[0]
	} else {
		d, _, err := hashFile(rel)
		if err != nil {
			t.Fatal(err)
		}
		checksum = string(d)
	}
	base := t.TempDir()
	maker, err := OpenCache(filepath.Join(base, "maker"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sk, pk := genKey(t)
	path := filepath.Join(base, "m3.m3sup")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Create(ctx, out, CreateOptions{Cache: maker, M3Version: "1.5.0", Releases: []Source{{URL: rel, Checksum: checksum}}, SignKey: sk}); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	trust := VerifyOptions{TrustedKeys: []ed25519.PublicKey{pk}}
	if _, err := VerifyFile(ctx, path, trust); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCache(filepath.Join(base, "host", "cache"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ImportBundle(ctx, path, trust)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := res.Release("1.5.0")
	if !ok {
		t.Fatal("no release imported")
	}
	got, err := c.Fetch(ctx, Source{URL: closedPortURL(t, filepath.Base(rel)), Checksum: string(r.Member.Digest())})
	if err != nil || got.Downloaded {
		t.Fatalf("offline fetch = %+v, %v", got, err)
	}
	tree, err := c.Unpack(ctx, got.Digest)
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"m3dbnode", "m3coordinator"} {
		if _, err := os.Stat(filepath.Join(tree, "m3_1.5.0_linux_amd64", bin)); err != nil {
			t.Error(err)
		}
	}
}
