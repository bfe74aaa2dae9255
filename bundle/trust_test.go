package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rewriteEntry copies the bundle at path with the body of entry name
// replaced by change(body); everything else is kept byte for byte.
func rewriteEntry(t testing.TB, path, name, suffix string, change func([]byte) []byte) string {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	found := false
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
		if hdr.Name == name {
			found = true
			body = change(body)
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
	if !found {
		t.Fatalf("%s has no entry %s", path, name)
	}
	p := path + "." + suffix
	writeFile(t, p, out.Bytes(), 0o644)
	return p
}

// flipSignature flips one bit of the ed25519 signature, keeping the JSON
// well-formed.
func flipSignature(t testing.TB) func([]byte) []byte {
	return func(body []byte) []byte {
		var sig signatureFile
		if err := json.Unmarshal(body, &sig); err != nil {
			t.Fatal(err)
		}
		sig.Signature[10] ^= 0x01
		out, err := json.Marshal(sig)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// TestBundleTrustRule: releases may come from any bundle (their sha256 is
// checked); binaries and image archives only from a bundle signed by a
// trusted key. A signature is reported verified only when a trusted key
// checked it; a forged, flipped, emptied or out-of-date signature never is.
func TestBundleTrustRule(t *testing.T) {
	f := newFixture(t)
	sk, pk := genKey(t)
	_, otherPK := genKey(t)
	trusted := []ed25519.PublicKey{pk}

	contents := map[string]CreateOptions{}
	rel := f.options()
	rel.Images, rel.Binaries = nil, nil
	contents["releases"] = rel
	bin := f.options()
	bin.Images, bin.Binaries = nil, f.binaries[:1] // bin/containerd
	contents["binary"] = bin
	img := f.options()
	img.Binaries = nil
	contents["image"] = img

	type variant struct{ unsigned, signed, flipped, edited, empty string }
	variants := map[string]variant{}
	for name, opts := range contents {
		var v variant
		v.unsigned, _ = f.create(t, name+"-unsigned.m3sup", opts)
		opts.SignKey = sk
		v.signed, _ = f.create(t, name+"-signed.m3sup", opts)
		v.flipped = rewriteEntry(t, v.signed, BundleSignatureName, "flipped", flipSignature(t))
		v.edited = rewriteManifest(t, v.signed, func(m *Manifest) { m.M3supVersion = "edited" })
		v.empty = rewriteEntry(t, v.signed, BundleSignatureName, "empty", func([]byte) []byte { return nil })
		variants[name] = v
	}

	tests := []struct {
		name    string
		content string
		pick    func(variant) string
		keys    []ed25519.PublicKey
		want    error          // nil: accepted
		state   SignatureState // when accepted
		mention string         // when refused
	}{
		{"unsigned releases", "releases", func(v variant) string { return v.unsigned }, nil, nil, SignatureNone, ""},
		{"unsigned releases, key required", "releases", func(v variant) string { return v.unsigned }, trusted, ErrSignature, "", "not signed"},
		{"signed releases, no key", "releases", func(v variant) string { return v.signed }, nil, nil, SignatureUnchecked, ""},
		{"signed releases, trusted", "releases", func(v variant) string { return v.signed }, trusted, nil, SignatureVerified, ""},
		{"flipped signature, no key", "releases", func(v variant) string { return v.flipped }, nil, nil, SignatureUnchecked, ""},
		{"flipped signature, key", "releases", func(v variant) string { return v.flipped }, trusted, ErrSignature, "", "not signed by any"},
		{"edited after signing, key", "releases", func(v variant) string { return v.edited }, trusted, ErrSignature, "", "not signed by any"},
		{"empty signature, no key", "releases", func(v variant) string { return v.empty }, nil, ErrSignature, "", "manifest.sig"},
		{"empty signature, key", "releases", func(v variant) string { return v.empty }, trusted, ErrSignature, "", "manifest.sig"},

		{"unsigned binary", "binary", func(v variant) string { return v.unsigned }, nil, ErrUntrusted, "", "bin/containerd"},
		{"signed binary, no key", "binary", func(v variant) string { return v.signed }, nil, ErrUntrusted, "", "no trusted key was given"},
		{"signed binary, other key", "binary", func(v variant) string { return v.signed }, []ed25519.PublicKey{otherPK}, ErrSignature, "", "not signed by any"},
		{"signed binary, trusted", "binary", func(v variant) string { return v.signed }, trusted, nil, SignatureVerified, ""},
		{"binary, flipped signature, no key", "binary", func(v variant) string { return v.flipped }, nil, ErrUntrusted, "", "bin/containerd"},
		{"binary, flipped signature, key", "binary", func(v variant) string { return v.flipped }, trusted, ErrSignature, "", "not signed by any"},
		{"binary, edited after signing, key", "binary", func(v variant) string { return v.edited }, trusted, ErrSignature, "", "not signed by any"},
		{"binary, empty signature, key", "binary", func(v variant) string { return v.empty }, trusted, ErrSignature, "", "manifest.sig"},

		{"unsigned image", "image", func(v variant) string { return v.unsigned }, nil, ErrUntrusted, "", "images/m3dbnode-image.tar"},
		{"signed image, no key", "image", func(v variant) string { return v.signed }, nil, ErrUntrusted, "", "images/m3dbnode-image.tar"},
		{"signed image, trusted", "image", func(v variant) string { return v.signed }, trusted, nil, SignatureVerified, ""},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.pick(variants[tt.content])
			opts := VerifyOptions{TrustedKeys: tt.keys}
			check := func(what string, v Verified, err error) {
				t.Helper()
				if tt.want != nil {
					if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), path) {
						t.Errorf("%s = %v; want %v naming %s and mentioning %q", what, err, tt.want, path, tt.mention)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if v.Signature != tt.state {
					t.Errorf("%s: signature %q, want %q", what, v.Signature, tt.state)
				}
				if (v.SignedBy != "") != (tt.state == SignatureVerified) || v.Trusted() != (tt.state == SignatureVerified) {
					t.Errorf("%s: signed by %q, trusted %v with signature %q", what, v.SignedBy, v.Trusted(), v.Signature)
				}
			}
			v, err := PrecheckFile(ctx, path, opts)
			check("PrecheckFile", v, err)
			v, err = VerifyFile(ctx, path, opts)
			check("VerifyFile", v, err)
			c, base := freshCache(t)
			res, err := c.ImportBundle(ctx, path, opts)
			check("ImportBundle", res.Bundle, err)
			if tt.want != nil {
				assertNothingImported(t, c, base)
			} else if tt.state != SignatureVerified && (len(res.Binaries) > 0 || len(res.Images) > 0) {
				t.Errorf("untrusted import placed %d binaries and %d images", len(res.Binaries), len(res.Images))
			}
		})
	}
}

// TestVerifiedJSON: the JSON report says what was checked, never a bare
// "signed": true.
func TestVerifiedJSON(t *testing.T) {
	for _, tt := range []struct {
		v    Verified
		want string
	}{
		{Verified{Signature: SignatureNone}, `"signature":"none"`},
		{Verified{Signature: SignatureUnchecked}, `"signature":"present-unchecked"`},
		{Verified{Signature: SignatureVerified, SignedBy: "abc"}, `"signature":"verified","signedBy":"abc"`},
	} {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tt.want) || strings.Contains(string(b), `"signed"`) {
			t.Errorf("%s: want %s and no \"signed\"", b, tt.want)
		}
	}
}

