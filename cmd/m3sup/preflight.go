package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/preflight"
)

func newPreflightCmd() *cobra.Command {
	var fix bool
	var dataDir string
	cmd := &cobra.Command{
		Use:   "preflight",
		Short: "Check that this host can run M3 well (and fix kernel settings)",
		Long: `Check this host: kernel settings M3 wants (vm.max_map_count, vm.swappiness,
fs.nr_open, fs.file-max), containerd and runc, cgroups, free memory, free disk
at the data dir, that m3sup's and M3's ports are free, root, and whether M3
v1.5's per-core queues can trust this CPU's core ids (m3-cpu-core: warn means
m3sup guards m3dbnode with a one-processor /proc/cpuinfo).

Exits 1 when a check fails; warnings do not fail. --fix (as root) sets the
kernel settings now and in ` + preflight.SysctlConf + `.
Run it before ` + "`m3sup run`" + `: with m3sup running, its ports are in use.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, false)
	cmd.Flags().BoolVar(&fix, "fix", false, "set the kernel settings now and at boot (root)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory to check for free space (default: the config's dataDir)")
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if dataDir == "" {
			dataDir = cfg.DataDir
		}
		th := supervisor.DiskThresholds(cfg.Disk)
		opts := preflight.Options{DataDir: dataDir, Ports: listenAddresses(cfg), CPUCoreGuard: cfg.DBNode.CPUCoreGuard, Disk: &th}
		// Progress goes to stderr with -o json, so stdout stays one document.
		var notes io.Writer = os.Stdout
		if *out == "json" {
			notes = os.Stderr
		}
		var fixErr error
		if fix {
			done, err := preflight.Fix(opts)
			if errors.Is(err, preflight.ErrNotRoot) {
				return &exitError{code: 1, err: errors.New("m3sup preflight --fix must run as root (try: sudo m3sup preflight --fix)")}
			}
			printLines(notes, done)
			if err != nil {
				fixErr = fmt.Errorf("fix: %w", err)
			}
		}
		report := preflight.Run(cmd.Context(), opts)
		if *out == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			if err := enc.Encode(report); err != nil {
				return err
			}
		} else {
			printPreflight(os.Stdout, report, fix)
		}
		if n := countFailed(report); n > 0 {
			return &exitError{code: 1, err: errors.Join(fixErr, fmt.Errorf("%d preflight check(s) failed", n))}
		}
		return fixErr
	}
	return cmd
}

// listenAddresses are the TCP addresses m3sup and M3 listen on.
func listenAddresses(cfg config.Config) []string {
	var addrs []string
	for _, u := range []string{cfg.Etcd.ClientURL, cfg.Etcd.PeerURL} {
		if p, err := url.Parse(u); err == nil && p.Host != "" {
			addrs = append(addrs, p.Host)
		}
	}
	for _, a := range []string{
		cfg.DBNode.ListenAddress, cfg.DBNode.ClusterListenAddress, cfg.DBNode.HTTPNodeListenAddress,
		cfg.DBNode.HTTPClusterListenAddress, cfg.DBNode.DebugListenAddress,
		cfg.Coordinator.ListenAddress, cfg.Coordinator.MetricsListenAddress, cfg.Metrics.ListenAddress(),
	} {
		if a != "" && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func countFailed(r preflight.Report) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == preflight.Fail {
			n++
		}
	}
	return n
}

func printPreflight(w io.Writer, r preflight.Report, fixed bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL\tFIX")
	sysctlWarn := false
	for _, c := range r.Checks {
		fix := c.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Status, c.Detail, fix)
		switch c.Name {
		case preflight.CheckMaxMapCount, preflight.CheckSwappiness, preflight.CheckNrOpen, preflight.CheckFileMax:
			sysctlWarn = sysctlWarn || c.Status != preflight.OK
		}
	}
	tw.Flush()
	if sysctlWarn && !fixed {
		fmt.Fprintf(w, "\n`m3sup preflight --fix` sets the kernel settings now and at boot (%s)\n", preflight.SysctlConf)
	}
}
