package cli

import (
	"github.com/spf13/cobra"
)

// newInvokeCmd runs one action through the plugin host, as a runner would.
func newInvokeCmd(dir *string) *cobra.Command {
	return &cobra.Command{Use: "invoke NAME ACTION", Short: "Run one connector action through the plugin host", Hidden: true}
}
