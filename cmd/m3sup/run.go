package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/m3sup/m3sup/bundle"
	"github.com/m3sup/m3sup/internal/regularfile"
	"github.com/m3sup/m3sup/supervisor"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/preflight"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// configFlags are the flags every command that reads the config accepts.
type configFlags struct {
	files []string
	set   map[string]*string // flag name → value, applied only when changed
	cmd   *cobra.Command
}

var overrideFlags = []struct {
	name, usage string
	apply       func(c *config.Config, v string)
}{
	{"data-dir", "data directory (etcd, cache, containers)", func(c *config.Config, v string) { c.DataDir = v }},
	{"node-name", "this host's name (M3 host id, etcd member name)", func(c *config.Config, v string) {
		if c.Etcd.Name == c.NodeName {
			c.Etcd.Name = v
		}
		c.NodeName = v
	}},
	{"socket", "local API unix socket", func(c *config.Config, v string) { c.API.Socket = v }},
	{"etcd-client-url", "embedded etcd client URL", func(c *config.Config, v string) { c.Etcd.ClientURL = v }},
	{"etcd-peer-url", "embedded etcd peer URL", func(c *config.Config, v string) { c.Etcd.PeerURL = v }},
	{"containerd-address", "use the containerd listening on this socket", func(c *config.Config, v string) {
		c.Runtime.Containerd.Address = v
		c.Runtime.Containerd.Mode = config.ModeExternal
	}},
	{"containerd-mode", "auto, external or managed", func(c *config.Config, v string) { c.Runtime.Containerd.Mode = v }},
	{"release-url", "M3 release tarball URL or path", func(c *config.Config, v string) { c.Release.URL = v }},
	{"release-checksum", "sha256:<hex> or file:<checksums URL>", func(c *config.Config, v string) { c.Release.Checksum = v }},
	{"coordinator-listen", "m3coordinator API listen address", func(c *config.Config, v string) { c.Coordinator.ListenAddress = v }},
	{"log-level", "debug, info, warn or error", func(c *config.Config, v string) { c.Log.Level = v }},
	{"log-format", "text or json", func(c *config.Config, v string) { c.Log.Format = v }},
}

func addConfigFlags(cmd *cobra.Command, withOverrides bool) *configFlags {
	cf := &configFlags{set: map[string]*string{}, cmd: cmd}
	cmd.Flags().StringArrayVarP(&cf.files, "config", "c", nil, "config file (repeatable; later files win)")
	if withOverrides {
		for _, f := range overrideFlags {
			cf.set[f.name] = cmd.Flags().String(f.name, "", f.usage)
		}
	}
	return cf
}

