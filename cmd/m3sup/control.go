package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/spec"
)

func socketFlag(cmd *cobra.Command) *string {
	return cmd.Flags().String("socket", config.DefaultSocket, "local API unix socket of the daemon")
}

// apiError gives daemon-side validation and conflict errors exit status 2
// and 3, so scripts can tell them from connection problems (1).
func apiError(err error) error {
	switch {
	case errors.Is(err, api.ErrInvalid):
		return &exitError{code: 2, err: err}
	case errors.Is(err, api.ErrConflict):
		return &exitError{code: 3, err: err}
	}
	return err
}

func newGetCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "get", Short: "Read desired state from the daemon"}
	cl := &cobra.Command{
		Use:   "cluster",
		Short: "Print the desired cluster spec with its revision (feed it back to `m3sup apply`)",
		Args:  cobra.NoArgs,
	}
	socket := socketFlag(cl)
	out := outputFlag(cl, "yaml", "json")
	_ = cl.Flags().Set("output", "yaml")
	cl.Flags().Lookup("output").DefValue = "yaml"
	cl.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "yaml", "json"); err != nil {
			return err
		}
		doc, err := api.NewClient(*socket).Cluster(cmd.Context())
		if err != nil {
			return apiError(err)
		}
		return printDoc(os.Stdout, doc, *out)
	}
	cmd.AddCommand(cl)
	return cmd
}

func printDoc(w io.Writer, v any, format string) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

func newApplyCmd() *cobra.Command {
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate and write the desired cluster spec (with a revision check)",
		Long: `Validate a cluster spec and write it to etcd. The file is what
'm3sup get cluster' prints (revision + spec) or just the spec. With a
revision, the write fails with a conflict (exit 3) if the spec changed since;
without one, it applies over whatever is current. An invalid spec is refused
with the path of each bad field (exit 2) and etcd is left unchanged.

Only what changed restarts: a component restarts when its rendered M3 config
or its release changes; namespace retention changes go through M3's API.
--dry-run prints the changes and the restarts without writing. Use -f - for
standard input.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "spec file (YAML or JSON; - for stdin)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change and restart; write nothing")
	socket := socketFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	_ = cmd.MarkFlagRequired("filename")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		doc, err := readDoc(file)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		res, err := api.NewClient(*socket).ApplyCluster(cmd.Context(), doc, dryRun)
		if err != nil {
			return apiError(err)
		}
		if *out == "json" {
			return printDoc(os.Stdout, res, "json")
		}
		printApply(os.Stdout, res, dryRun)
		return nil
	}
	return cmd
}

// readDoc reads a cluster doc (revision + spec) or a bare spec.
func readDoc(file string) (api.ClusterDoc, error) {
	var b []byte
	var err error
	name := file
	if file == "-" {
		name = "stdin"
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return api.ClusterDoc{}, fmt.Errorf("read %s: %w", name, err)
	}
	var probe map[string]any
	if err := yaml.Unmarshal(b, &probe); err != nil {
		return api.ClusterDoc{}, fmt.Errorf("%s: %w", name, err)
	}
	var doc api.ClusterDoc
	if _, ok := probe["spec"]; ok {
		err = spec.DecodeStrict(b, &doc)
	} else {
		err = spec.DecodeStrict(b, &doc.Spec)
	}
	if err != nil {
		return doc, fmt.Errorf("%s: %w", name, err)
	}
	if err := doc.Spec.Validate(); err != nil {
		return doc, fmt.Errorf("%s: invalid cluster spec:\n  %s", name, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return doc, nil
}

func printApply(w io.Writer, res api.ApplyResult, dryRun bool) {
	switch {
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "no changes (revision %d)\n", res.Revision)
		return
	case dryRun:
		fmt.Fprintln(w, "dry run: nothing written")
	default:
		fmt.Fprintf(w, "applied at revision %d\n", res.Revision)
	}
	fmt.Fprintln(w, "changes:")
	for _, c := range res.Changes {
		fmt.Fprintln(w, "  "+c)
	}
	if len(res.InPlace) > 0 {
		fmt.Fprintln(w, "applied by M3 without a restart:")
		for _, c := range res.InPlace {
			fmt.Fprintln(w, "  "+c)
		}
	}
	if len(res.Restarts) == 0 {
		fmt.Fprintln(w, "restarts: none")
		return
	}
	fmt.Fprintln(w, "restarts:")
	for _, r := range res.Restarts {
		fmt.Fprintln(w, "  "+r)
	}
}

func newControlCmd(action, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:       action + " COMPONENT",
		Short:     short,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"m3dbnode", "m3coordinator"},
	}
	socket := socketFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		res, err := api.NewClient(*socket).Control(cmd.Context(), args[0], action)
		if err != nil {
			return apiError(err)
		}
		if *out == "json" {
			return printDoc(os.Stdout, res, "json")
		}
		switch action {
		case "restart":
			fmt.Printf("%s: restart requested (generation %d)\n", res.Component, res.Control.RestartGeneration)
		case "stop":
			fmt.Printf("%s: stop requested; it stays stopped across m3sup restarts until `m3sup start %s`\n", res.Component, res.Component)
		case "start":
			fmt.Printf("%s: start requested\n", res.Component)
		}
		return nil
	}
	return cmd
}

func newLogsCmd() *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs COMPONENT",
		Short: "Print a component's log (stdout and stderr of its process)",
		Long: `Print a component's log: the stdout and stderr of its process, from
<dataDir>/components/<name>/logs/<name>.log. m3sup rotates that file by size
(componentLogs in the config): without --tail it prints the newest rotated
file (<name>.log.1) and the live one; --tail N takes lines from <name>.log.1
when the live file holds fewer. Older rotated files (<name>.log.2.gz, …) stay
on disk beside it. --follow keeps printing across rotations.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"m3dbnode", "m3coordinator"},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().IntVar(&tail, "tail", -1, "print only the last N lines (default: all of the live file and the newest rotated one)")
	socket := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return apiError(api.NewClient(*socket).Logs(ctx, os.Stdout, args[0], tail, follow))
	}
	return cmd
}
