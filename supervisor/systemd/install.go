package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/m3sup/m3sup/internal/atomicfile"
)

// DefaultConfig is the config written by Install when none exists and the
// caller provides none: the single-node defaults, spelled out as comments.
const DefaultConfig = `# m3sup configuration. Every key is optional; see ` + "`m3sup config print`" + `
# for the effective values and ` + "`m3sup config check FILE`" + ` after editing.
# Changes take effect on ` + "`systemctl restart m3sup`" + ` (M3 keeps running).
dataDir: /var/lib/m3sup
# nodeName: <hostname>
# log: {level: info, format: text}
# etcd:
#   clientURL: http://127.0.0.1:2379
#   peerURL: http://127.0.0.1:2380
# release:
#   version: 1.5.0
# coordinator:
#   listenAddress: 0.0.0.0:7201
`

// Systemctl runs `systemctl ARGS…`; tests replace it.
type Systemctl func(ctx context.Context, args ...string) error

// InstallOptions says where and what to install. Zero values take the
// defaults; Root prefixes every path (a chroot, an image, a test).
type InstallOptions struct {
	Root       string // prefix for every path below; "" means /
	UnitDir    string // default DefaultUnitDir
	ConfigPath string // default DefaultConfigPath (inside Root; also ExecStart's --config)
	BinaryPath string // ExecStart's binary (not prefixed); default DefaultBinaryPath
	ExtraArgs  []string
	// Config is written to ConfigPath when no file exists there; nil means
	// DefaultConfig. An existing config is never overwritten.
	Config []byte
	Enable bool // systemctl enable (when systemd runs)
	Now    bool // start it now (when systemd runs)
	// Systemctl defaults to running /bin/systemctl (or the one on PATH).
	Systemctl Systemctl
}

// UninstallOptions says what to remove.
type UninstallOptions struct {
	Root       string
	UnitDir    string
	ConfigPath string // its directory is removed with Purge
	DataDir    string // default DefaultDataDir; removed only with Purge
	Purge      bool
	Systemctl  Systemctl
}

// Result reports what Install or Uninstall did, as facts and as lines for
// a person (Notes), the last of which says what to do next.
type Result struct {
	UnitPath       string
	UnitChanged    bool // the unit file was created or its content changed
	ConfigPath     string
	ConfigWritten  bool // false: an existing config was kept (Install)
	SystemdRunning bool
	Reloaded       bool     // systemctl daemon-reload ran
	Commands       []string // systemctl commands run, in order
	Removed        []string // paths removed (Uninstall)
	Kept           []string // paths kept (Uninstall without Purge)
	Notes          []string
}

func (r *Result) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// Booted reports whether systemd is the running init under root, the way
// sd_booted(3) does: /run/systemd/system exists.
func Booted(root string) bool {
	fi, err := os.Lstat(filepath.Join(rootOr(root), "run/systemd/system"))
	return err == nil && fi.IsDir()
}

