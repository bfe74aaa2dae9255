package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
)

func newLeaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Decommission this host: leave the M3 placement and etcd, then stop m3sup",
		Long: `Decommission this host from a multi-host cluster, in order:

  1. mark it leaving in etcd (status on every host shows it);
  2. the cluster controller removes its instance from M3's placement (only
     while every shard is AVAILABLE); m3dbnode keeps running while M3
     streams its shards to the other hosts;
  3. once its instance is gone and every shard is AVAILABLE, m3sup stops
     this host's containers, removes its etcd member (if it runs one),
     deregisters it, records the leave in <dataDir>/left.json and exits 0.

Refused, with nothing changed, on a single-node m3sup, on the last
host that holds the cluster CA (no other etcd voter could issue tokens or
serve joins; voters receive the CA when they join), when M3 would keep fewer
instances or isolation groups than the replication factor, and when
removing this host's etcd member would risk the cluster's quorum.
A later 'm3sup run' on this data dir refuses; rejoin with a new data dir.`,
		Args: cobra.NoArgs,
	}
	socket := socketFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	noWait := cmd.Flags().Bool("no-wait", false, "return once the leave is accepted instead of when the host has left")
	timeout := cmd.Flags().Duration("timeout", 0, "give up waiting after this long (0: wait as long as M3 needs; the leave goes on)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		ctx := cmd.Context()
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		res, err := api.NewClient(*socket).Leave(ctx, !*noWait)
		if err != nil {
			return apiError(err)
		}
		if *out == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}
		placed := "was not in M3's placement"
		if res.InPlacement {
			placed = "its instance was removed from M3's placement"
		}
		if res.State != api.LeaveStateLeft {
			placed = "the controller removes its instance from M3's placement"
		}
		fmt.Printf("%s: %s (etcd %s; %s)\n", res.Node, res.State, res.EtcdRole, placed)
		if res.Message != "" {
			fmt.Println(res.Message)
		}
		return nil
	}
	return cmd
}
