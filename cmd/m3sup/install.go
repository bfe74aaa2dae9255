package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/systemd"
)

// requireRoot refuses a command that changes the host without root.
func requireRoot(command string) error {
	if os.Geteuid() != 0 {
		return &exitError{code: 1, err: fmt.Errorf("m3sup %s must run as root (try: sudo m3sup %s)", command, command)}
	}
	return nil
}

func newInstallCmd() *cobra.Command {
	var configFile, binary string
	var enable, now bool
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install m3sup as a systemd service (m3sup.service)",
		Long: `Install m3sup as a systemd service.

Writes ` + systemd.DefaultUnitDir + `/` + systemd.UnitName + ` (always) and ` + systemd.DefaultConfigPath + `
(only when it does not exist: a copy of --config FILE, or the defaults). With
--enable and --now, and when systemd runs, it enables and starts the service.
The service runs ` + "`m3sup run --keep-running`" + `: restarting or upgrading m3sup leaves
M3 running and the new m3sup adopts it.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "config to install as "+systemd.DefaultConfigPath+" (validated; an existing one is kept)")
	cmd.Flags().BoolVar(&enable, "enable", false, "start m3sup at boot (systemctl enable)")
	cmd.Flags().BoolVar(&now, "now", false, "start m3sup now")
	cmd.Flags().StringVar(&binary, "binary", "", "m3sup binary the service runs (default: this executable)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireRoot("install"); err != nil {
			return err
		}
		if binary == "" {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find this executable (pass --binary): %w", err)
			}
			binary = exe
		}
		binary, err := filepath.Abs(binary)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(binary); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return &exitError{code: 2, err: fmt.Errorf("--binary %s: not an executable file", binary)}
		}
		var cfg []byte
		if configFile != "" {
			if _, err := config.Load(configFile); err != nil {
				return err // a config error: exit status 2, naming file and field
			}
			if cfg, err = os.ReadFile(configFile); err != nil {
				return err
			}
		}
		res, err := systemd.Install(cmd.Context(), systemd.InstallOptions{
			BinaryPath: binary, Config: cfg, Enable: enable, Now: now,
		})
		printLines(os.Stdout, res.Notes)
		if err != nil {
			return err
		}
		if configFile != "" && !res.ConfigWritten {
			fmt.Printf("%s was not copied: edit %s, or remove it and install again\n", configFile, res.ConfigPath)
		}
		fmt.Println("check this host with `m3sup preflight` (`--fix` applies the kernel settings M3 wants)")
		return nil
	}
	return cmd
}

func newUninstallCmd() *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop M3 and m3sup and remove the systemd service",
		Long: `Stop M3 and m3sup and remove m3sup.service.

M3's components are stopped through the daemon first (the service runs with
--keep-running, so stopping m3sup alone would leave them running). The config
(` + filepath.Dir(systemd.DefaultConfigPath) + `) and the data (` + systemd.DefaultDataDir + `: etcd, M3's data) are
kept unless --purge is given.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the config and ALL data (etcd and M3's data)")
	socket := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireRoot("uninstall"); err != nil {
			return err
		}
		stopped := stopComponents(cmd.Context(), os.Stdout, api.NewClient(*socket), 2*time.Minute)
		if !stopped && purge {
			fmt.Println("warning: M3's containers may still be running while their data is deleted")
		}
		res, err := systemd.Uninstall(cmd.Context(), systemd.UninstallOptions{Purge: purge})
		printLines(os.Stdout, res.Notes)
		if stopped && !purge {
			fmt.Println("m3dbnode and m3coordinator are recorded as stopped: after reinstalling, `m3sup start m3dbnode` and `m3sup start m3coordinator`")
		}
		return err
	}
	return cmd
}

var components = []string{"m3dbnode", "m3coordinator"}

// stopComponents asks a running daemon to stop M3's components and waits
// until it reports them stopped. It returns false when no daemon answers or
// they did not stop in time, having said so on w.
func stopComponents(ctx context.Context, w io.Writer, c *api.Client, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.Status(ctx); err != nil {
		fmt.Fprintf(w, "no m3sup daemon answers: %v; if M3's containers still run, see `ctr -n m3sup tasks ls`\n", err)
		return false
	}
	for _, name := range components {
		if _, err := c.Control(ctx, name, "stop"); err != nil {
			fmt.Fprintf(w, "stop %s: %v\n", name, err)
			return false
		}
	}
	fmt.Fprintln(w, "stopping m3dbnode and m3coordinator…")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.Status(ctx)
		if err == nil && allStopped(st) {
			fmt.Fprintln(w, "stopped m3dbnode and m3coordinator")
			return true
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(w, "M3's components did not stop within %s; continuing\n", timeout)
			return false
		case <-tick.C:
		}
	}
}

func allStopped(st api.Status) bool {
	for _, c := range st.Components {
		if c.State != agent.StateStopped {
			return false
		}
	}
	return true
}

func printLines(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
