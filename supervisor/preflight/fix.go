package preflight

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/m3sup/m3sup/internal/atomicfile"
)

// SysctlConf is where Fix persists the kernel settings (under Options.Root).
const SysctlConf = "/etc/sysctl.d/70-m3sup.conf"

// ErrNotRoot is returned by Fix without root.
var ErrNotRoot = errors.New("fixing kernel settings needs root")

// Fix sets the kernel settings the checks want, now (/proc/sys) and at every
// boot (SysctlConf), and returns what it did, one line each. It never lowers
// a limit: a setting that already satisfies its bound keeps its value, which
// is still written to SysctlConf so the file states everything m3sup needs.
// Each setting is tried even when another fails; the errors are joined.
func Fix(opts Options) ([]string, error) {
	if opts.euid() != 0 {
		return nil, ErrNotRoot
	}
	var (
		done []string
		errs []error
		conf strings.Builder
	)
	conf.WriteString("# Written by `m3sup preflight --fix`: kernel settings M3 wants.\n")
	for _, s := range sysctls {
		cur, err := readUint(s.file(opts))
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", s.name, err))
			cur = 0 // unknown: persist the bound
			if s.atMost {
				cur = s.bound
			}
		}
		want := s.target(cur)
		if err == nil && want != cur {
			if err := os.WriteFile(s.file(opts), []byte(strconv.FormatUint(want, 10)+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set %s: %w", s.name, err))
			} else {
				done = append(done, fmt.Sprintf("%s: %d -> %d", s.name, cur, want))
			}
		}
		fmt.Fprintf(&conf, "%s = %d\n", s.name, want)
	}
	path := opts.path(SysctlConf)
	if err := writeFile(path, []byte(conf.String())); err != nil {
		errs = append(errs, fmt.Errorf("write %s: %w", path, err))
	} else {
		done = append(done, "wrote "+path+" (applied at boot)")
	}
	return done, errors.Join(errs...)
}

// writeFile replaces path atomically and durably.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}
