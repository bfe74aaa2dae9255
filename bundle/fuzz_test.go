package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fuzz targets run for a short time in `make fuzz` (part of `make
// test`); their seeds are built here, so they stay valid when the format
// changes.

// fuzzKey is a fixed key, so that seeds signed with it verify in every run.
var fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func fuzzPublicKey() ed25519.PublicKey { return fuzzKey.Public().(ed25519.PublicKey) }

// fuzzManifest is a manifest of members with their bodies.
func fuzzManifest(t testing.TB, bodies map[string]string, kinds map[string]MemberKind) ([]byte, []member) {
	t.Helper()
	m := Manifest{FormatVersion: BundleFormatVersion, M3supVersion: "fuzz", Created: time.Unix(1700000000, 0).UTC(), M3Version: "1.5.0"}
	var entries []member
	for _, p := range []string{"releases/m3.tar.gz", "bin/containerd", "images/m3dbnode.tar"} {
		body, ok := bodies[p]
		if !ok {
			continue
		}
		m.Members = append(m.Members, Member{Path: p, Kind: kinds[p], Size: int64(len(body)), SHA256: digestOf([]byte(body)).Hex()})
		entries = append(entries, file(p, 0o644, body))
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(mj, '\n'), entries
}

// fuzzBundleSeeds are whole bundles: good and bad, signed and not.
func fuzzBundleSeeds(t testing.TB) (bundles [][]byte, manifests, sigs [][]byte) {
	t.Helper()
	kinds := map[string]MemberKind{"releases/m3.tar.gz": KindRelease, "bin/containerd": KindBinary, "images/m3dbnode.tar": KindImage}
	for _, bodies := range []map[string]string{
		{"releases/m3.tar.gz": "release"},
		{"releases/m3.tar.gz": "release", "bin/containerd": "#!/bin/sh\n", "images/m3dbnode.tar": "image"},
	} {
		mj, entries := fuzzManifest(t, bodies, kinds)
		sig, err := signManifest(fuzzKey, mj)
		if err != nil {
			t.Fatal(err)
		}
		var flipped signatureFile
		if err := json.Unmarshal(sig, &flipped); err != nil {
			t.Fatal(err)
		}
		flipped.Signature[3] ^= 0x80
		flippedJSON, _ := json.Marshal(flipped)
		manifests = append(manifests, mj)
		sigs = append(sigs, sig, flippedJSON, nil, []byte(`{"algorithm":"ed25519","keyId":"x","signature":""}`))
		head := []member{file(BundleManifestName, 0o644, string(mj))}
		withSig := func(s []byte) []member {
			return append([]member{head[0], file(BundleSignatureName, 0o644, string(s))}, entries...)
		}
		bundles = append(bundles,
			tarOf(t, append(head, entries...)...),
			tarOf(t, withSig(sig)...),
			tarOf(t, withSig(flippedJSON)...),
			tarOf(t, withSig(nil)...),
		)
	}
	return bundles, manifests, sigs
}

// checkVerdict is what must hold for any input: an accepted bundle is
// reported verified exactly when a trusted key checked it, by that key, and
// a bundle with binaries or images is accepted only when verified.
func checkVerdict(t *testing.T, v Verified, err error, keys []ed25519.PublicKey) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrUnsafeArchive) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrUntrusted) && !errors.Is(err, ErrChecksumMismatch) {
			t.Fatalf("error of no known kind: %v", err)
		}
		return
	}
	switch v.Signature {
	case SignatureVerified:
		if len(keys) == 0 || v.SignedBy != KeyID(keys[0]) {
			t.Fatalf("verified by %q with %d trusted keys", v.SignedBy, len(keys))
		}
	case SignatureNone, SignatureUnchecked:
		if len(keys) > 0 || v.SignedBy != "" {
			t.Fatalf("accepted with signature %q by %q and %d trusted keys", v.Signature, v.SignedBy, len(keys))
		}
	default:
		t.Fatalf("unknown signature state %q", v.Signature)
	}
	for _, mb := range v.Manifest.Members {
		if mb.Kind != KindRelease && v.Signature != SignatureVerified {
			t.Fatalf("accepted %s from a bundle whose signature is %q", mb.Path, v.Signature)
		}
	}
}

