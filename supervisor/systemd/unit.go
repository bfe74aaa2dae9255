package systemd

import (
	"fmt"
	"strings"
)

// Default paths of an installed m3sup.
const (
	UnitName          = "m3sup.service"
	DefaultUnitDir    = "/etc/systemd/system"
	DefaultConfigPath = "/etc/m3sup/m3sup.yaml"
	DefaultBinaryPath = "/usr/local/bin/m3sup"
	DefaultDataDir    = "/var/lib/m3sup"
	// DocumentationURL is the unit's Documentation=.
	DocumentationURL = "https://github.com/m3sup/m3sup"
)

// ExitLeft is the exit status of `m3sup run` on a data dir whose host
// left the cluster (`m3sup leave`): it refuses to start, and the unit
// does not restart it (RestartPreventExitStatus).
const ExitLeft = 4

// UnitOptions are the variable parts of m3sup.service. Zero values take the
// defaults above.
type UnitOptions struct {
	BinaryPath string   // m3sup binary; default DefaultBinaryPath
	ConfigPath string   // --config; default DefaultConfigPath
	ExtraArgs  []string // appended to `m3sup run …`
}

// Unit returns the text of m3sup.service.
//
// Choices worth knowing:
//   - Type=notify: systemd considers m3sup started only when it sends READY=1,
//     i.e. after etcd, the runtime and the first reconcile. TimeoutStartSec
//     is long because the first start fetches the release and bootstraps M3.
//   - KillMode=process and --keep-running: stopping or restarting the unit
//     (an upgrade) signals m3sup alone; M3's containers live in containerd's
//     shims and the next m3sup adopts them without restarting M3.
//   - LimitNOFILE=3000000: M3's recommended open-file limit. m3sup caps each
//     container's RLIMIT_NOFILE at its own hard limit, so m3sup needs it too.
//     A number, not infinity: the kernel refuses NOFILE above fs.nr_open and
//     systemd then clamps to the closest allowed value; a number states the
//     intent and matches M3's own documentation (raise fs.nr_open with
//     `m3sup preflight --fix`).
//   - LimitCORE=0: m3dbnode maps tens of GiB; a core file would fill the disk.
//   - RestartPreventExitStatus=ExitLeft: after `m3sup leave` m3sup exits
//     0 and Restart=always starts it again; that run refuses the data dir
//     that left with ExitLeft, and systemd stops there instead of
//     restart-looping a host that left.
//   - NotifyAccess=main: a managed containerd child inherits NOTIFY_SOCKET
//     and sends its own READY=1; only m3sup's may count.
func Unit(opts UnitOptions) string {
	bin := opts.BinaryPath
	if bin == "" {
		bin = DefaultBinaryPath
	}
	cfg := opts.ConfigPath
	if cfg == "" {
		cfg = DefaultConfigPath
	}
	args := append([]string{bin, "run", "--config", cfg, "--keep-running"}, opts.ExtraArgs...)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = quoteArg(a)
	}

	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Installed by `m3sup install`; rewritten on every install.")
	w("# Local changes belong in a drop-in: systemctl edit m3sup")
	w("[Unit]")
	w("Description=m3sup: M3 time-series cluster supervisor")
	w("Documentation=%s", DocumentationURL)
	w("Wants=network-online.target")
	w("After=network-online.target containerd.service")
	w("# Never give up restarting.")
	w("StartLimitIntervalSec=0")
	w("")
	w("[Service]")
	w("Type=notify")
	w("NotifyAccess=main")
	w("ExecStart=%s", strings.Join(quoted, " "))
	w("Restart=always")
	w("RestartSec=5s")
	w("# `m3sup run` on a host that left the cluster (m3sup leave) exits %d: stay stopped.", ExitLeft)
	w("RestartPreventExitStatus=%d", ExitLeft)
	w("# Only m3sup is signalled; M3's containers keep running for adoption.")
	w("KillMode=process")
	w("# m3sup (or its managed containerd) creates cgroups for M3's containers.")
	w("Delegate=yes")
	w("TimeoutStartSec=15min")
	w("TimeoutStopSec=2min")
	w("WatchdogSec=60s")
	w("LimitNOFILE=3000000")
	w("LimitNPROC=infinity")
	w("LimitCORE=0")
	w("TasksMax=infinity")
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.String()
}

// quoteArg quotes one ExecStart word for systemd: % and $ are specifiers and
// variables there, and words with spaces or quotes need double quotes.
func quoteArg(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
