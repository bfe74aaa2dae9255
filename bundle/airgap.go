package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// An air-gap bundle is one file that carries everything a host without
// network needs to run the same cluster: the M3 release tarball(s), image
// archives and, optionally, containerd and runc.
//
// Format version 1 is an uncompressed POSIX tar (ustar, pax for long
// names). It is not compressed because its members already are (the release
// is a tar.gz; image layers are gzip): gzip would cost a full CPU pass for
// nothing, and an uncompressed tar can be checked member by member while it
// streams, and listed or unpacked with plain `tar`. Its entries, in order:
//
//	manifest.json        always first: the Manifest below
//	manifest.sig         optional, second: an ed25519 signature over the exact
//	                     bytes of manifest.json (see sign.go)
//	releases/<file>      kind "release": M3 release tarballs
//	images/<file>        kind "image": OCI or docker image archives
//	bin/<name>           kind "binary": containerd, its runc shim, runc
//
// Nothing else is allowed: every entry after the manifest and signature is a
// regular file listed in the manifest with its size and sha256, listed once,
// and every listed member is present.
const (
	BundleFormatVersion = 1
	BundleManifestName  = "manifest.json"
	BundleSignatureName = "manifest.sig"
)

// MemberKind says what a bundle member is and where it lives in the bundle
// and, once imported, in the cache.
type MemberKind string

// Member kinds.
const (
	KindRelease MemberKind = "release" // releases/<file> → cache sha256/<hex>
	KindImage   MemberKind = "image"   // images/<file>   → cache images/<hex>.tar
	KindBinary  MemberKind = "binary"  // bin/<name>      → cache bin/<hex>/<name>
)

var kindDirs = map[MemberKind]string{KindRelease: "releases", KindImage: "images", KindBinary: "bin"}

// Manifest is manifest.json, the first entry of a bundle.
type Manifest struct {
	FormatVersion int       `json:"formatVersion"`
	M3supVersion  string    `json:"m3supVersion"`
	Created       time.Time `json:"created"`
	M3Version     string    `json:"m3Version"`
	Members       []Member  `json:"members"`
}

// Member is one file of a bundle.
type Member struct {
	// Path inside the bundle: "<kind dir>/<name>".
	Path string     `json:"path"`
	Kind MemberKind `json:"kind"`
	Size int64      `json:"size"`
	// SHA256 is 64 lowercase hex characters.
	SHA256 string `json:"sha256"`
	// URL and Checksum (releases): the source the release was fetched and
	// verified from when the bundle was made, credentials redacted. Import
	// uses them to remember a "file:" checksum resolution, so that exactly
	// that source needs no network later.
	URL      string `json:"url,omitempty"`
	Checksum string `json:"checksum,omitempty"`
	// Version: the M3 version for a release, the program's own report
	// (`--version`) for a binary.
	Version string `json:"version,omitempty"`
}

// Digest returns the member's content digest.
func (m Member) Digest() Digest { return Digest(digestPrefix + m.SHA256) }

// Name returns the member's file name (the last element of Path).
func (m Member) Name() string { return path.Base(m.Path) }

// CreateOptions say what goes into a bundle.
type CreateOptions struct {
	// Cache fetches and verifies the releases (required). Its
	// Options.Progress, when set, also receives the bundle's progress lines.
	Cache *Cache
	// M3Version is the M3 version the bundle carries (required).
	M3Version string
	// M3supVersion is recorded in the manifest.
	M3supVersion string
	// Releases are the M3 release tarballs, fetched through Cache.Fetch. Each
	// needs a checksum: a bundle is only made of verified content.
	Releases []Source
	// Images are image archive files (OCI layout or docker-save tars).
	Images []string
	// Binaries are programs to carry, by name (looked up in PATH) or path:
	// ContainerdBinaries for --with-containerd.
	Binaries []string
	// SignKey, when set, signs the manifest (manifest.sig).
	SignKey ed25519.PrivateKey
	// Now is the clock for the manifest's creation time; default time.Now.
	Now func() time.Time
}

