package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
)

func newRemoveHostCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove-host NAME",
		Short: "Remove a host that is gone for good from the M3 placement and etcd",
		Long: `Remove host NAME, which is gone for good (its disk lost, the machine
scrapped) and cannot run 'm3sup leave' itself, from a multi-host cluster.
Run it on any live host, in order:

  1. mark NAME leaving in etcd (status on every host shows it);
  2. remove its etcd member, if it had one (quorum-guarded);
  3. the cluster controller removes its instance from M3's placement at
     once (only while every shard is AVAILABLE); M3 streams its shards
     from the other replicas;
  4. once its instance is gone and every shard is AVAILABLE, its leaving
     record, registry, per-host and rollout keys are deleted.

Refused with nothing changed (exit status 3) when NAME is registered
(alive: run 'm3sup leave' on it), when M3 would keep fewer instances or
isolation groups than the replication factor, and when removing its etcd
member would leave the other voters without a healthy majority. Removing
one dead voter of three needs both others healthy. Running it again
resumes or finishes an interrupted removal; the controller also finishes
one nobody waits for.`,
		Args: cobra.ExactArgs(1),
	}
	socket := socketFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	wait := cmd.Flags().Bool("wait", true, "wait until the host is removed (its instance gone, every shard AVAILABLE)")
	noWait := cmd.Flags().Bool("no-wait", false, "return once the removal is accepted (same as --wait=false)")
	timeout := cmd.Flags().Duration("timeout", 0, "give up waiting after this long (0: wait as long as M3 needs; the removal goes on)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		if cmd.Flags().Changed("wait") && *wait && *noWait {
			return &exitError{code: 2, err: fmt.Errorf("--wait and --no-wait exclude each other")}
		}
		ctx := cmd.Context()
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		res, err := api.NewClient(*socket).RemoveHost(ctx, args[0], *wait && !*noWait)
		if err != nil {
			return apiError(err)
		}
		if *out == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}
		etcd := "had no etcd member"
		switch {
		case res.EtcdMemberRemoved:
			etcd = "etcd " + res.EtcdRole + " member removed"
		case res.EtcdRole != "client":
			etcd = "etcd " + res.EtcdRole
		}
		placed := "was not in M3's placement"
		if res.InPlacement {
			placed = "its instance was removed from M3's placement"
			if res.State != api.RemoveStateRemoved {
				placed = "the controller removes its instance from M3's placement"
			}
		}
		fmt.Printf("%s: %s (%s; %s)\n", res.Node, res.State, etcd, placed)
		if res.Message != "" {
			fmt.Println(res.Message)
		}
		return nil
	}
	return cmd
}
