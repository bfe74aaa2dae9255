package bundle

import (
	"archive/tar"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// Defaults for zero fields of VerifyOptions.
const (
	DefaultBundleMaxBytes   = int64(16) << 30 // 16 GiB of members
	DefaultBundleMaxMembers = 256
)

// VerifyOptions say what a bundle must satisfy. The zero value checks
// content and structure but not who made the bundle.
type VerifyOptions struct {
	// TrustedKeys, when not empty, require the bundle to be signed by one of
	// them: a missing or bad signature fails with ErrSignature. With no
	// trusted keys a signature is not checked (Verified.Signed still says
	// whether there is one).
	TrustedKeys []ed25519.PublicKey
	// MaxBytes bounds the sum of the members' sizes. Default 16 GiB.
	MaxBytes int64
	// MaxMembers bounds the number of members. Default 256.
	MaxMembers int
}

func (o VerifyOptions) withDefaults() (VerifyOptions, error) {
	if o.MaxBytes < 0 || o.MaxMembers < 0 {
		return o, errors.New("negative limit")
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultBundleMaxBytes
	}
	if o.MaxMembers == 0 {
		o.MaxMembers = DefaultBundleMaxMembers
	}
	return o, nil
}

// Verified is a bundle that passed Verify.
type Verified struct {
	Manifest Manifest `json:"manifest"`
	// Digest and Bytes describe the bundle file as a whole. ImportBundle
	// leaves Digest empty (WatchBundles fills it in): it checks every
	// member's sha256 but does not spend a second hash on the whole file.
	Digest Digest `json:"digest,omitempty"`
	Bytes  int64  `json:"bytes"`
	// Signed: the bundle carries manifest.sig.
	Signed bool `json:"signed"`
	// SignedBy is the ID (KeyID) of the trusted key whose signature was
	// verified; empty when no trusted keys were given.
	SignedBy string `json:"signedBy,omitempty"`
}

// VerifyFile verifies the bundle at path; see Verify.
func VerifyFile(ctx context.Context, path string, opts VerifyOptions) (Verified, error) {
	f, err := openRegular(path)
	if err != nil {
		return Verified{}, fmt.Errorf("verify bundle %s: %w", path, err)
	}
	defer f.Close()
	v, err := verifyStream(ctx, f, opts, nil, true)
	if err != nil {
		return Verified{}, fmt.Errorf("verify bundle %s: %w", path, err)
	}
	return v, nil
}

// Verify reads a whole bundle from r, in one pass, and checks it: the
// manifest comes first and is within the limits; the signature, when
// trusted keys are given, is good (ErrSignature); every other entry is a
// regular file with a safe name that the manifest lists, exactly once, with
// the size and sha256 the manifest gives (ErrChecksumMismatch naming the
// member); no listed member is missing and nothing follows the archive's
// end. Links, devices, directories, absolute or ".." names, duplicates,
// unlisted members and truncation fail with ErrUnsafeArchive.
func Verify(ctx context.Context, r io.Reader, opts VerifyOptions) (Verified, error) {
	v, err := verifyStream(ctx, r, opts, nil, true)
	if err != nil {
		return Verified{}, fmt.Errorf("verify bundle: %w", err)
	}
	return v, nil
}

func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	return f, nil
}

// memberSink receives each member's bytes while they are verified: it
// returns where to copy them (nil: nowhere). The writer is closed after the
// member, verified or not; a member counts as verified only once the whole
// bundle is.
type memberSink func(Member) (io.WriteCloser, error)

// hashingReader counts everything read through it, and hashes it when h
// is set.
type hashingReader struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
}

func (r *hashingReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if r.h != nil {
		r.h.Write(p[:n])
	}
	r.n += int64(n)
	return n, err
}

// maxTrailer bounds the zero padding accepted after the end of the archive
// (tar writers pad to a record of up to 10 KiB; some to more).
const maxTrailer = 1 << 20

