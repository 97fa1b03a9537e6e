package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
)

func newConnectorsCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{Use: "connectors", Short: "Write, list, describe, invoke, install and pin connectors (for connector authors)"}
	cmd.PersistentFlags().StringVar(&dir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries (env FLOWD_CONNECTORS_DIR)")
	load := func(cmd *cobra.Command) (*catalog.Catalog, error) {
		return catalog.Load(cmd.Context(), dir, slog.Default())
	}
	list := &cobra.Command{
		Use: "list", Short: "List installed connectors with their actions and triggers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cat, err := load(cmd)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tACTIONS\tTRIGGERS\tDESCRIPTION")
			for _, m := range cat.Manifests() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Version, keys(m.Actions), keys(m.Triggers), m.Description)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if n := len(cat.Skipped()); n > 0 {
				return fmt.Errorf("%d connector binaries in %s could not be loaded (see the log above)", n, dir)
			}
			return nil
		},
	}
	describe := &cobra.Command{
		Use: "describe NAME", Short: "Print a connector's manifest as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cat, err := load(cmd)
			if err != nil {
				return err
			}
			e, ok := cat.Get(args[0])
			if !ok {
				return fmt.Errorf("no connector named %q in %s", args[0], dir)
			}
			raw, err := json.Marshal(e.Manifest)
			if err != nil {
				return err
			}
			return printIndented(cmd.OutOrStdout(), raw)
		},
	}
	cmd.AddCommand(list, describe, newInvokeCmd(&dir), newPinCmd(&dir), newInstallCmd(&dir), newScaffoldCmd())
	return cmd
}

func keys[V any](m map[string]V) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "-"
	}
	b, _ := json.Marshal(out)
	return string(b[1 : len(b)-1])
}
