package main

import (
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/console"
)

// registerConsole adds --console to a command that serves the API.
func registerConsole(cmd *cobra.Command, on *bool) {
	cmd.Flags().BoolVar(on, "console", envBool("FLOWD_CONSOLE", true), "serve the web console at / (the app embedded by make build); it signs in with an API token (env FLOWD_CONSOLE=false)")
}

// webConsole is what the API serves at /: nothing when off, else the embedded app, built or not
// (a binary built without it answers / with how to build it).
func webConsole(on bool) (fsys fs.FS, built bool) {
	if !on {
		return nil, false
	}
	return console.Files()
}

// consoleLine is what a start-up banner says about the console at base ("http://host:port").
func consoleLine(fsys fs.FS, built bool, base string) string {
	switch {
	case fsys == nil:
		return ""
	case !built:
		return "Console not built: run make build"
	default:
		return fmt.Sprintf("Console: %s/ (sign in with the administrator token)", base)
	}
}
