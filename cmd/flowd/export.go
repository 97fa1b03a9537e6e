package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowsync"
)

func newExportCmd() *cobra.Command {
	var r remote
	var dir, format string
	cmd := &cobra.Command{
		Use:   "export [NAME|ID...]",
		Short: "Write the flows you can see (or the named ones) as files flowd apply reads back unchanged",
		Long: `export writes each flow to DIR/<name as a slug>.yaml (or .json): its writable fields only, in a
stable order, without the owner entries the server adds for you. Other files in DIR are left as
they are.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != flowsync.FormatYAML && format != flowsync.FormatJSON {
				return fmt.Errorf("--format %q: use yaml or json", format)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			self, err := selfOwners(ctx, c)
			if err != nil {
				return err
			}
			all, err := allFlows(ctx, c)
			if err != nil {
				return err
			}
			flows, err := selectFlows(all, args)
			if err != nil {
				return err
			}
			if len(flows) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no flows to export")
				return nil
			}
			names := make([]string, len(flows))
			for i, f := range flows {
				names[i] = f.Name
			}
			files := flowsync.FileNames(names, format)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			for i := range flows {
				body, err := flowsync.Export(&flows[i], format, self)
				if err != nil {
					return fmt.Errorf("%s: %w", flows[i].Name, err)
				}
				path := filepath.Join(dir, files[i])
				if err := os.WriteFile(path, body, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s → %s\n", flows[i].Name, path)
			}
			return nil
		},
	}
	r.register(cmd)
	cmd.Flags().StringVarP(&dir, "output", "o", envOr("FLOWD_EXPORT_DIR", "."), "directory to write the files to (env FLOWD_EXPORT_DIR)")
	cmd.Flags().StringVar(&format, "format", envOr("FLOWD_EXPORT_FORMAT", flowsync.FormatYAML), "file format: yaml or json (env FLOWD_EXPORT_FORMAT)")
	return cmd
}

// selectFlows picks the flows refs name (each an id, else a name), by name then id; all when
// refs is empty. A name two flows share picks neither: the files could not be applied back.
func selectFlows(all []flowdoc.Flow, refs []string) ([]flowdoc.Flow, error) {
	var out []flowdoc.Flow
	if len(refs) == 0 {
		out = slices.Clone(all)
	}
	for _, ref := range refs {
		i := slices.IndexFunc(all, func(f flowdoc.Flow) bool { return f.ID == ref })
		if i >= 0 {
			out = append(out, all[i])
			continue
		}
		var ids []string
		for _, f := range all {
			if f.Name == ref {
				ids = append(ids, f.ID)
			}
		}
		switch len(ids) {
		case 0:
			return nil, fmt.Errorf("no flow you can see has the name or id %q", ref)
		case 1:
			out = append(out, all[slices.IndexFunc(all, func(f flowdoc.Flow) bool { return f.ID == ids[0] })])
		default:
			return nil, fmt.Errorf("%d flows are named %q (ids %s): name one by its id", len(ids), ref, strings.Join(ids, ", "))
		}
	}
	slices.SortFunc(out, func(a, b flowdoc.Flow) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return slices.CompactFunc(out, func(a, b flowdoc.Flow) bool { return a.ID == b.ID }), nil
}