// TestBundleNonRegularFiles: a FIFO, a directory or a device given as a
// bundle fails at once with an error naming the file and its type; nothing
// waits for a writer that never comes.
func TestBundleNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "bundle.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, mention string }{
		{fifo, "FIFO"},
		{dir, "directory"},
		{"/dev/null", "device"},
	} {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			c, base := freshCache(t)
			for what, fn := range map[string]func() error{
				"VerifyFile":   func() error { _, err := VerifyFile(context.Background(), tt.path, VerifyOptions{}); return err },
				"PrecheckFile": func() error { _, err := PrecheckFile(context.Background(), tt.path, VerifyOptions{}); return err },
				"ImportBundle": func() error { _, err := c.ImportBundle(context.Background(), tt.path, VerifyOptions{}); return err },
			} {
				done := make(chan error, 1)
				go func() { done <- fn() }()
				select {
				case err := <-done:
					if err == nil || !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), tt.path) {
						t.Errorf("%s(%s) = %v; want an error naming the file and %q", what, tt.path, err, tt.mention)
					}
				case <-time.After(5 * time.Second):
					// Unblock the reader so the test binary can exit.
					if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						w.Close()
					}
					t.Fatalf("%s(%s) still blocked after 5 s", what, tt.path)
				}
			}
			assertNothingImported(t, c, base)
		})
	}
}
