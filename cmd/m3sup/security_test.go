package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m3sup/m3sup/bundle"
)

// These tests run the m3sup binary (the test binary with M3SUP_TEST_MAIN=1)
// against hostile inputs. They need no root and no M3: everything here
// must be refused before m3sup starts anything.

// m3supRun runs m3sup with args and extra environment, killed after 30 s,
// and returns its combined output and exit status.
func m3supRun(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "M3SUP_TEST_MAIN=1"), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("m3sup %s: still running after 30 s (hung?); output:\n%s", strings.Join(args, " "), out.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("m3sup %s: %v", strings.Join(args, " "), err)
	return "", 0
}

// TestConfigCheckMatchesRun: what run refuses, config check refuses the
// same way: exit 2, the file and the field named, before anything starts.
// A FIFO as the config file is refused at once.
func TestConfigCheckMatchesRun(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	cases := []struct {
		name, body string
		env        []string
		want       []string
	}{
		{"rf.yaml", "cluster:\n  replicationFactor: 100\n", nil, []string{"rf.yaml", "cluster.replicationFactor", "between 1 and 7"}},
		{"ftp.yaml", "release:\n  url: ftp://example.com/m3.tar.gz\n  checksum: sha256:" + strings.Repeat("a", 64) + "\n", nil, []string{"ftp.yaml", "release.url", "ftp://"}},
		{"advertise.yaml", "cluster:\n  advertise: \"not an address!!\"\n", nil, []string{"advertise.yaml", "cluster.advertise", "IP address or a DNS name"}},
		{"weight.yaml", "cluster:\n  weight: 0\n", nil, []string{"weight.yaml", "cluster.weight", "between 1 and 10000"}},
		{"env.yaml", "nodeName: ${M3SUP_TEST_INJECT}\n", []string{"M3SUP_TEST_INJECT=a\nrelease: {insecureSkipChecksum: true}"}, []string{"env.yaml", "nodeName", "M3SUP_TEST_INJECT", "line break"}},
		{"trust.yaml", "bundles:\n  trustedKeys: [" + fifo + "]\n", nil, []string{"bundles.trustedKeys", fifo, "not a regular file"}},
		{"fifo.yaml", "", nil, []string{fifo, "not a regular file (a FIFO)"}},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.name)
		if tc.name != "fifo.yaml" {
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"config", "check", path}, {"run", "--data-dir", dataDir, "--config", path}} {
			t.Run(tc.name+"/"+args[0], func(t *testing.T) {
				out, code := m3supRun(t, tc.env, args...)
				if code != 2 {
					t.Fatalf("exit %d, want 2; output:\n%s", code, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("output does not mention %q:\n%s", w, out)
					}
				}
				if _, err := os.Lstat(dataDir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("run created %s for a refused config", dataDir)
				}
			})
		}
	}
}

