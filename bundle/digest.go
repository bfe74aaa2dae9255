package bundle

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by this package wrap them, so test with
// errors.Is.
var (
	// ErrChecksumMismatch: the fetched bytes do not have the expected digest.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrCorrupt: a cached artifact no longer matches its digest and could not
	// be repaired.
	ErrCorrupt = errors.New("cache corrupt")
	// ErrUnsafeArchive: an archive was refused (unsafe member, over the
	// limits, truncated or malformed); nothing of it was kept.
	ErrUnsafeArchive = errors.New("unsafe archive")
	// ErrFetch: the transfer itself failed (network, missing file, timeout).
	ErrFetch = errors.New("fetch failed")
	// ErrNoChecksum: a source has no checksum and does not opt out of it.
	ErrNoChecksum = errors.New("no checksum")
	// ErrSignature: an air-gap bundle's signature is missing, malformed or
	// not made by any trusted key.
	ErrSignature = errors.New("bad signature")
	// ErrUntrusted: an air-gap bundle carries binaries or image archives but
	// is not signed by a trusted key, so it is not used at all.
	ErrUntrusted = errors.New("untrusted bundle")
	// ErrTooLarge: a download is larger than Options.MaxDownload.
	ErrTooLarge = errors.New("too large")
)

const digestPrefix = "sha256:"

// Digest names content by its sha256: "sha256:<64 lowercase hex>".
type Digest string

// ParseDigest parses "sha256:<hex>". Upper-case hex is accepted and
// normalised to lower case.
func ParseDigest(s string) (Digest, error) {
	rest, ok := strings.CutPrefix(s, digestPrefix)
	if !ok {
		return "", fmt.Errorf("parse digest %q: want %q prefix", s, digestPrefix)
	}
	h, err := parseHex(rest)
	if err != nil {
		return "", fmt.Errorf("parse digest %q: %w", s, err)
	}
	return Digest(digestPrefix + h), nil
}

// parseHex validates a 64-character sha256 hex string and lower-cases it.
func parseHex(s string) (string, error) {
	if len(s) != 64 {
		return "", fmt.Errorf("want 64 hex characters, got %d", len(s))
	}
	s = strings.ToLower(s)
	if _, err := hex.DecodeString(s); err != nil {
		return "", errors.New("not hexadecimal")
	}
	return s, nil
}

// Hex returns the 64 hex characters of d without the "sha256:" prefix, or ""
// if d is not a valid digest.
func (d Digest) Hex() string {
	h, ok := strings.CutPrefix(string(d), digestPrefix)
	if !ok || len(h) != 64 {
		return ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return h
}

// String returns d as written.
func (d Digest) String() string { return string(d) }

func digestFromSum(sum []byte) Digest {
	return Digest(digestPrefix + hex.EncodeToString(sum))
}