// Install writes the unit (always, atomically) and the config (only when
// absent), then — when systemd runs — reloads it and enables and/or starts
// m3sup as asked. Without systemd it says how to start m3sup by hand.
func Install(ctx context.Context, opts InstallOptions) (Result, error) {
	root := rootOr(opts.Root)
	cfgPath := or(opts.ConfigPath, DefaultConfigPath)
	bin := or(opts.BinaryPath, DefaultBinaryPath)
	res := Result{
		UnitPath:   filepath.Join(root, or(opts.UnitDir, DefaultUnitDir), UnitName),
		ConfigPath: filepath.Join(root, cfgPath),
	}

	unit := []byte(Unit(UnitOptions{BinaryPath: bin, ConfigPath: cfgPath, ExtraArgs: opts.ExtraArgs}))
	old, err := os.ReadFile(res.UnitPath)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("read %s: %w", res.UnitPath, err)
	}
	res.UnitChanged = !bytes.Equal(old, unit)
	if res.UnitChanged {
		if err := os.MkdirAll(filepath.Dir(res.UnitPath), 0o755); err != nil {
			return res, fmt.Errorf("create unit dir: %w", err)
		}
		if err := writeAtomic(res.UnitPath, unit, 0o644, true); err != nil {
			return res, fmt.Errorf("write unit: %w", err)
		}
		if existed {
			res.note("updated %s", res.UnitPath)
		} else {
			res.note("wrote %s", res.UnitPath)
		}
	} else {
		res.note("%s is up to date", res.UnitPath)
	}

	cfg := opts.Config
	if cfg == nil {
		cfg = []byte(DefaultConfig)
	}
	if err := os.MkdirAll(filepath.Dir(res.ConfigPath), 0o755); err != nil {
		return res, fmt.Errorf("create config dir: %w", err)
	}
	// 0600: the config can hold registry passwords.
	switch err := writeAtomic(res.ConfigPath, cfg, 0o600, false); {
	case err == nil:
		res.ConfigWritten = true
		res.note("wrote %s", res.ConfigPath)
	case errors.Is(err, fs.ErrExist):
		res.note("kept the existing %s", res.ConfigPath)
	default:
		return res, fmt.Errorf("write config: %w", err)
	}

	res.SystemdRunning = Booted(opts.Root)
	if !res.SystemdRunning {
		if opts.Enable || opts.Now {
			res.note("systemd is not running on this host, so m3sup was not enabled or started")
		}
		res.note("systemd is not running on this host: start m3sup with `%s run --config %s`", bin, cfgPath)
		return res, nil
	}
	sc := systemctlOr(opts.Systemctl)
	run := func(args ...string) error {
		res.Commands = append(res.Commands, "systemctl "+strings.Join(args, " "))
		if err := sc(ctx, args...); err != nil {
			return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	if err := run("daemon-reload"); err != nil {
		return res, err
	}
	res.Reloaded = true
	switch {
	case opts.Enable && opts.Now:
		// --no-block: a Type=notify start lasts until READY=1, which on a
		// first start means fetching M3 and bootstrapping it (minutes).
		if err := run("enable", "--now", "--no-block", UnitName); err != nil {
			return res, err
		}
		res.note("enabled m3sup and started it in the background; the first start fetches and bootstraps M3 (a few minutes): follow it with `journalctl -u m3sup -f` and `m3sup status`")
	case opts.Enable:
		if err := run("enable", UnitName); err != nil {
			return res, err
		}
		res.note("enabled m3sup (it starts at boot); start it now with `systemctl start m3sup`")
	case opts.Now:
		if err := run("start", "--no-block", UnitName); err != nil {
			return res, err
		}
		res.note("started m3sup in the background (not enabled at boot: `systemctl enable m3sup`); follow it with `journalctl -u m3sup -f`")
	default:
		res.note("start m3sup with `systemctl enable --now m3sup`")
	}
	if existed && res.UnitChanged {
		res.note("if m3sup was already running, `systemctl restart m3sup` applies the new unit (M3's containers keep running)")
	}
	return res, nil
}

// Uninstall stops and disables m3sup when systemd runs and removes its unit.
// The config directory and the data directory are removed only with Purge;
// without it the result lists them as kept.
//
// The unit runs m3sup with --keep-running, so stopping it leaves M3's
// containers running: stop them first (`m3sup stop COMPONENT`).
func Uninstall(ctx context.Context, opts UninstallOptions) (Result, error) {
	root := rootOr(opts.Root)
	cfgPath := or(opts.ConfigPath, DefaultConfigPath)
	res := Result{
		UnitPath:   filepath.Join(root, or(opts.UnitDir, DefaultUnitDir), UnitName),
		ConfigPath: filepath.Join(root, cfgPath),
	}
	_, statErr := os.Stat(res.UnitPath)
	unitExists := statErr == nil

	res.SystemdRunning = Booted(opts.Root)
	var errs []error
	if res.SystemdRunning && unitExists {
		args := []string{"disable", "--now", UnitName}
		res.Commands = append(res.Commands, "systemctl "+strings.Join(args, " "))
		if err := systemctlOr(opts.Systemctl)(ctx, args...); err != nil {
			errs = append(errs, fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err))
		} else {
			res.note("stopped and disabled m3sup")
		}
	} else if !res.SystemdRunning {
		res.note("systemd is not running on this host: stop any `m3sup run` yourself")
	}

	if unitExists {
		if err := os.Remove(res.UnitPath); err != nil {
			errs = append(errs, fmt.Errorf("remove unit: %w", err))
		} else {
			res.Removed = append(res.Removed, res.UnitPath)
			res.note("removed %s", res.UnitPath)
		}
		if res.SystemdRunning {
			res.Commands = append(res.Commands, "systemctl daemon-reload")
			if err := systemctlOr(opts.Systemctl)(ctx, "daemon-reload"); err != nil {
				errs = append(errs, fmt.Errorf("systemctl daemon-reload: %w", err))
			} else {
				res.Reloaded = true
			}
		}
	} else {
		res.note("%s was not installed", res.UnitPath)
	}

	for _, dir := range []string{filepath.Dir(res.ConfigPath), filepath.Join(root, or(opts.DataDir, DefaultDataDir))} {
		if _, err := os.Lstat(dir); err != nil {
			continue
		}
		if !opts.Purge {
			res.Kept = append(res.Kept, dir)
			res.note("kept %s (remove it with --purge)", dir)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
			continue
		}
		res.Removed = append(res.Removed, dir)
		res.note("removed %s", dir)
	}
	return res, errors.Join(errs...)
}

// writeAtomic writes data through a synced temporary file beside path. With
// replace false it fails with fs.ErrExist when path exists (link(2) never
// overwrites), so a concurrent writer cannot be clobbered either.
func writeAtomic(path string, data []byte, perm fs.FileMode, replace bool) error {
	if replace {
		return atomicfile.WriteFile(path, data, perm)
	}
	if _, err := os.Lstat(path); err == nil {
		return fs.ErrExist
	}
	return atomicfile.Create(path, data, perm)
}

func systemctlOr(s Systemctl) Systemctl {
	if s != nil {
		return s
	}
	return func(ctx context.Context, args ...string) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
		if err != nil {
			if msg := strings.TrimSpace(string(out)); msg != "" {
				return fmt.Errorf("%s: %w", msg, err)
			}
			return err
		}
		return nil
	}
}

func rootOr(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
