package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/supervisor/config"
)

// Where M3 publishes a release; the same defaults as the config's.
const (
	bundleReleaseURL  = "https://github.com/m3db/m3/releases/download/v%[1]s/m3_%[1]s_linux_amd64.tar.gz"
	bundleChecksumURL = "https://github.com/m3db/m3/releases/download/v%[1]s/m3_%[1]s_checksums.txt"
)

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Make, check and import air-gap bundles (one file for a host without network)",
		Long: `An air-gap bundle is one file (an uncompressed tar) that carries the M3
release, optional image archives and optionally containerd and runc, with a
manifest of every member's size and sha256 and an optional ed25519
signature. Make it where there is network, carry it over, then either

  m3sup bundle import FILE [--trust KEY.pub]   (into <data-dir>/cache)
  m3sup run --bundle FILE                      (import, then run from it)

or drop it into <data-dir>/bundles/ of a running m3sup.`,
	}
	cmd.AddCommand(newBundleCreateCmd(), newBundleVerifyCmd(), newBundleImportCmd(), newBundleKeygenCmd())
	return cmd
}

func bundleUsageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func newBundleCreateCmd() *cobra.Command {
	var (
		m3Version, from, checksum, signKey, output, cacheDir string
		images                                               []string
		withContainerd                                       bool
	)
	cmd := &cobra.Command{
		Use:   "create -o FILE",
		Short: "Make a bundle: the verified M3 release, image archives, containerd and runc",
		Long: `Make a bundle. The release is fetched and verified exactly as m3sup run
does (go-getter, sha256 required) before it goes in.

--from takes a URL, a file, or a directory holding m3_<version>_linux_amd64.tar.gz
(and m3_<version>_checksums.txt, used when --checksum is not given). With no
--from, the GitHub release of --version and its checksums file are used.`,
		Example: `  m3sup bundle create --version 1.5.0 -o m3-1.5.0.m3sup
  m3sup bundle create --from .cache/m3-release --with-containerd --sign ops.key -o m3.m3sup`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&m3Version, "version", config.DefaultReleaseVersion, "M3 version")
	f.StringVar(&from, "from", "", "release URL, file or directory (default: the GitHub release)")
	f.StringVar(&checksum, "checksum", "", "release checksum: sha256:<hex> or file:<checksums URL>")
	f.StringArrayVar(&images, "image-archive", nil, "image archive (OCI layout or docker-save tar) to carry (repeatable)")
	var imageRefs, plainHTTP []string
	f.StringArrayVar(&imageRefs, "image", nil, "image to pull and carry, e.g. quay.io/m3db/m3dbnode:v1.5.0 (repeatable)")
	f.StringArrayVar(&plainHTTP, "plain-http-registry", nil, "registry host:port to pull --image from over plain HTTP (repeatable; loopback test registries)")
	f.BoolVar(&withContainerd, "with-containerd", false, "carry this host's containerd, containerd-shim-runc-v2 and runc")
	f.StringVar(&signKey, "sign", "", "sign with this ed25519 private key file (PEM, as m3sup bundle keygen writes)")
	f.StringVarP(&output, "output", "o", "", "bundle file to write (required)")
	f.StringVar(&cacheDir, "cache-dir", "", "artifact cache to fetch through (default: a temporary one)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output == "" {
			return bundleUsageError("bundle create: -o FILE is required")
		}
		src, err := bundleReleaseSource(m3Version, from, checksum)
		if err != nil {
			return err
		}
		var sk ed25519.PrivateKey
		if signKey != "" {
			data, err := os.ReadFile(signKey)
			if err != nil {
				return bundleUsageError("--sign: %w", err)
			}
			if sk, err = bundle.ParsePrivateKey(data); err != nil {
				return bundleUsageError("--sign %s: %w", signKey, err)
			}
		}
		if cacheDir == "" {
			tmp, err := os.MkdirTemp("", "m3sup-bundle-cache-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			cacheDir = tmp
		}
		var progress io.Writer
		if isTerminal(os.Stdout) {
			progress = os.Stdout
		}
		cache, err := bundle.OpenCache(cacheDir, bundle.Options{Progress: progress})
		if err != nil {
			return err
		}
		for _, ref := range imageRefs {
			dst := filepath.Join(cacheDir, fmt.Sprintf("image-%d.tar", len(images)))
			host, _, _ := strings.Cut(ref, "/")
			d, err := bundle.PullImageArchive(cmd.Context(), ref, dst, bundle.ImagePullOptions{PlainHTTP: slices.Contains(plainHTTP, host)})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "pulled %s (%s)\n", ref, d)
			images = append(images, dst)
		}
		opts := bundle.CreateOptions{
			Cache: cache, M3Version: m3Version, M3supVersion: version,
			Releases: []bundle.Source{src}, Images: images, SignKey: sk,
		}
		if withContainerd {
			opts.Binaries = bundle.ContainerdBinaries
		}

		// Write beside the target, then rename: no half bundle under its name.
		out, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".tmp-")
		if err != nil {
			return err
		}
		committed := false
		defer func() {
			if !committed {
				out.Close()
				os.Remove(out.Name())
			}
		}()
		h := sha256.New()
		m, err := bundle.Create(cmd.Context(), io.MultiWriter(out, h), opts)
		if err != nil {
			return err
		}
		if err := out.Sync(); err != nil {
			return err
		}
		if err := out.Chmod(0o644); err != nil {
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		if err := os.Rename(out.Name(), output); err != nil {
			return err
		}
		committed = true
		fmt.Fprintf(os.Stdout, "wrote %s: M3 %s, %d members, sha256:%x\n", output, m.M3Version, len(m.Members), h.Sum(nil))
		bundlePrintMembers(os.Stdout, m.Members)
		if sk != nil {
			fmt.Fprintf(os.Stdout, "signed with key %s\n", bundle.KeyID(sk.Public().(ed25519.PublicKey)))
		}
		return nil
	}
	return cmd
}

