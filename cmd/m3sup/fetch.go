package main

import (
	"encoding/json"
	"fmt"
	"github.com/dustin/go-humanize"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/bundle"
)

// fetchResult is what `m3sup fetch` prints.
type fetchResult struct {
	Version     string  `json:"version,omitempty"`
	URL         string  `json:"url"`
	Digest      string  `json:"digest"`
	Path        string  `json:"path"`               // the verified artifact in the cache
	Unpacked    string  `json:"unpacked,omitempty"` // its extracted tree
	Bytes       int64   `json:"bytes"`
	CacheHit    bool    `json:"cacheHit"` // nothing was transferred
	Took        string  `json:"took"`
	TookSeconds float64 `json:"tookSeconds"`
}

// newFetchCmd is `m3sup fetch`: the release step of `m3sup run` alone —
// fetch, verify and unpack the configured M3 release into
// <data-dir>/cache, run nothing. A later `m3sup run` with the same data dir
// and release finds it there and transfers nothing.
func newFetchCmd() *cobra.Command {
	var relURL, checksum, dataDir string
	var insecure, unpack bool
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch, verify and unpack the M3 release into the artifact cache; run nothing",
		Long: `Fetch the configured M3 release exactly as m3sup run does (go-getter,
sha256 verified before anything is extracted), store it in the data dir's
content-addressed cache (<data-dir>/cache) and unpack it there, then exit.
Nothing is started. Use it to pre-seed a host, or a golden image, so that its
first m3sup run downloads nothing. Fetching again re-verifies the cached copy
and transfers nothing.

The release comes from the config (--config, as for m3sup run: release.url,
release.checksum, or the GitHub release of release.version); --url and
--checksum override it. A progress bar is shown when the output is a
terminal; otherwise progress goes to the log (stderr) every 5 s.`,
		Example: `  m3sup fetch
  m3sup fetch --config /etc/m3sup/m3sup.yaml
  m3sup fetch --url https://mirror.example/m3_1.5.0_linux_amd64.tar.gz \
      --checksum sha256:<hex> --data-dir /var/lib/m3sup -o json`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, false)
	f := cmd.Flags()
	f.StringVar(&relURL, "url", "", "release tarball URL or path (default: the config's release.url)")
	f.StringVar(&checksum, "checksum", "", "release checksum: sha256:<hex> or file:<checksums URL> (default: the config's)")
	f.StringVar(&dataDir, "data-dir", "", "data directory whose cache/ receives the release (default: the config's dataDir)")
	f.BoolVar(&insecure, "insecure-skip-checksum", false, "INSECURE: accept the release without verifying its checksum")
	f.BoolVar(&unpack, "unpack", true, "also extract the release into the cache (as m3sup run does)")
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if f.Changed("url") {
			cfg.Release.URL = relURL
		}
		if f.Changed("checksum") {
			cfg.Release.Checksum = checksum
		}
		if f.Changed("data-dir") {
			cfg.DataDir = dataDir
		}
		if insecure {
			cfg.Release.InsecureSkipChecksum = true
		}
		if f.Changed("url") || f.Changed("checksum") || f.Changed("data-dir") {
			if err := cfg.Validate(); err != nil {
				return err
			}
		}
		r := cfg.Release
		if strings.TrimSpace(r.URL) == "" {
			return &exitError{code: 2, err: fmt.Errorf("fetch: no release URL (set release.url or release.version in the config, or --url)")}
		}

		log, err := newLogger(cfg.Log.Level, cfg.Log.Format, os.Stderr)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()

		// The bar goes where a person watches: stdout, unless stdout carries
		// JSON, then stderr. Neither a terminal: periodic log lines.
		var progress io.Writer
		switch {
		case *out != "json" && isTerminal(os.Stdout):
			progress = os.Stdout
		case isTerminal(os.Stderr):
			progress = os.Stderr
		}

		// The same directory m3sup run creates, with the same mode.
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		// <data-dir>/cache is where m3sup run's fetch looks (supervisor's
		// layout.cache()).
		cache, err := bundle.OpenCache(filepath.Join(cfg.DataDir, "cache"), bundle.Options{Logger: log.Named("fetch"), Progress: progress,
			MaxDownload: cfg.Release.MaxDownloadBytes})
		if err != nil {
			return err
		}
		if r.InsecureSkipChecksum {
			log.Warn("INSECURE: fetching the M3 release WITHOUT checksum verification")
		}
		start := time.Now()
		res, err := cache.Fetch(ctx, bundle.Source{URL: r.URL, Checksum: r.Checksum, InsecureSkipChecksum: r.InsecureSkipChecksum})
		if err != nil {
			return fmt.Errorf("fetch M3 release %s: %w", r.Version, err)
		}
		fetched := time.Since(start)
		result := fetchResult{
			Version:  r.Version,
			URL:      redactURL(r.URL),
			Digest:   string(res.Digest),
			Path:     res.Path,
			Bytes:    res.Bytes,
			CacheHit: !res.Downloaded,
		}
		if unpack {
			if result.Unpacked, err = cache.Unpack(ctx, res.Digest); err != nil {
				return fmt.Errorf("unpack M3 release %s: %w", r.Version, err)
			}
		}
		took := time.Since(start)
		result.Took = took.Round(time.Millisecond).String()
		result.TookSeconds = took.Seconds()
		log.Debug("fetch done", zap.Duration("fetch", fetched), zap.Duration("total", took), zap.Bool("cache_hit", result.CacheHit))

		if *out == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(result)
		}
		printFetchResult(os.Stdout, result)
		return nil
	}
	return cmd
}

func printFetchResult(w io.Writer, r fetchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	if r.Version != "" {
		row("RELEASE", r.Version)
	}
	row("URL", r.URL)
	row("DIGEST", r.Digest)
	row("CACHE PATH", r.Path)
	if r.Unpacked != "" {
		row("UNPACKED", r.Unpacked)
	}
	row("BYTES", fmt.Sprintf("%d (%s)", r.Bytes, humanize.IBytes(uint64(max(r.Bytes, 0)))))
	hit := "no (downloaded and verified)"
	if r.CacheHit {
		hit = "yes (re-verified, nothing transferred)"
	}
	row("CACHE HIT", hit)
	row("TOOK", r.Took)
	_ = tw.Flush()
}

// redactURL hides a URL's password, as the fetch logs do.
func redactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