// forgedBundles makes bundles that carry a bin/containerd and must never
// be used on a host that trusts site.pub: unsigned, signed by another key,
// signed by the site key with one signature bit flipped, and signed by the
// site key with the manifest edited afterwards. It returns them by name and
// the site's public key file.
func forgedBundles(t *testing.T) (map[string]string, string) {
	t.Helper()
	dir := t.TempDir()
	release := filepath.Join(dir, "m3_1.5.0_linux_amd64.tar.gz")
	writeTestFile(t, release, []byte("not really a release, but its sha256 is checked"), 0o644)
	containerd := filepath.Join(dir, "containerd")
	marker := filepath.Join(dir, "containerd-ran")
	writeTestFile(t, containerd, []byte("#!/bin/sh\n[ \"$1\" = --version ] || touch "+marker+"\necho containerd 9.9.9\n"), 0o755)
	// bundle create asks it for its --version; anything else is a run.
	t.Cleanup(func() {
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the bundled containerd ran")
		}
	})
	sum, _, err := hashTestFile(release)
	if err != nil {
		t.Fatal(err)
	}

	keys := func(name string) (ed25519.PrivateKey, string) {
		var priv, pub bytes.Buffer
		if _, err := bundle.GenerateKey(&priv, &pub); err != nil {
			t.Fatal(err)
		}
		sk, err := bundle.ParsePrivateKey(priv.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		pubFile := filepath.Join(dir, name+".pub")
		writeTestFile(t, pubFile, pub.Bytes(), 0o644)
		return sk, pubFile
	}
	siteKey, sitePub := keys("site")
	evilKey, _ := keys("evil")

	cache, err := bundle.OpenCache(filepath.Join(dir, "maker"), bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string, sk ed25519.PrivateKey) string {
		var buf bytes.Buffer
		_, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{
			Cache: cache, M3Version: "1.5.0", M3supVersion: "test",
			Releases: []bundle.Source{{URL: release, Checksum: sum}},
			Binaries: []string{containerd},
			SignKey:  sk,
		})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".m3sup")
		writeTestFile(t, p, buf.Bytes(), 0o644)
		return p
	}
	signed := create("site-signed", siteKey)
	out := map[string]string{
		"unsigned":         create("unsigned", nil),
		"other key":        create("evil-signed", evilKey),
		"flipped":          rewriteBundleEntry(t, signed, bundle.BundleSignatureName, flipSig(t)),
		"edited manifest":  rewriteBundleEntry(t, signed, bundle.BundleManifestName, func(b []byte) []byte { return bytes.Replace(b, []byte(`"test"`), []byte(`"evil"`), 1) }),
		"empty signature":  rewriteBundleEntry(t, signed, bundle.BundleSignatureName, func([]byte) []byte { return nil }),
		"good (reference)": signed,
	}
	return out, sitePub
}

func writeTestFile(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func hashTestFile(path string) (string, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:]), int64(len(data)), nil
}

func flipSig(t *testing.T) func([]byte) []byte {
	return func(b []byte) []byte {
		var sig map[string]any
		if err := json.Unmarshal(b, &sig); err != nil {
			t.Fatal(err)
		}
		s := []byte(sig["signature"].(string))
		// Swap two base64 characters: still well-formed, no longer valid.
		s[4], s[5] = s[5], s[4]
		if s[4] == s[5] {
			s[4] ^= 0x01
		}
		sig["signature"] = string(s)
		out, _ := json.Marshal(sig)
		return out
	}
}

