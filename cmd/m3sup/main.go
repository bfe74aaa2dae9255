package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/config"
)

// Set by the linker: -X main.version=...
var version = "dev"

// exitError carries an exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRootCmd()
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if config.IsConfigError(err) {
		code = 2
	}
	fmt.Fprintf(os.Stderr, "m3sup: %v\n", err)
	os.Exit(code)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "m3sup",
		Short: "Run and supervise an M3 time-series cluster on this host",
		Long: `m3sup turns a Linux host into a self-running member of an M3 cluster.

It embeds etcd, fetches and verifies M3 release binaries, runs m3dbnode and
m3coordinator under containerd, performs M3's cluster set-up steps and keeps
everything converged.

Start a single-node cluster with defaults:   m3sup run
Look at it:                                  m3sup status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newStatusCmd(), newGetCmd(), newApplyCmd(),
		newControlCmd("restart", "Restart a component (recorded in the desired state)"),
		newControlCmd("stop", "Stop a component; it stays stopped across m3sup restarts"),
		newControlCmd("start", "Start a component stopped with `m3sup stop`"),
		newLogsCmd(), newConfigCmd(), newVersionCmd(),
		newInstallCmd(), newUninstallCmd(), newPreflightCmd(),
		newBackupCmd(), newRestoreCmd(), newBundleCmd(), newFetchCmd(), newTokenCmd(), newLeaveCmd(), newRemoveHostCmd())
	return root
}
