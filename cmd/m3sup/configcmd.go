package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/m3sup/m3sup/supervisor"
	"github.com/m3sup/m3sup/supervisor/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check or print m3sup's configuration",
	}
	check := &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate config files exactly as run does (exit status 2 and the file and field on error)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if _, err := loadFiles(files); err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "ok: %d file(s) valid\n", len(files))
			return nil
		},
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective config (defaults, files and flags merged)",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(print, true)
	out := outputFlag(print, "yaml", "json")
	_ = print.Flags().Set("output", "yaml")
	print.Flags().Lookup("output").DefValue = "yaml"
	print.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "yaml", "json"); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		b, err := cfg.YAML()
		if err != nil {
			return err
		}
		if *out == "json" {
			if b, err = yaml.YAMLToJSON(b); err != nil {
				return fmt.Errorf("convert config to JSON: %w", err)
			}
			var v any
			_ = json.Unmarshal(b, &v)
			b, _ = json.MarshalIndent(v, "", "  ")
			b = append(b, '\n')
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	cmd.AddCommand(check, print)
	return cmd
}

func newVersionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print m3sup's version and build info",
		Args:  cobra.NoArgs,
	}
	out := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*out, "table", "json"); err != nil {
			return err
		}
		info := buildInfo()
		if *out == "json" {
			b, _ := json.MarshalIndent(info, "", "  ")
			fmt.Println(string(b))
			return nil
		}
		fmt.Printf("m3sup %s (%s, %s)\n", info["version"], info["go"], info["revision"])
		return nil
	}
	return cmd
}

// loadFiles loads and validates config files as `run` would.
func loadFiles(files []string) (config.Config, error) {
	cfg, err := config.Load(files...)
	if err != nil {
		return cfg, err
	}
	return cfg, checkConfig(cfg)
}

// checkConfig is what `run` checks in a loaded config beyond config.Load
// before it starts anything: the cluster spec it seeds into etcd (the same
// spec.Validate the store applies) and the trusted bundle keys it reads.
// `config check` calls it too, so the two cannot disagree. Errors exit 2.
func checkConfig(cfg config.Config) error {
	if err := supervisor.SpecFromConfig(cfg).Validate(); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("cluster spec from the config: %w", err)}
	}
	if _, err := loadTrustedKeys(cfg.Bundles.TrustedKeys); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("bundles.trustedKeys: %w", err)}
	}
	return nil
}