// rewriteBundleEntry copies a bundle with one entry's body changed.
func rewriteBundleEntry(t *testing.T, path, name string, change func([]byte) []byte) string {
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
		body, _ := io.ReadAll(tr)
		if hdr.Name == name {
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
	p := strings.TrimSuffix(path, ".m3sup") + "-" + strings.ReplaceAll(name, ".", "-") + "-changed.m3sup"
	writeTestFile(t, p, out.Bytes(), 0o644)
	return p
}

// TestForgedBundleRefused: a bundle with a bin/containerd and a forged,
// flipped, emptied, foreign or missing signature is refused by bundle
// verify, bundle import and run --bundle, with an error naming the bundle;
// nothing is created under the data dir and nothing from the bundle runs.
// The correctly signed bundle is imported, so the refusals are about the
// signature.
func TestForgedBundleRefused(t *testing.T) {
	bundles, sitePub := forgedBundles(t)
	for name, path := range bundles {
		for _, withTrust := range []bool{true, false} {
			trust := []string{}
			label := name + "/no trust"
			if withTrust {
				trust = []string{"--trust", sitePub}
				label = name + "/trust"
			}
			t.Run(label, func(t *testing.T) {
				t.Parallel()
				accept := name == "good (reference)" && withTrust
				dataDir := filepath.Join(t.TempDir(), "data")

				out, code := m3supRun(t, nil, append([]string{"bundle", "verify", path}, trust...)...)
				if accept != (code == 0) {
					t.Fatalf("bundle verify: exit %d; output:\n%s", code, out)
				}
				if !accept && !strings.Contains(out, path) {
					t.Errorf("bundle verify does not name the bundle:\n%s", out)
				}

				out, code = m3supRun(t, nil, append([]string{"bundle", "import", "--data-dir", dataDir, path}, trust...)...)
				if accept {
					if code != 0 {
						t.Fatalf("bundle import of the good bundle: exit %d\n%s", code, out)
					}
					fi, err := os.Stat(dataDir)
					if err != nil || fi.Mode().Perm() != 0o700 {
						t.Errorf("data dir created with %v, %v; want 0700", fi.Mode().Perm(), err)
					}
					return
				}
				if code == 0 || !strings.Contains(out, path) || !(strings.Contains(out, "signature") || strings.Contains(out, "signed")) {
					t.Errorf("bundle import: exit %d, want a refusal naming the bundle and its signature:\n%s", code, out)
				}
				if _, err := os.Lstat(dataDir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("bundle import created %s for a refused bundle", dataDir)
				}

				out, code = m3supRun(t, nil, append([]string{"run", "--data-dir", dataDir, "--bundle", path}, trust...)...)
				if code == 0 || !strings.Contains(out, path) {
					t.Errorf("run --bundle: exit %d, want a refusal naming the bundle:\n%s", code, out)
				}
				if _, err := os.Lstat(dataDir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("run --bundle created %s for a refused bundle", dataDir)
				}

				// An existing data dir (a host already in service) stays as it was.
				if err := os.Mkdir(dataDir, 0o700); err != nil {
					t.Fatal(err)
				}
				for _, args := range [][]string{
					append([]string{"bundle", "import", "--data-dir", dataDir, path}, trust...),
					append([]string{"run", "--data-dir", dataDir, "--bundle", path}, trust...),
				} {
					if out, code := m3supRun(t, nil, args...); code == 0 {
						t.Errorf("%s: exit 0\n%s", strings.Join(args, " "), out)
					}
					if entries, err := os.ReadDir(dataDir); err != nil || len(entries) != 0 {
						t.Errorf("%s wrote %v under the data dir (%v)", args[0], entries, err)
					}
				}
			})
		}
	}
}

// TestBundleVerifyReportsUncheckedSignature: without --trust a signature is
// reported as present and not checked, in the table and in JSON, never as
// signed; a bundle of releases alone verifies.
func TestBundleVerifyReportsUncheckedSignature(t *testing.T) {
	dir := t.TempDir()
	release := filepath.Join(dir, "m3_1.5.0_linux_amd64.tar.gz")
	writeTestFile(t, release, []byte("release bytes"), 0o644)
	sum, _, err := hashTestFile(release)
	if err != nil {
		t.Fatal(err)
	}
	var priv, pub bytes.Buffer
	if _, err := bundle.GenerateKey(&priv, &pub); err != nil {
		t.Fatal(err)
	}
	sk, _ := bundle.ParsePrivateKey(priv.Bytes())
	cache, err := bundle.OpenCache(filepath.Join(dir, "maker"), bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{Cache: cache, M3Version: "1.5.0",
		Releases: []bundle.Source{{URL: release, Checksum: sum}}, SignKey: sk}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "releases.m3sup")
	writeTestFile(t, path, buf.Bytes(), 0o644)

	out, code := m3supRun(t, nil, "bundle", "verify", path)
	if code != 0 || !strings.Contains(out, "present, not checked") {
		t.Errorf("exit %d, want 0 and \"present, not checked\":\n%s", code, out)
	}
	out, code = m3supRun(t, nil, "bundle", "verify", "-o", "json", path)
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["signature"] != "present-unchecked" || v["signed"] != nil || v["signedBy"] != nil {
		t.Errorf("JSON verdict (exit %d):\n%s", code, out)
	}

	// A FIFO as the bundle: refused at once.
	fifo := filepath.Join(dir, "fifo.m3sup")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"bundle", "verify", fifo}, {"bundle", "import", "--data-dir", filepath.Join(dir, "data"), fifo}} {
		out, code := m3supRun(t, nil, args...)
		if code == 0 || !strings.Contains(out, fifo) || !strings.Contains(out, "not a regular file (a FIFO)") {
			t.Errorf("%s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("bundle import of a FIFO created the data dir")
	}
}