// FuzzVerifyBundle feeds whole bundle files to Verify, with and without a
// trusted key.
func FuzzVerifyBundle(f *testing.F) {
	bundles, _, _ := fuzzBundleSeeds(f)
	for _, b := range bundles {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	keys := []ed25519.PublicKey{fuzzPublicKey()}
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := VerifyOptions{MaxBytes: 1 << 20, MaxMembers: 16}
		v, err := Verify(context.Background(), bytes.NewReader(data), opts)
		checkVerdict(t, v, err, nil)
		opts.TrustedKeys = keys
		v, err = Verify(context.Background(), bytes.NewReader(data), opts)
		checkVerdict(t, v, err, keys)
	})
}

// FuzzBundleManifest fuzzes the two small documents every bundle starts
// with: manifest.json and manifest.sig, decoded strictly.
func FuzzBundleManifest(f *testing.F) {
	_, manifests, sigs := fuzzBundleSeeds(f)
	for _, m := range manifests {
		for _, s := range sigs {
			f.Add(m, s)
		}
	}
	f.Add([]byte(`{"formatVersion":1,"members":[{"path":"releases/../x","kind":"release","size":1,"sha256":"00"}]}`), []byte(`{}`))
	f.Add([]byte(`{"formatVersion":1}{}`), []byte(`{"algorithm":"ed25519"} trailing`))
	pk := fuzzPublicKey()
	f.Fuzz(func(t *testing.T, manifestJSON, sigJSON []byte) {
		opts, _ := VerifyOptions{}.withDefaults()
		if m, err := parseManifest(manifestJSON, opts); err == nil {
			for _, mb := range m.Members {
				if err := checkMemberPath(mb.Path, mb.Kind); err != nil {
					t.Fatalf("accepted member %q: %v", mb.Path, err)
				}
			}
		} else if !errors.Is(err, ErrUnsafeArchive) {
			t.Fatalf("manifest error of no known kind: %v", err)
		}
		if _, err := parseSignature(sigJSON); err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("signature error of no known kind: %v", err)
		}
		id, err := checkSignature(sigJSON, manifestJSON, []ed25519.PublicKey{pk})
		if err == nil {
			sig, _ := parseSignature(sigJSON)
			if id != KeyID(pk) || !ed25519.Verify(pk, manifestJSON, sig.Signature) {
				t.Fatalf("checkSignature accepted a signature ed25519 does not")
			}
		}
	})
}

// FuzzUnpack feeds archives to the extractor: whatever it accepts is a tree
// of plain files and directories inside its directory, within the limits;
// whatever it refuses is refused with ErrUnsafeArchive (or a plain I/O
// error), never with a panic.
func FuzzUnpack(f *testing.F) {
	f.Add(goodArchive(f))
	f.Add(gzipOf(f, goodArchive(f)))
	f.Add(tarOf(f, file("../evil", 0o644, "x")))
	f.Add(tarOf(f, member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc/passwd"}}))
	f.Add(tarOf(f, dir("a/"), file("a/b", 0o4755, "x"), file("a/b", 0o644, "again")))
	f.Add(tarOf(f, file(ManifestName, 0o644, "{}")))
	f.Add(gzipOf(f, []byte("not a tar")))
	const maxBytes, maxFiles = 64 << 10, 64
	c, err := OpenCache(f.TempDir(), Options{MaxBytes: maxBytes, MaxFiles: maxFiles})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		archive := filepath.Join(base, "archive")
		if err := os.WriteFile(archive, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(base, "out")
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		m, err := c.extract(context.Background(), archive, out)
		if got := dirEntries(t, base); got != "archive,out" {
			t.Fatalf("extract wrote beside its directory: %s", got)
		}
		if err != nil {
			return
		}
		var total int64
		files := 0
		werr := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case d.Type().IsRegular():
				fi, err := d.Info()
				if err != nil {
					return err
				}
				total += fi.Size()
				files++
			case d.IsDir():
			default:
				t.Fatalf("extract made %s, a %s", p, d.Type())
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		if total > maxBytes || files > maxFiles || files != len(m.Files) {
			t.Fatalf("extract accepted %d files of %d bytes (manifest lists %d; limits %d files, %d bytes)", files, total, len(m.Files), maxFiles, maxBytes)
		}
	})
}

func dirEntries(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}
