package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/backup"
)

func newBackupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup -o FILE",
		Short: "Write a backup of the cluster's brain (etcd, desired state, placement, namespaces, release)",
		Long: `Ask the running daemon for a backup and write it to FILE: one tar.gz with an
etcd snapshot, m3sup's desired state, M3's placement and namespaces, the M3
release spec, and a manifest with each part's sha256. The file appears only
once the whole backup arrived. M3's time-series data is not in it: it stays
in the data dir, and 'm3sup restore FILE' brings the cluster back over it.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "backup file to write (- for standard output)")
	socket := socketFlag(cmd)
	_ = cmd.MarkFlagRequired("output")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c := api.NewClient(*socket)
		start := time.Now()
		if out == "-" {
			return backupError(c.Backup(ctx, os.Stdout), *socket)
		}
		err := backup.WriteAtomic(out, func(w io.Writer) error { return c.Backup(ctx, w) })
		if err != nil {
			return backupError(err, *socket)
		}
		took := time.Since(start)
		info, err := backup.Inspect(out)
		if err != nil {
			return fmt.Errorf("the backup written to %s does not verify: %w", out, err)
		}
		fmt.Printf("wrote %s: %s, etcd revision %d (%d keys), node %s, M3 %s, took %s\n",
			out, backupSize(info.Size), info.Revision, info.Keys, info.Node, backupOrNone(info.Release), took.Round(time.Millisecond))
		return nil
	}
	return cmd
}

func backupError(err error, socket string) error {
	if errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("the daemon on %s does not serve backups (GET /v1/backup); upgrade it", socket)
	}
	return apiError(err)
}

func newRestoreCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore a backup into this node's data dir (the node must be stopped)",
		Long: `Restore the etcd data of this node from a backup written by 'm3sup backup'
or a scheduled backup (<data-dir>/backups). Run it with the node stopped and
with the config 'm3sup run' uses: it restores into that config's data dir,
as that config's etcd member.

The file is verified first (each part's sha256). The existing <data-dir>/etcd
is moved aside to <data-dir>/etcd.before-restore-<time>, never deleted. M3's
time-series data in the data dir is left as it is: the next 'm3sup run'
starts M3 with the restored placement and namespaces over it.

A backup taken on another node (another nodeName) is refused without --force:
M3's placement names the node it was taken on.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, true)
	cmd.Flags().BoolVar(&force, "force", false, "restore a backup taken on another node")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		start := time.Now()
		res, err := backup.Restore(cmd.Context(), args[0], cfg.DataDir, backup.RestoreOptions{
			Name:    cfg.Etcd.Name,
			PeerURL: cfg.Etcd.PeerURL,
			Node:    cfg.NodeName,
			Force:   force,
			Socket:  cfg.API.Socket,
		})
		if err != nil {
			return err
		}
		took := time.Since(start)
		i := res.Info
		fmt.Printf("verified %s: taken %s on node %s by m3sup %s, etcd revision %d (%d keys), M3 %s\n",
			args[0], i.Created.Format(time.RFC3339), i.Node, i.M3supVersion, i.Revision, i.Keys, backupOrNone(i.Release))
		if res.MovedTo != "" {
			fmt.Printf("moved the previous etcd data to %s (remove it once the cluster is healthy)\n", res.MovedTo)
		}
		fmt.Printf("restored etcd into %s as member %s (%s), took %s\n", res.EtcdDir, cfg.Etcd.Name, cfg.Etcd.PeerURL, took.Round(time.Millisecond))
		fmt.Printf("start the node: %s\n", restoreRunCommand(cf))
		return nil
	}
	return cmd
}

// restoreRunCommand is the `m3sup run` that uses the same config as this command.
func restoreRunCommand(cf *configFlags) string {
	parts := []string{"m3sup", "run"}
	for _, f := range cf.files {
		parts = append(parts, "--config", backupShellQuote(f))
	}
	for _, f := range overrideFlags {
		if p, ok := cf.set[f.name]; ok && cf.cmd.Flags().Changed(f.name) {
			parts = append(parts, "--"+f.name, backupShellQuote(*p))
		}
	}
	return strings.Join(parts, " ")
}

func backupShellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func backupOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func backupSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