// bundleReleaseSource turns --version/--from/--checksum into a source.
func bundleReleaseSource(m3Version, from, checksum string) (bundle.Source, error) {
	if m3Version == "" {
		return bundle.Source{}, bundleUsageError("--version must not be empty")
	}
	if checksum != "" && !strings.HasPrefix(checksum, "sha256:") && !strings.HasPrefix(checksum, "file:") {
		return bundle.Source{}, bundleUsageError("--checksum %q: want sha256:<hex> or file:<checksums URL>", checksum)
	}
	if from == "" {
		src := bundle.Source{URL: fmt.Sprintf(bundleReleaseURL, m3Version), Checksum: checksum}
		if src.Checksum == "" {
			src.Checksum = "file:" + fmt.Sprintf(bundleChecksumURL, m3Version)
		}
		return src, nil
	}
	if fi, err := os.Stat(from); err == nil && fi.IsDir() {
		src := bundle.Source{URL: filepath.Join(from, fmt.Sprintf("m3_%s_linux_amd64.tar.gz", m3Version)), Checksum: checksum}
		if src.Checksum == "" {
			sums := filepath.Join(from, fmt.Sprintf("m3_%s_checksums.txt", m3Version))
			if _, err := os.Stat(sums); err != nil {
				return bundle.Source{}, bundleUsageError("--from %s: no %s there; give --checksum", from, filepath.Base(sums))
			}
			src.Checksum = "file:" + sums
		}
		return src, nil
	}
	if checksum == "" {
		return bundle.Source{}, bundleUsageError("--from %s needs --checksum sha256:<hex> or file:<checksums URL>", from)
	}
	return bundle.Source{URL: from, Checksum: checksum}, nil
}

// bundleTrustFlag adds --trust PUBKEY (repeatable) and returns a loader.
func bundleTrustFlag(cmd *cobra.Command) func() ([]ed25519.PublicKey, error) {
	files := cmd.Flags().StringArray("trust", nil, "require a signature by this ed25519 public key (PEM; repeatable: any one will do)")
	return func() ([]ed25519.PublicKey, error) {
		keys, err := loadTrustedKeys(*files)
		if err != nil {
			return nil, bundleUsageError("--trust: %w", err)
		}
		return keys, nil
	}
}

func newBundleVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a bundle: every member's size and sha256, its structure, and its signature with --trust",
		Long: `Check a bundle as import would: every member's size and sha256, its
structure, and, with --trust, its signature. Without --trust a signature is
only checked for form and reported "present, not checked" (JSON:
"signature": "present-unchecked"): anyone could have made it. A bundle that
carries binaries or image archives fails without a trusted signature, as its
import would.`,
		Args: cobra.ExactArgs(1),
	}
	trust := bundleTrustFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		keys, err := trust()
		if err != nil {
			return err
		}
		v, err := bundle.VerifyFile(cmd.Context(), args[0], bundle.VerifyOptions{TrustedKeys: keys})
		if err != nil {
			return err
		}
		if *out == "json" {
			return bundleWriteJSON(os.Stdout, v)
		}
		fmt.Fprintf(os.Stdout, "ok: %s\n", args[0])
		bundlePrintVerified(os.Stdout, v)
		return nil
	}
	return cmd
}

func newBundleImportCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Verify a bundle and place its members in <data-dir>/cache (nothing is written if it fails)",
		Long: `Verify a bundle and place its members in the artifact cache under
<data-dir>/cache: the release where m3sup run looks for it, image archives in
cache/images/, binaries in cache/bin/. Importing again writes nothing.

A bundle that carries binaries or image archives is imported only when it is
signed by a key given with --trust; a bundle of releases alone needs no
signature (each release's sha256 is checked against the manifest). A missing
data dir is created with mode 0700.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", config.DefaultDataDir, "m3sup's data directory")
	trust := bundleTrustFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		keys, err := trust()
		if err != nil {
			return err
		}
		verify := bundle.VerifyOptions{TrustedKeys: keys}
		// What the manifest and signature alone decide (an untrusted bundle
		// with binaries, a forged signature) is refused before the data dir
		// or the cache is created.
		if _, err := bundle.PrecheckFile(cmd.Context(), args[0], verify); err != nil {
			return err
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		cache, err := bundle.OpenCache(filepath.Join(dataDir, "cache"), bundle.Options{})
		if err != nil {
			return err
		}
		res, err := cache.ImportBundle(cmd.Context(), args[0], verify)
		if err != nil {
			return err
		}
		if *out == "json" {
			return bundleWriteJSON(os.Stdout, res)
		}
		fmt.Fprintf(os.Stdout, "imported %s: %d new file(s) in %s\n", args[0], res.Written, cache.Dir())
		bundlePrintVerified(os.Stdout, res.Bundle)
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nMEMBER\tSTATE\tCACHED AT")
		for _, f := range append(append(append([]bundle.ImportedFile(nil), res.Releases...), res.Images...), res.Binaries...) {
			state := "already there"
			if f.New {
				state = "new"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Member.Path, state, f.Path)
		}
		_ = tw.Flush()
		for _, r := range res.Releases {
			fmt.Fprintf(os.Stdout, "\nto run M3 %s from it with no network: m3sup run --data-dir %s --release-checksum %s\n",
				r.Member.Version, dataDir, r.Member.Digest())
		}
		return nil
	}
	return cmd
}

func newBundleKeygenCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "keygen -o PREFIX",
		Short: "Make an ed25519 signing key pair: PREFIX.key (private, 0600) and PREFIX.pub",
		Long: `Make an ed25519 key pair for signing bundles, as PEM: PREFIX.key (PKCS #8,
mode 0600; keep it secret) and PREFIX.pub (PKIX; give it to the hosts, for
--trust). openssl reads and writes the same format:
openssl genpkey -algorithm ed25519 -out PREFIX.key; openssl pkey -in PREFIX.key -pubout -out PREFIX.pub`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&prefix, "output", "o", "", "file name prefix (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if prefix == "" {
			return bundleUsageError("bundle keygen: -o PREFIX is required")
		}
		var priv, pub bytes.Buffer
		id, err := bundle.GenerateKey(&priv, &pub)
		if err != nil {
			return err
		}
		keyFile, pubFile := prefix+".key", prefix+".pub"
		for _, p := range []string{keyFile, pubFile} {
			if _, err := os.Lstat(p); err == nil {
				return bundleUsageError("%s exists; not overwriting a key", p)
			}
		}
		if err := bundleWriteNew(keyFile, priv.Bytes(), 0o600); err != nil {
			return err
		}
		if err := bundleWriteNew(pubFile, pub.Bytes(), 0o644); err != nil {
			os.Remove(keyFile)
			return err
		}
		fmt.Fprintf(os.Stdout, "key %s\n  private: %s (keep it secret; for bundle create --sign)\n  public:  %s (for --trust)\n", id, keyFile, pubFile)
		return nil
	}
	return cmd
}

// bundleWriteNew writes a file that must not exist yet.
func bundleWriteNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func bundleWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func bundlePrintVerified(w io.Writer, v bundle.Verified) {
	m := v.Manifest
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if v.Digest != "" {
		fmt.Fprintf(tw, "bundle\t%s, %d bytes\n", v.Digest, v.Bytes)
	}
	fmt.Fprintf(tw, "format\t%d (made by m3sup %s at %s)\n", m.FormatVersion, m.M3supVersion, m.Created.Format("2006-01-02T15:04:05Z07:00"))
	fmt.Fprintf(tw, "M3\t%s\n", m.M3Version)
	sig := "none"
	switch v.Signature {
	case bundle.SignatureVerified:
		sig = "good, by trusted key " + v.SignedBy
	case bundle.SignatureUnchecked:
		sig = "present, not checked (no --trust: anyone could have made this bundle)"
	}
	fmt.Fprintf(tw, "signature\t%s\n", sig)
	_ = tw.Flush()
	fmt.Fprintln(w)
	bundlePrintMembers(w, m.Members)
}

func bundlePrintMembers(w io.Writer, members []bundle.Member) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tKIND\tSIZE\tSHA256\tVERSION")
	for _, mb := range members {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", mb.Path, mb.Kind, mb.Size, mb.SHA256, mb.Version)
	}
	_ = tw.Flush()
}