// load reads the config files, applies changed flags and validates.
func (cf *configFlags) load() (config.Config, error) {
	cfg, err := config.Load(cf.files...)
	if err != nil {
		return cfg, err
	}
	changed := false
	for _, f := range overrideFlags {
		if p, ok := cf.set[f.name]; ok && cf.cmd.Flags().Changed(f.name) {
			f.apply(&cfg, *p)
			changed = true
		}
	}
	if changed {
		if err := cfg.Validate(); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

func newRunCmd() *cobra.Command {
	var keepRunning, insecure bool
	var bundles, trust []string
	var joinURL, token, tokenFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the m3sup daemon in the foreground",
		Long: `Run the m3sup daemon in the foreground: embedded etcd, containerd (the
host's or a managed child), m3dbnode and m3coordinator, and M3's cluster set-up.

With no config file it runs a single-node cluster with defaults (data in
/var/lib/m3sup, etcd on 127.0.0.1:2379, the coordinator on :7201).
SIGINT or SIGTERM stops everything in order.

With --join, a refusal for now (another host is joining, the cluster is
busy, the join endpoint is not up yet) is retried with a jittered backoff
for cluster.joinTimeout (default 10m); a refusal no retry can change (a bad,
expired or used-up token, the wrong CA, a name in use) exits 1 at once.

Exit status: 0 stopped (or left the cluster with 'm3sup leave'); 2 a bad
config or flag; 4 this data dir's host left the cluster, so it refuses to
start (the systemd unit does not restart on 4); 1 any other error.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, true)
	cmd.Flags().BoolVar(&keepRunning, "keep-running", false, "leave M3's containers running on exit; the next m3sup adopts them")
	cmd.Flags().BoolVar(&insecure, "insecure-skip-checksum", false, "INSECURE: run a release without verifying its checksum")
	cmd.Flags().StringArrayVar(&bundles, "bundle", nil, "air-gap bundle to import before starting (repeatable); no network is needed")
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "ed25519 public key (PEM) that must have signed bundles (repeatable; adds to bundles.trustedKeys)")
	cmd.Flags().StringVar(&joinURL, "join", "", "join the cluster through this https:// join endpoint (cluster.joinListen of its first host or of any voter that holds the CA)")
	cmd.Flags().StringVar(&token, "token", "", "join token from `m3sup token create` on the first host")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the join token (keeps it out of ps)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if err := checkConfig(cfg); err != nil {
			return err
		}
		if tokenFile != "" {
			if token != "" {
				return &exitError{code: 2, err: errors.New("--token and --token-file exclude each other")}
			}
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--token-file: %w", err)}
			}
			token = strings.TrimSpace(string(b))
		}
		if joinURL != "" && token == "" {
			return &exitError{code: 2, err: errors.New("--join needs --token or --token-file")}
		}
		if joinURL == "" && token != "" {
			return &exitError{code: 2, err: errors.New("--token needs --join")}
		}
		if joinURL != "" && cfg.Cluster.Advertise == "" {
			return &exitError{code: 2, err: errors.New("--join needs cluster.advertise in the config (the address other hosts reach this host by)")}
		}
		if insecure {
			cfg.Release.InsecureSkipChecksum = true
		}
		keys, err := loadTrustedKeys(append(cfg.Bundles.TrustedKeys, trust...))
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		// A bundle whose manifest and signature already say it cannot be
		// used (binaries or images without a trusted signature, a forged
		// signature, not a regular file) stops the start before anything is
		// created or run.
		for _, b := range bundles {
			if _, err := bundle.PrecheckFile(cmd.Context(), b, bundle.VerifyOptions{TrustedKeys: keys}); err != nil {
				return err
			}
		}
		log, err := newLogger(cfg.Log.Level, cfg.Log.Format, os.Stderr)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log.Info("m3sup starting", zap.String("version", version), zap.String("node", cfg.NodeName), zap.String("data_dir", cfg.DataDir))
		var progress io.Writer
		if isTerminal(os.Stdout) {
			progress = os.Stdout
		}
		notifier, err := systemd.NewNotifier()
		if err != nil {
			log.Warn("systemd watchdog disabled", zap.Error(err))
		}
		warnPreflight(ctx, log, cfg)
		err = supervisor.New(supervisor.Options{
			Config: cfg, Logger: log, Version: version, KeepRunning: keepRunning, Progress: progress, Notifier: notifier,
			Bundles: bundles, TrustedKeys: keys, Join: supervisor.JoinOptions{URL: joinURL, Token: token},
		}).Run(ctx)
		if errors.Is(err, supervisor.ErrHostLeft) {
			return &exitError{code: systemd.ExitLeft, err: err}
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		log.Info("m3sup stopped")
		return nil
	}
	return cmd
}

// warnPreflight repeats `m3sup preflight` as warnings: M3 runs on a
// less-than-ideal host, but the operator should know.
func warnPreflight(ctx context.Context, log *zap.Logger, cfg config.Config) {
	var ports []string
	for _, u := range []string{cfg.Etcd.ClientURL, cfg.Etcd.PeerURL} {
		if pu, err := url.Parse(u); err == nil {
			ports = append(ports, pu.Host)
		}
	}
	th := supervisor.DiskThresholds(cfg.Disk)
	for _, c := range preflight.Run(ctx, preflight.Options{DataDir: cfg.DataDir, Ports: ports, CPUCoreGuard: cfg.DBNode.CPUCoreGuard, Disk: &th}).NotOK() {
		if c.Name == preflight.CheckCPUCore {
			continue // the daemon logs its guard decision itself
		}
		fields := []zap.Field{zap.String("check", c.Name), zap.String("detail", c.Detail)}
		if c.Fix != "" {
			fields = append(fields, zap.String("fix", c.Fix))
		}
		log.Warn("preflight", fields...)
	}
}

// loadTrustedKeys reads ed25519 public keys for bundle verification.
func loadTrustedKeys(files []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		b, err := readRegularFile(f, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		k, err := bundle.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newLogger builds a human-readable (text) or JSON logger.
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		ec.ConsoleSeparator = " "
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

// readRegularFile reads a small file given on the command line or in the
// config, refusing at once anything but a regular file (a FIFO does not
// block; see regularfile).
func readRegularFile(path string, limit int64) ([]byte, error) {
	f, err := regularfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
