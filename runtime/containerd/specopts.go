package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	goruntime "github.com/m3sup/m3sup/runtime"
)

// WithRlimit sets the process rlimit typ (for example "RLIMIT_NOFILE"),
// replacing an earlier value of the same type.
func WithRlimit(typ string, soft, hard uint64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		for i := range s.Process.Rlimits {
			if s.Process.Rlimits[i].Type == typ {
				s.Process.Rlimits[i].Soft, s.Process.Rlimits[i].Hard = soft, hard
				return nil
			}
		}
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: typ, Soft: soft, Hard: hard})
		return nil
	}
}

// WithBindMounts adds recursive bind mounts, read-only or read-write, in order.
func WithBindMounts(mounts []goruntime.Mount) oci.SpecOpts {
	ms := make([]specs.Mount, 0, len(mounts))
	for _, m := range mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		ms = append(ms, specs.Mount{
			Destination: m.Destination,
			Type:        "bind",
			Source:      m.Source,
			Options:     []string{"rbind", mode},
		})
	}
	return oci.WithMounts(ms)
}

// specOpts turns a runtime.Spec into containerd spec options: a host
// directory as rootfs (an image's snapshot brings its own), host network,
// host hosts/resolv.conf, bind mounts and RLIMIT_NOFILE.
func specOpts(spec goruntime.Spec) []oci.SpecOpts {
	var opts []oci.SpecOpts
	if spec.Image == "" {
		opts = append(opts, oci.WithRootFSPath(spec.RootFS))
	}
	opts = append(opts,
		oci.WithProcessArgs(spec.Args...),
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
		oci.WithHostResolvconf,
	)
	if len(spec.Env) > 0 {
		opts = append(opts, oci.WithEnv(spec.Env))
	}
	if len(spec.Mounts) > 0 {
		opts = append(opts, WithBindMounts(spec.Mounts))
	}
	if spec.NoFile > 0 {
		opts = append(opts, WithRlimit("RLIMIT_NOFILE", spec.NoFile, spec.NoFile))
	}
	return opts
}

// MaxNoFile returns the largest RLIMIT_NOFILE a container can get on this
// host: the kernel's fs.nr_open (1048576 by default; M3 asks for 3000000,
// raise it with `sysctl -w fs.nr_open=3000000`), and, when this process lacks
// CAP_SYS_RESOURCE (some VMs and containers drop it), its own hard limit,
// which a managed containerd and its shims inherit and cannot exceed.
func MaxNoFile() (uint64, error) {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0, fmt.Errorf("read fs.nr_open: %w", err)
	}
	limit, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse fs.nr_open: %w", err)
	}
	if !hasCapSysResource() {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
		}
		limit = min(limit, rl.Max)
	}
	return limit, nil
}

// hasCapSysResource reports whether CAP_SYS_RESOURCE (bit 24) is in this
// process's effective capability set.
func hasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true // unknown: assume the usual root
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<24) != 0
		}
	}
	return true
}

// checkNoFile reports a NoFile the host would refuse, with the fix, instead
// of runc's "error setting rlimit type 7: operation not permitted".
func checkNoFile(n uint64) error {
	if n == 0 {
		return nil
	}
	limit, err := MaxNoFile()
	if err != nil || n <= limit {
		return nil // unknown: let runc decide
	}
	if !hasCapSysResource() {
		var rl syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && n > rl.Max {
			return fmt.Errorf("RLIMIT_NOFILE %d exceeds this host's limit %d (m3sup lacks CAP_SYS_RESOURCE and its hard limit is %d): start m3sup with a higher hard limit or ask for less", n, limit, rl.Max)
		}
	}
	return fmt.Errorf("RLIMIT_NOFILE %d exceeds the kernel's fs.nr_open %d: raise it with `sysctl -w fs.nr_open=%d` or ask for less", n, limit, n)
}

// validateSpec reports a Spec that cannot run.
func validateSpec(spec goruntime.Spec) error {
	var errs []error
	if spec.ID == "" {
		errs = append(errs, errors.New("empty id"))
	}
	switch {
	case spec.Image != "" && spec.RootFS != "":
		errs = append(errs, errors.New("both rootfs and image set"))
	case spec.Image != "":
	case !filepath.IsAbs(spec.RootFS):
		errs = append(errs, fmt.Errorf("rootfs %q is not an absolute path", spec.RootFS))
	}
	if len(spec.Args) == 0 {
		errs = append(errs, errors.New("no args"))
	}
	if !filepath.IsAbs(spec.LogPath) {
		errs = append(errs, fmt.Errorf("log path %q is not an absolute path", spec.LogPath))
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
			errs = append(errs, fmt.Errorf("mount %s:%s: both paths must be absolute", m.Source, m.Destination))
		}
	}
	return errors.Join(errs...)
}

// prepareRootFS creates the mountpoints runc needs in a host-directory rootfs
// (dev proc sys run, etc/hosts, etc/resolv.conf), so that a rootfs holding
// only a static binary works.
func prepareRootFS(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf"} {
		p := filepath.Join(dir, f)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if fh != nil {
			fh.Close()
		}
	}
	return nil
}
