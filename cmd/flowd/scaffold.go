package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/scaffold"
)

// newScaffoldCmd writes a new connector's project: `flowd connectors new NAME --lang go|python`.
func newScaffoldCmd() *cobra.Command {
	var lang, dir, sdkDir string
	cmd := &cobra.Command{
		Use:   "new NAME",
		Short: "Write a new connector (one action, one polling trigger, a test and a README) to build on",
		Example: `  flowd connectors new crm --lang go
  flowd connectors new crm --lang python --dir ~/src/crm-connector`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if dir == "" {
				dir = name
			}
			if sdkDir == "" {
				// A flowd checkout around the working directory or the binary: build against it.
				wd, _ := os.Getwd()
				exe, _ := os.Executable()
				sdkDir = scaffold.FindSDK(wd, filepath.Dir(exe))
			} else if abs, err := filepath.Abs(sdkDir); err == nil {
				sdkDir = abs
			}
			files, err := scaffold.Write(scaffold.Options{Name: name, Lang: lang, Dir: dir, SDKDir: sdkDir})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote the %s connector %s in %s: %s\n", lang, name, dir, strings.Join(files, ", "))
			if sdkDir == "" {
				fmt.Fprintln(out, "no flowd checkout found: the project uses the published SDK (--sdk-dir points it at a checkout's)")
			}
			fmt.Fprintf(out, "next: see %s\n", filepath.Join(dir, "README.md"))
			return nil
		},
	}
	cmd.Flags().StringVar(&lang, "lang", envOr("FLOWD_NEW_LANG", "go"), "language: "+strings.Join(scaffold.Languages, " or ")+" (env FLOWD_NEW_LANG)")
	cmd.Flags().StringVar(&dir, "dir", envOr("FLOWD_NEW_DIR", ""), "where to write the project [./NAME] (env FLOWD_NEW_DIR)")
	cmd.Flags().StringVar(&sdkDir, "sdk-dir", envOr("FLOWD_SDK_DIR", ""), "a flowd checkout's connectors/sdk to build against (env FLOWD_SDK_DIR) [found in a checkout around the working directory or the flowd binary, else the published SDK]")
	return cmd
}