// ContainerdBinaries are the programs a host needs to run M3 under a
// managed containerd.
var ContainerdBinaries = []string{"containerd", "containerd-shim-runc-v2", "runc"}

// maxBundleManifest bounds manifest.json.
const maxBundleManifest = 1 << 20

// pending is a member with the local file it is copied from.
type pending struct {
	m    Member
	file string
}

// Create writes a bundle to w and returns its manifest. The releases are
// fetched and verified first (through the cache: a release already cached
// is not downloaded again), every member is hashed, and each member's bytes
// are hashed again while they are written, so a file that changes meanwhile
// fails the bundle instead of producing one whose manifest lies. On error,
// w holds a partial bundle: write to a temporary file and rename.
func Create(ctx context.Context, w io.Writer, opts CreateOptions) (Manifest, error) {
	m, members, err := prepare(ctx, opts)
	if err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	if err := writeBundle(ctx, w, opts, m, members); err != nil {
		return Manifest{}, fmt.Errorf("create bundle: %w", err)
	}
	return m, nil
}

func prepare(ctx context.Context, opts CreateOptions) (Manifest, []pending, error) {
	if opts.Cache == nil {
		return Manifest{}, nil, errors.New("no cache")
	}
	if strings.TrimSpace(opts.M3Version) == "" {
		return Manifest{}, nil, errors.New("no M3 version")
	}
	if len(opts.Releases) == 0 {
		return Manifest{}, nil, errors.New("no release")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	m := Manifest{
		FormatVersion: BundleFormatVersion,
		M3supVersion:  opts.M3supVersion,
		Created:       now().UTC().Truncate(time.Second),
		M3Version:     opts.M3Version,
	}
	var members []pending
	seen := map[string]string{}
	add := func(p pending, from string) error {
		if err := checkMemberPath(p.m.Path, p.m.Kind); err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
		if prev, ok := seen[p.m.Path]; ok {
			return fmt.Errorf("%s and %s would both be %s in the bundle", prev, from, p.m.Path)
		}
		seen[p.m.Path] = from
		members = append(members, p)
		return nil
	}

	for _, src := range opts.Releases {
		if !strings.HasPrefix(strings.TrimSpace(src.Checksum), digestPrefix) && !strings.HasPrefix(strings.TrimSpace(src.Checksum), "file:") {
			return Manifest{}, nil, fmt.Errorf("release %s: a bundle carries only verified releases; give a sha256:<hex> or file:<URL> checksum: %w", src.URL, ErrNoChecksum)
		}
		src.InsecureSkipChecksum = false
		loc, err := parseLocation(src.URL)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("release %s: %w", src.URL, err)
		}
		checksum := strings.TrimSpace(src.Checksum)
		if rest, ok := strings.CutPrefix(checksum, "file:"); ok {
			sums, err := parseLocation(rest)
			if err != nil {
				return Manifest{}, nil, fmt.Errorf("release %s: checksums file: %w", loc.display, err)
			}
			checksum = "file:" + sums.display
		}
		res, err := opts.Cache.Fetch(ctx, src)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("release: %w", err)
		}
		err = add(pending{m: Member{
			Path: "releases/" + loc.name, Kind: KindRelease, Size: res.Bytes, SHA256: res.Digest.Hex(),
			URL: loc.display, Checksum: checksum, Version: opts.M3Version,
		}, file: res.Path}, loc.display)
		if err != nil {
			return Manifest{}, nil, err
		}
	}
	for _, p := range opts.Images {
		abs, err := filepath.Abs(p)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("image archive %s: %w", p, err)
		}
		d, size, err := hashFile(abs)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("image archive: %w", err)
		}
		err = add(pending{m: Member{Path: "images/" + filepath.Base(abs), Kind: KindImage, Size: size, SHA256: d.Hex()}, file: abs}, abs)
		if err != nil {
			return Manifest{}, nil, err
		}
	}
	for _, name := range opts.Binaries {
		found, err := exec.LookPath(name)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("binary %s: %w", name, err)
		}
		// Copy what a symlink points at, under the name asked for.
		target, err := filepath.EvalSymlinks(found)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("binary %s: %w", name, err)
		}
		d, size, err := hashFile(target)
		if err != nil {
			return Manifest{}, nil, fmt.Errorf("binary %s: %w", name, err)
		}
		err = add(pending{m: Member{
			Path: "bin/" + filepath.Base(name), Kind: KindBinary, Size: size, SHA256: d.Hex(),
			Version: binaryVersion(ctx, target, filepath.Base(name)),
		}, file: target}, found)
		if err != nil {
			return Manifest{}, nil, err
		}
	}
	for _, p := range members {
		m.Members = append(m.Members, p.m)
	}
	return m, members, nil
}

