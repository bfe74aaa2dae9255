package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens (on any etcd voter that holds the cluster CA)"}

	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token for `m3sup run --join URL --token T` and print it",
		Args:  cobra.NoArgs,
	}
	socket := socketFlag(create)
	ttl := create.Flags().Duration("ttl", 24*time.Hour, "how long the token is valid (0: until revoked)")
	desc := create.Flags().String("description", "", "a note shown by `token list`")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		res, err := api.NewClient(*socket).CreateToken(cmd.Context(), *ttl, *desc)
		if err != nil {
			return apiError(err)
		}
		fmt.Println(res.Token)
		return nil
	}

	list := &cobra.Command{Use: "list", Short: "List join tokens (IDs and expiry, never secrets)", Args: cobra.NoArgs}
	lsocket := socketFlag(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		toks, err := api.NewClient(*lsocket).ListTokens(cmd.Context())
		if err != nil {
			return apiError(err)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tDESCRIPTION")
		for _, t := range toks {
			exp := "never"
			if !t.Expires.IsZero() {
				exp = t.Expires.UTC().Format(time.RFC3339)
				if t.Expired(time.Now()) {
					exp += " (expired)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Created.UTC().Format(time.RFC3339), exp, t.Description)
		}
		return tw.Flush()
	}

	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke a join token", Args: cobra.ExactArgs(1)}
	rsocket := socketFlag(revoke)
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		if err := api.NewClient(*rsocket).RevokeToken(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		return nil
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