// verifyStream implements Verify; sink, when set, receives the members'
// bytes; digest says whether to hash the whole stream too.
func verifyStream(ctx context.Context, r io.Reader, opts VerifyOptions, sink memberSink, digest bool) (Verified, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Verified{}, err
	}
	hr := &hashingReader{ctx: ctx, r: r}
	if digest {
		hr.h = sha256.New()
	}
	tr := tar.NewReader(hr)
	entries := 0
	next := func() (*tar.Header, error) {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, err
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			return nil, readError(err, entries)
		}
		entries++
		return hdr, nil
	}
	readSmall := func(hdr *tar.Header, limit int64) ([]byte, error) {
		if err := regularEntry(hdr); err != nil {
			return nil, err
		}
		if hdr.Size > limit {
			return nil, refuse("%s has %d bytes, more than %d", hdr.Name, hdr.Size, limit)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, readError(err, entries)
		}
		return data, nil
	}

	// manifest.json, first.
	hdr, err := next()
	if err == io.EOF {
		return Verified{}, refuse("empty bundle (or not a tar archive)")
	}
	if err != nil {
		return Verified{}, err
	}
	if hdr.Name != BundleManifestName {
		return Verified{}, refuse("first entry is %q, want %s: not an m3sup bundle", hdr.Name, BundleManifestName)
	}
	manifestJSON, err := readSmall(hdr, maxBundleManifest)
	if err != nil {
		return Verified{}, err
	}
	m, err := parseManifest(manifestJSON, opts)
	if err != nil {
		return Verified{}, err
	}

	// manifest.sig, second if present. It is checked before any member is
	// read, so an untrusted bundle costs nothing more.
	v := Verified{Manifest: m}
	hdr, err = next()
	if err != nil && err != io.EOF {
		return Verified{}, err
	}
	if hdr != nil && hdr.Name == BundleSignatureName {
		sig, err := readSmall(hdr, maxSignature)
		if err != nil {
			return Verified{}, err
		}
		v.Signed = true
		if len(opts.TrustedKeys) > 0 {
			if v.SignedBy, err = checkSignature(sig, manifestJSON, opts.TrustedKeys); err != nil {
				return Verified{}, err
			}
		}
		hdr, err = next()
		if err != nil && err != io.EOF {
			return Verified{}, err
		}
	} else if len(opts.TrustedKeys) > 0 {
		return Verified{}, fmt.Errorf("bundle is not signed, and %d trusted keys were given: %w", len(opts.TrustedKeys), ErrSignature)
	}

	// The members.
	listed := make(map[string]Member, len(m.Members))
	for _, mb := range m.Members {
		listed[mb.Path] = mb
	}
	seen := make(map[string]bool, len(m.Members))
	buf := make([]byte, 1<<20)
	for ; hdr != nil; hdr, err = next() {
		if err := verifyMember(tr, hdr, listed, seen, sink, buf); err != nil {
			return Verified{}, err
		}
	}
	if err != io.EOF {
		return Verified{}, err
	}
	for _, mb := range m.Members {
		if !seen[mb.Path] {
			return Verified{}, refuse("member %q is in the manifest but not in the bundle", mb.Path)
		}
	}

	// Only zero padding may follow the end of the archive.
	n, err := io.CopyBuffer(zeroWriter{}, io.LimitReader(hr, maxTrailer+1), buf)
	if err != nil {
		if errors.Is(err, errNotZero) {
			return Verified{}, refuse("data after the end of the archive")
		}
		return Verified{}, readError(err, entries)
	}
	if n > maxTrailer {
		return Verified{}, refuse("more than %d bytes of padding after the end of the archive", maxTrailer)
	}
	if hr.h != nil {
		v.Digest = digestFromSum(hr.h.Sum(nil))
	}
	v.Bytes = hr.n
	return v, nil
}

// regularEntry refuses everything but a regular file with a safe name.
func regularEntry(hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeSymlink:
		return refuse("entry %q is a symlink to %q: links are not allowed", hdr.Name, hdr.Linkname)
	case tar.TypeLink:
		return refuse("entry %q is a hard link to %q: links are not allowed", hdr.Name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return refuse("entry %q is a device or fifo node: not allowed", hdr.Name)
	case tar.TypeDir:
		return refuse("entry %q is a directory: a bundle holds only files", hdr.Name)
	default:
		return refuse("entry %q has unsupported type %q", hdr.Name, hdr.Typeflag)
	}
	clean, err := memberPath(hdr.Name)
	if err != nil {
		return refuse("entry %q: %v", hdr.Name, err)
	}
	if clean != hdr.Name {
		return refuse("entry %q: name is not in canonical form (%q)", hdr.Name, clean)
	}
	return nil
}

func verifyMember(tr *tar.Reader, hdr *tar.Header, listed map[string]Member, seen map[string]bool, sink memberSink, buf []byte) (err error) {
	if err := regularEntry(hdr); err != nil {
		return err
	}
	switch hdr.Name {
	case BundleManifestName, BundleSignatureName:
		return refuse("entry %q appears again (it may only come first or second)", hdr.Name)
	}
	mb, ok := listed[hdr.Name]
	if !ok {
		return refuse("member %q is not in the manifest", hdr.Name)
	}
	if seen[hdr.Name] {
		return refuse("member %q appears twice", hdr.Name)
	}
	seen[hdr.Name] = true
	if hdr.Size != mb.Size {
		return fmt.Errorf("member %q has %d bytes, the manifest says %d: %w", hdr.Name, hdr.Size, mb.Size, ErrChecksumMismatch)
	}
	var w io.Writer = io.Discard
	if sink != nil {
		wc, err := sink(mb)
		if err != nil {
			return fmt.Errorf("member %q: %w", hdr.Name, err)
		}
		if wc != nil {
			defer func() {
				if cerr := wc.Close(); cerr != nil && err == nil {
					err = fmt.Errorf("member %q: %w", hdr.Name, cerr)
				}
			}()
			w = wc
		}
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(h, w), tr, buf)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("bundle is truncated in member %q (%d of %d bytes): %w", hdr.Name, n, mb.Size, ErrUnsafeArchive)
		}
		return fmt.Errorf("member %q: %w", hdr.Name, err)
	}
	if got := digestFromSum(h.Sum(nil)); got != mb.Digest() {
		return fmt.Errorf("member %q: sha256 %s, the manifest says %s: %w", hdr.Name, got.Hex(), mb.SHA256, ErrChecksumMismatch)
	}
	return nil
}

var errNotZero = errors.New("non-zero byte")

// zeroWriter accepts only zero bytes.
type zeroWriter struct{}

func (zeroWriter) Write(p []byte) (int, error) {
	for i, b := range p {
		if b != 0 {
			return i, errNotZero
		}
	}
	return len(p), nil
}