// binaryVersion asks a program for its version: one line, at most 200
// characters, "unknown" if it will not say.
func binaryVersion(ctx context.Context, file, name string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	arg := "--version"
	if strings.HasPrefix(name, "containerd-shim") {
		arg = "-v" // the shims know only -v
	}
	cmd := exec.CommandContext(ctx, file, arg)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	var parts []string
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.Join(strings.Fields(line), " ")
		if line == "" || strings.HasSuffix(line, ":") {
			continue // blank, or a heading such as the shims' "<path>:"
		}
		parts = append(parts, line)
	}
	v := strings.Join(parts, "; ")
	if v == "" {
		return "unknown"
	}
	if len(v) > 200 {
		v = v[:200]
	}
	return v
}

// checkMemberPath: "<kind dir>/<name>", one clean, local name, not hidden.
func checkMemberPath(p string, kind MemberKind) error {
	dir, ok := kindDirs[kind]
	if !ok {
		return fmt.Errorf("member %q: unknown kind %q", p, kind)
	}
	name, ok := strings.CutPrefix(p, dir+"/")
	if !ok {
		return fmt.Errorf("member %q: a %s must be under %s/", p, kind, dir)
	}
	if name == "" || strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") || !filepath.IsLocal(name) {
		return fmt.Errorf("member %q: bad file name %q", p, name)
	}
	return nil
}

func writeBundle(ctx context.Context, w io.Writer, opts CreateOptions, m Manifest, members []pending) error {
	manifestJSON, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	manifestJSON = append(manifestJSON, '\n')
	if len(manifestJSON) > maxBundleManifest {
		return fmt.Errorf("manifest has %d bytes, more than %d", len(manifestJSON), maxBundleManifest)
	}
	var sig []byte
	if opts.SignKey != nil {
		if sig, err = signManifest(opts.SignKey, manifestJSON); err != nil {
			return err
		}
	}

	var total int64
	for _, p := range members {
		total += p.m.Size
	}
	prog := &copyProgress{w: opts.Cache.opts.Progress, now: opts.Cache.now, total: total}
	prog.last = prog.now()

	tw := tar.NewWriter(w)
	writeSmall := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: m.Created}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	if err := writeSmall(BundleManifestName, manifestJSON); err != nil {
		return err
	}
	if sig != nil {
		if err := writeSmall(BundleSignatureName, sig); err != nil {
			return err
		}
	}
	buf := make([]byte, 1<<20)
	for _, p := range members {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := copyMember(ctx, tw, p, m.Created, buf, prog); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish bundle: %w", err)
	}
	prog.finish(len(members))
	return nil
}

