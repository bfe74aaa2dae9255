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
	"strings"

	"github.com/m3sup/m3sup/internal/regularfile"
)

// Defaults for zero fields of VerifyOptions.
const (
	DefaultBundleMaxBytes   = int64(16) << 30 // 16 GiB of members
	DefaultBundleMaxMembers = 256
)

// VerifyOptions say what a bundle must satisfy. The zero value checks
// content and structure, and accepts only bundles that carry nothing but
// release tarballs (whose sha256 the manifest gives and import checks).
type VerifyOptions struct {
	// TrustedKeys, when not empty, require the bundle to be signed by one of
	// them: a missing or bad signature fails with ErrSignature. With no
	// trusted keys a well-formed signature is not checked (Verified.Signature
	// is SignatureUnchecked) and a malformed one fails with ErrSignature.
	//
	// A bundle that carries binaries (bin/) or image archives (images/) is
	// used only when its signature was verified against one of these keys:
	// the binaries run as root and the images become M3's containers.
	// Without that, it fails with ErrUntrusted before any member is read.
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

// SignatureState is what verification established about who made a bundle.
type SignatureState string

// Signature states. Only SignatureVerified says anything about the bundle's
// author; SignatureUnchecked means "anyone could have written this".
const (
	// SignatureNone: the bundle has no manifest.sig.
	SignatureNone SignatureState = "none"
	// SignatureUnchecked: manifest.sig is present and well-formed, but no
	// trusted key was given to check it against.
	SignatureUnchecked SignatureState = "present-unchecked"
	// SignatureVerified: manifest.sig was made by the trusted key SignedBy.
	SignatureVerified SignatureState = "verified"
)

// Verified is a bundle that passed Verify.
type Verified struct {
	Manifest Manifest `json:"manifest"`
	// Digest and Bytes describe the bundle file as a whole. ImportBundle
	// leaves Digest empty (WatchBundles fills it in): it checks every
	// member's sha256 but does not spend a second hash on the whole file.
	// PrecheckFile leaves both empty: it reads only the manifest and the
	// signature.
	Digest Digest `json:"digest,omitempty"`
	Bytes  int64  `json:"bytes"`
	// Signature says whether manifest.sig is there and was checked.
	Signature SignatureState `json:"signature"`
	// SignedBy is the ID (KeyID) of the trusted key whose signature was
	// verified; empty unless Signature is SignatureVerified.
	SignedBy string `json:"signedBy,omitempty"`
}

// Trusted reports whether the bundle's signature was verified against a
// trusted key.
func (v Verified) Trusted() bool { return v.Signature == SignatureVerified && v.SignedBy != "" }

// VerifyFile verifies the bundle at path; see Verify. path must be a
// regular file: a FIFO, device or directory fails at once.
func VerifyFile(ctx context.Context, path string, opts VerifyOptions) (Verified, error) {
	f, err := regularfile.OpenNoFollow(path)
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

// PrecheckFile reads only the manifest and signature of the bundle at path
// and applies everything that depends on them alone: the manifest's limits,
// the signature against opts.TrustedKeys, and the rule that binaries and
// image archives need a trusted signature. It is cheap (two small entries),
// so callers run it before they create or write anything; the members are
// checked by VerifyFile or ImportBundle.
func PrecheckFile(ctx context.Context, path string, opts VerifyOptions) (Verified, error) {
	f, err := regularfile.OpenNoFollow(path)
	if err != nil {
		return Verified{}, fmt.Errorf("check bundle %s: %w", path, err)
	}
	defer f.Close()
	opts, err = opts.withDefaults()
	if err != nil {
		return Verified{}, fmt.Errorf("check bundle %s: %w", path, err)
	}
	br := newBundleReader(ctx, f, false)
	v, _, err := br.head(opts)
	if err != nil {
		return Verified{}, fmt.Errorf("check bundle %s: %w", path, err)
	}
	return v, nil
}

// Verify reads a whole bundle from r, in one pass, and checks it: the
// manifest comes first and is within the limits; the signature is
// well-formed and, when trusted keys are given, good (ErrSignature); a
// bundle with binaries or image archives is signed by a trusted key
// (ErrUntrusted); every other entry is a regular file with a safe name that
// the manifest lists, exactly once, with the size and sha256 the manifest
// gives (ErrChecksumMismatch naming the member); no listed member is
// missing and nothing follows the archive's end. Links, devices,
// directories, absolute or ".." names, duplicates, unlisted members and
// truncation fail with ErrUnsafeArchive.
func Verify(ctx context.Context, r io.Reader, opts VerifyOptions) (Verified, error) {
	v, err := verifyStream(ctx, r, opts, nil, true)
	if err != nil {
		return Verified{}, fmt.Errorf("verify bundle: %w", err)
	}
	return v, nil
}

// checkTrust is the rule for what a bundle may carry: releases need no
// signature (their sha256 is in the manifest and checked, and the release
// checksum the operator configured is checked again when it is used), but
// binaries run as root and image archives become M3's containers, so a
// bundle carrying either is used only when a trusted key signed it.
func checkTrust(m Manifest, sig SignatureState) error {
	if sig == SignatureVerified {
		return nil
	}
	var carried []string
	for _, mb := range m.Members {
		if mb.Kind == KindBinary || mb.Kind == KindImage {
			carried = append(carried, mb.Path)
		}
	}
	if len(carried) == 0 {
		return nil
	}
	why := "it is not signed (make it with bundle create --sign KEY)"
	if sig == SignatureUnchecked {
		why = "it is signed, but no trusted key was given to check the signature (--trust KEY.pub or bundles.trustedKeys)"
	}
	return fmt.Errorf("bundle carries %s: binaries and image archives are used only from a bundle signed by a trusted key, and %s: %w",
		strings.Join(carried, ", "), why, ErrUntrusted)
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

// bundleReader reads a bundle's tar stream entry by entry.
type bundleReader struct {
	ctx     context.Context
	hr      *hashingReader
	tr      *tar.Reader
	entries int
}

func newBundleReader(ctx context.Context, r io.Reader, digest bool) *bundleReader {
	hr := &hashingReader{ctx: ctx, r: r}
	if digest {
		hr.h = sha256.New()
	}
	return &bundleReader{ctx: ctx, hr: hr, tr: tar.NewReader(hr)}
}

// next returns the next entry's header, or io.EOF at the archive's end.
func (b *bundleReader) next() (*tar.Header, error) {
	hdr, err := b.tr.Next()
	if err == io.EOF {
		return nil, err
	}
	if err != nil {
		if cerr := b.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, readError(err, b.entries)
	}
	b.entries++
	return hdr, nil
}

// readSmall reads the current entry, a regular file of at most limit bytes.
func (b *bundleReader) readSmall(hdr *tar.Header, limit int64) ([]byte, error) {
	if err := regularEntry(hdr); err != nil {
		return nil, err
	}
	if hdr.Size > limit {
		return nil, refuse("%s has %d bytes, more than %d", hdr.Name, hdr.Size, limit)
	}
	data, err := io.ReadAll(b.tr)
	if err != nil {
		return nil, readError(err, b.entries)
	}
	return data, nil
}

// head reads manifest.json and manifest.sig and applies everything that
// depends on them alone: the manifest's limits, the signature and the trust
// rule (checkTrust). It returns the header of the first member (nil when
// there is none), so an untrusted bundle costs no more than two small reads.
func (b *bundleReader) head(opts VerifyOptions) (Verified, *tar.Header, error) {
	// manifest.json, first.
	hdr, err := b.next()
	if err == io.EOF {
		return Verified{}, nil, refuse("empty bundle (or not a tar archive)")
	}
	if err != nil {
		return Verified{}, nil, err
	}
	if hdr.Name != BundleManifestName {
		return Verified{}, nil, refuse("first entry is %q, want %s: not an m3sup bundle", hdr.Name, BundleManifestName)
	}
	manifestJSON, err := b.readSmall(hdr, maxBundleManifest)
	if err != nil {
		return Verified{}, nil, err
	}
	m, err := parseManifest(manifestJSON, opts)
	if err != nil {
		return Verified{}, nil, err
	}

	// manifest.sig, second if present.
	v := Verified{Manifest: m, Signature: SignatureNone}
	hdr, err = b.next()
	if err != nil && err != io.EOF {
		return Verified{}, nil, err
	}
	if hdr != nil && hdr.Name == BundleSignatureName {
		sig, err := b.readSmall(hdr, maxSignature)
		if err != nil {
			return Verified{}, nil, err
		}
		if len(opts.TrustedKeys) > 0 {
			if v.SignedBy, err = checkSignature(sig, manifestJSON, opts.TrustedKeys); err != nil {
				return Verified{}, nil, err
			}
			v.Signature = SignatureVerified
		} else {
			if _, err := parseSignature(sig); err != nil {
				return Verified{}, nil, err
			}
			v.Signature = SignatureUnchecked
		}
		hdr, err = b.next()
		if err != nil && err != io.EOF {
			return Verified{}, nil, err
		}
	} else if len(opts.TrustedKeys) > 0 {
		return Verified{}, nil, fmt.Errorf("bundle is not signed (it has no %s), and %d trusted keys were given: %w", BundleSignatureName, len(opts.TrustedKeys), ErrSignature)
	}
	if err := checkTrust(m, v.Signature); err != nil {
		return Verified{}, nil, err
	}
	return v, hdr, nil
}

// verifyStream implements Verify; sink, when set, receives the members'
// bytes; digest says whether to hash the whole stream too.
func verifyStream(ctx context.Context, r io.Reader, opts VerifyOptions, sink memberSink, digest bool) (Verified, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Verified{}, err
	}
	br := newBundleReader(ctx, r, digest)
	hr, tr, next := br.hr, br.tr, br.next
	v, hdr, err := br.head(opts)
	if err != nil {
		return Verified{}, err
	}
	m := v.Manifest

	// The members.
	listed := make(map[string]Member, len(m.Members))
	for _, mb := range m.Members {
		listed[mb.Path] = mb
	}
	seen := make(map[string]bool, len(m.Members))
	buf := make([]byte, 1<<20)
	for hdr != nil {
		if err := verifyMember(tr, hdr, listed, seen, sink, buf); err != nil {
			return Verified{}, err
		}
		if hdr, err = next(); err != nil && err != io.EOF {
			return Verified{}, err
		}
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
		return Verified{}, readError(err, br.entries)
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
