package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/host"
)

// newPinCmd prints the pin file of the installed connectors.
func newPinCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "pin",
		Short: "Print a pin file for the installed connectors: one \"<sha256>  <name>\" line each",
		Long: `flowd connectors pin prints, for every connector in --connectors-dir, the line a pin file
(--pin-file of flowd runner and flowd dev) needs for it to start: the sha256 of a binary (what
sha256sum prints), or for a script (a file starting with #!) the digest of its package, the
folder holding the script (symlinks followed). See "Pinning" in docs/connectors.md.`,
		Example: `  flowd connectors pin --connectors-dir /opt/flowd/connectors > /etc/flowd/connectors.sha256`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pins, err := host.Pins(cmd.Context(), *dir)
			if err != nil {
				return err
			}
			for _, p := range pins {
				fmt.Fprintln(cmd.OutOrStdout(), p.Line())
			}
			return nil
		},
	}
}

// newInstallCmd installs a connector without disturbing the running one.
func newInstallCmd(dir *string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "install SRC",
		Short: "Install or upgrade a connector in the connectors dir, safely while it runs",
		Long: `flowd connectors install puts SRC into --connectors-dir under its file name (or --name) with
one atomic rename: nothing ever sees half a file, and replacing a running binary does not fail
with "text file busy" as cp does. A binary is copied; a script (a file starting with #!) is
linked, since it runs the files of its folder. flowd dev picks the change up by itself; send
SIGHUP to runners and API roles (kill -HUP <pid>).`,
		Example: `  flowd connectors install ./greeter --connectors-dir bin/connectors
  flowd connectors install connectors/examples/python/greeter/greeter`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, how, err := installConnector(args[0], *dir, name)
			if err != nil {
				return fmt.Errorf("install %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", how, dst)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", envOr("FLOWD_INSTALL_NAME", ""), "connector name, which its manifest must carry too (default: SRC's file name; env FLOWD_INSTALL_NAME)")
	return cmd
}

// installConnector makes src the connector name (src's file name when empty) in dir, and says
// how ("copied" or "linked"). It prepares a hidden file beside the target (hidden files are
// no connectors) and renames it over the target: a rename replaces the directory entry, not
// the file a running process executes, so it cannot fail with ETXTBSY, and whoever looks sees
// the old connector or the new one, whole.
func installConnector(src, dir, name string) (dst, how string, err error) {
	if name == "" {
		name = filepath.Base(src)
	}
	if name == "." || name == ".." || strings.HasPrefix(name, ".") || strings.ContainsRune(name, os.PathSeparator) {
		return "", "", fmt.Errorf("%q is not a connector name", name)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return "", "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", "", errors.New("not an executable file")
	}
	script, err := host.IsScript(src)
	if err != nil {
		return "", "", err
	}
	dst = filepath.Join(dir, name)
	tmp := filepath.Join(dir, "."+name+".install-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if script {
		// A script runs the files of its folder (its package): link it where it is.
		abs, err := filepath.Abs(src)
		if err != nil {
			return "", "", err
		}
		if err := os.Symlink(abs, tmp); err != nil {
			return "", "", err
		}
		how = "linked"
	} else {
		if err := copyExecutable(src, tmp); err != nil {
			_ = os.Remove(tmp)
			return "", "", err
		}
		how = "copied"
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return "", "", err
	}
	return dst, how, nil
}

// copyExecutable writes src to a new file dst, executable once complete and synced.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if err == nil {
		err = out.Chmod(0o755)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