func copyMember(ctx context.Context, tw *tar.Writer, p pending, mtime time.Time, buf []byte, prog *copyProgress) error {
	f, err := os.OpenFile(p.file, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return fmt.Errorf("member %s: %w", p.m.Path, err)
	}
	defer f.Close()
	mode := int64(0o644)
	if p.m.Kind == KindBinary {
		mode = 0o755
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: p.m.Path, Mode: mode, Size: p.m.Size, ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("member %s: %w", p.m.Path, err)
	}
	h := sha256.New()
	// One byte more than declared: a file that grew fails below (tar's
	// ErrWriteTooLong) instead of being cut silently.
	n, err := io.CopyBuffer(io.MultiWriter(tw, h, prog), ctxReader{ctx, io.LimitReader(f, p.m.Size+1)}, buf)
	if err != nil || n != p.m.Size {
		return fmt.Errorf("member %s (%s) changed while it was bundled (%d bytes, want %d): %v: %w", p.m.Path, p.file, n, p.m.Size, err, ErrChecksumMismatch)
	}
	if got := digestFromSum(h.Sum(nil)); got != p.m.Digest() {
		return fmt.Errorf("member %s (%s) changed while it was bundled: sha256 %s, want %s: %w", p.m.Path, p.file, got.Hex(), p.m.SHA256, ErrChecksumMismatch)
	}
	return nil
}

// ctxReader fails reads once ctx is done, so that long copies stop.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// copyProgress prints "bundle: <done> / <total> (<p>%)" at most once a
// second to w (nothing when w is nil).
type copyProgress struct {
	w           io.Writer
	now         func() time.Time
	done, total int64
	last        time.Time
}

func (p *copyProgress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.w != nil {
		if now := p.now(); now.Sub(p.last) >= progressWriterEvery {
			p.last = now
			fmt.Fprintf(p.w, "bundle: %s / %s (%d%%)\n", humanBytes(p.done), humanBytes(p.total), percent(p.done, p.total))
		}
	}
	return len(b), nil
}

func (p *copyProgress) finish(members int) {
	if p.w != nil {
		fmt.Fprintf(p.w, "bundle: %s in %d members done\n", humanBytes(p.done), members)
	}
}

// parseManifest decodes and checks manifest.json against the limits.
func parseManifest(data []byte, opts VerifyOptions) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%s: %v: %w", BundleManifestName, err, ErrUnsafeArchive)
	}
	if dec.More() {
		return Manifest{}, refuse("%s: data after the JSON object", BundleManifestName)
	}
	if m.FormatVersion != BundleFormatVersion {
		return Manifest{}, refuse("%s: format version %d; this m3sup reads version %d", BundleManifestName, m.FormatVersion, BundleFormatVersion)
	}
	if len(m.Members) == 0 {
		return Manifest{}, refuse("%s: no members", BundleManifestName)
	}
	if len(m.Members) > opts.MaxMembers {
		return Manifest{}, refuse("%s: %d members, more than the limit of %d", BundleManifestName, len(m.Members), opts.MaxMembers)
	}
	var total int64
	releases := 0
	seen := map[string]bool{}
	for _, mb := range m.Members {
		if err := checkMemberPath(mb.Path, mb.Kind); err != nil {
			return Manifest{}, refuse("%s: %v", BundleManifestName, err)
		}
		if seen[mb.Path] {
			return Manifest{}, refuse("%s: member %q is listed twice", BundleManifestName, mb.Path)
		}
		seen[mb.Path] = true
		if _, err := parseHex(mb.SHA256); err != nil || strings.ToLower(mb.SHA256) != mb.SHA256 {
			return Manifest{}, refuse("%s: member %q: sha256 %q is not 64 lowercase hex characters", BundleManifestName, mb.Path, mb.SHA256)
		}
		if mb.Size < 0 || mb.Size > opts.MaxBytes-total {
			return Manifest{}, refuse("%s: member %q of %d bytes takes the bundle over the limit of %d bytes", BundleManifestName, mb.Path, mb.Size, opts.MaxBytes)
		}
		total += mb.Size
		if mb.Kind == KindRelease {
			releases++
		}
	}
	if releases == 0 {
		return Manifest{}, refuse("%s: no release member", BundleManifestName)
	}
	return m, nil
}
