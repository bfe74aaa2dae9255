package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/join"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens (on any etcd voter that holds the cluster CA)"}

	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token for `m3sup run --join URL --token T` and print it",
		Args:  cobra.NoArgs,
	}
	socket := socketFlag(create)
	ttl := create.Flags().Duration("ttl", 24*time.Hour, "how long the token is valid (positive, at most "+join.MaxTokenTTL.String()+")")
	uses := create.Flags().Int("uses", 1, "how many hosts the token admits")
	reusable := create.Flags().Bool("reusable", false, "admit any number of hosts until the token expires (instead of --uses)")
	voter := create.Flags().Bool("voter", false, "let the token make etcd voters, which receive the cluster CA key (without it, joined hosts are etcd client-only)")
	desc := create.Flags().String("description", "", "a note shown by `token list`")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		o := join.TokenOptions{TTL: *ttl, Uses: *uses, Reusable: *reusable, Voter: *voter, Description: *desc}
		if o.Reusable && !cmd.Flags().Changed("uses") {
			o.Uses = 0
		}
		if *uses < 1 {
			return &exitError{code: 2, err: fmt.Errorf("token create: --uses %d: want 1 to %d (or --reusable)", *uses, join.MaxTokenUses)}
		}
		if err := o.Validate(); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("token create: %w", err)}
		}
		res, err := api.NewClient(*socket).CreateToken(cmd.Context(), o)
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
		fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tUSES\tVOTER\tDESCRIPTION")
		for _, t := range toks {
			exp := "none (refused)"
			if !t.Expires.IsZero() {
				exp = t.Expires.UTC().Format(time.RFC3339)
				if t.Expired(time.Now()) {
					exp += " (expired)"
				}
			}
			uses := fmt.Sprintf("%d/%d", t.Used, t.Uses)
			if t.Reusable {
				uses = fmt.Sprintf("%d/any", t.Used)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", t.ID, t.Created.UTC().Format(time.RFC3339), exp, uses, t.Voter, t.Description)
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
