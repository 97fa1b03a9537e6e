package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/problem"
)

// remote are the flags of commands that talk to a running API.
type remote struct {
	server string
	token  string
}

func (r *remote) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&r.server, "server", envOr("FLOWD_URL", "http://127.0.0.1:8080"), "flowd API base URL (env FLOWD_URL)")
	// The token's default is read when the command runs, not shown as the flag's default: --help
	// must not print a secret.
	cmd.PersistentFlags().StringVar(&r.token, "token", "", "API token (default: env FLOWD_TOKEN, else FLOWD_ADMIN_TOKEN)")
	_ = cmd.PersistentFlags().SetAnnotation("token", envAtRun, []string{"FLOWD_TOKEN"})
}

func (r *remote) client() (*apiClient, error) {
	if r.token == "" {
		r.token = envOr("FLOWD_TOKEN", os.Getenv("FLOWD_ADMIN_TOKEN"))
	}
	if r.token == "" {
		return nil, fmt.Errorf("no API token: pass --token or set FLOWD_TOKEN")
	}
	return newClient(r.server, r.token), nil
}

func newFlowsCmd() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "flows", Short: "Manage flows on a running flowd API"}
	r.register(cmd)

	var status, search string
	var size, number int
	list := &cobra.Command{
		Use: "list", Short: "List flows", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			q.Set("page[size]", fmt.Sprint(size))
			q.Set("page[number]", fmt.Sprint(number))
			if status != "" {
				q.Set("filter[status]", status)
			}
			if search != "" {
				q.Set("search", search)
			}
			var flows []flowdoc.Flow
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/flows?"+q.Encode(), "", nil, &flows); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tREVISION\tTYPE")
			for _, f := range flows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", f.ID, f.Name, f.Status, f.Revision, f.Type)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&status, "status", envOr("FLOWD_FLOWS_STATUS", ""), "only flows in this status (active, inactive) (env FLOWD_FLOWS_STATUS)")
	list.Flags().StringVar(&search, "search", envOr("FLOWD_FLOWS_SEARCH", ""), "only flows whose name or description contains this (env FLOWD_FLOWS_SEARCH)")
	list.Flags().IntVar(&size, "page-size", envInt("FLOWD_FLOWS_PAGE_SIZE", 100), "flows per page (max 100) (env FLOWD_FLOWS_PAGE_SIZE)")
	list.Flags().IntVar(&number, "page", envInt("FLOWD_FLOWS_PAGE", 1), "page number (env FLOWD_FLOWS_PAGE)")

	get := &cobra.Command{
		Use: "get ID", Short: "Print a flow as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.printJSON(cmd, http.MethodGet, "/api/v1/flows/"+url.PathEscape(args[0]), nil)
		},
	}
	var file string
	create := &cobra.Command{
		Use: "create -f FILE", Short: "Create a flow from a JSON or YAML document (- for stdin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := readDoc(cmd.InOrStdin(), file)
			if err != nil {
				return err
			}
			return r.printJSON(cmd, http.MethodPost, "/api/v1/flows", body)
		},
	}
	create.Flags().StringVarP(&file, "file", "f", envOr("FLOWD_FLOW_FILE", ""), "flow document (required) (env FLOWD_FLOW_FILE)")
	_ = create.MarkFlagRequired("file")
	var patchFile string
	update := &cobra.Command{
		Use: "update ID -f FILE", Short: "Apply a JSON merge patch (or a whole document) to an inactive flow", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := readDoc(cmd.InOrStdin(), patchFile)
			if err != nil {
				return err
			}
			return r.printJSON(cmd, http.MethodPatch, "/api/v1/flows/"+url.PathEscape(args[0]), body)
		},
	}
	update.Flags().StringVarP(&patchFile, "file", "f", envOr("FLOWD_FLOW_FILE", ""), "patch document (required) (env FLOWD_FLOW_FILE)")
	_ = update.MarkFlagRequired("file")
	action := func(verb, method, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: verb + " ID", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a flow", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := r.client()
				if err != nil {
					return err
				}
				var f flowdoc.Flow
				if err := c.do(cmd.Context(), method, "/api/v1/flows/"+url.PathEscape(args[0])+suffix, "", nil, &f); err != nil {
					return err
				}
				if method == http.MethodDelete {
					fmt.Fprintf(cmd.OutOrStdout(), "flow %s deleted\n", args[0])
				} else if r := f.StatusReason; r != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "flow %s is %s: %s (%s)\n", f.ID, f.Status, r.Message, r.Code)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "flow %s is %s\n", f.ID, f.Status)
				}
				return nil
			},
		}
	}
	revisions := &cobra.Command{
		Use: "revisions ID", Short: "Print a flow's revisions as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.printJSON(cmd, http.MethodGet, "/api/v1/flows/"+url.PathEscape(args[0])+"/revisions?page[size]=100", nil)
		},
	}
	cmd.AddCommand(list, get, create, update, revisions,
		action("start", http.MethodPost, "/start"), action("stop", http.MethodPost, "/stop"), action("delete", http.MethodDelete, ""))
	return cmd
}

func (r *remote) printJSON(cmd *cobra.Command, method, path string, body []byte) error {
	c, err := r.client()
	if err != nil {
		return err
	}
	var out json.RawMessage
	ctype := ""
	if body != nil {
		ctype = "application/json"
	}
	if err := c.do(cmd.Context(), method, path, ctype, body, &out); err != nil {
		return err
	}
	return printIndented(cmd.OutOrStdout(), out)
}

func printIndented(w io.Writer, raw []byte) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// maxDocSize bounds what the CLI reads, matching the API's default body limit.
const maxDocSize = 1 << 20

// readDoc reads a flow document from a file or stdin and returns it as JSON.
func readDoc(stdin io.Reader, file string) ([]byte, error) {
	var raw []byte
	var err error
	if file == "-" {
		raw, err = io.ReadAll(io.LimitReader(stdin, maxDocSize+1))
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, err
	}
	if len(raw) > maxDocSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, maxDocSize)
	}
	doc, ps := flowdoc.ToJSON(raw, "")
	if len(ps) > 0 {
		return nil, fmt.Errorf("%s: %w", file, ps)
	}
	return doc, nil
}

// localChecks are the checks the API runs on a flow document, done offline: schema, graph,
// expressions, and the connectors installed in connectorsDir (names, actions, config schemas).
// Notes on what cannot be checked go to stderr; the one about an empty connectors directory
// only when noteEmpty.
func localChecks(cmd *cobra.Command, connectorsDir, topicPrefix string, noteEmpty bool) (flowdoc.Options, error) {
	stderr := cmd.ErrOrStderr()
	// A directory named on purpose must be there; the default may be absent.
	if cmd.Flags().Changed("connectors-dir") {
		if _, err := os.Stat(connectorsDir); err != nil {
			return flowdoc.Options{}, fmt.Errorf("--connectors-dir: %w", err)
		}
	}
	cat, err := catalog.Load(cmd.Context(), connectorsDir, slog.New(slog.DiscardHandler))
	if err != nil {
		return flowdoc.Options{}, err
	}
	skipped := cat.Skipped()
	for _, name := range slices.Sorted(maps.Keys(skipped)) {
		fmt.Fprintf(stderr, "%s: connector skipped: %v\n", filepath.Join(connectorsDir, name), skipped[name])
	}
	opts := cat.ValidationOptions()
	if cat.Len() == 0 && noteEmpty {
		fmt.Fprintf(stderr, "no connectors in %s: connector nodes are not checked (pass --connectors-dir)\n", connectorsDir)
	}
	opts.ReservedTopic = kafkax.Config{TopicPrefix: topicPrefix}.Reserved
	return opts, nil
}

// checkFlags registers the flags of localChecks.
func checkFlags(cmd *cobra.Command, topicPrefix, connectorsDir *string) {
	cmd.Flags().StringVar(topicPrefix, "topic-prefix", envOr("FLOWD_TOPIC_PREFIX", kafkax.DefaultTopicPrefix), "the deployment's topic prefix: flows may not name its topics (env FLOWD_TOPIC_PREFIX)")
	cmd.Flags().StringVar(connectorsDir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries to check connector nodes against (env FLOWD_CONNECTORS_DIR)")
}

func newValidateCmd() *cobra.Command {
	var topicPrefix, connectorsDir string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check flow documents offline: schema, graph, expressions and the connectors they use; exit 1 on any problem",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stderr := cmd.ErrOrStderr()
			opts, err := localChecks(cmd, connectorsDir, topicPrefix, true)
			if err != nil {
				return err
			}
			bad := 0
			for _, file := range args {
				doc, err := readDoc(cmd.InOrStdin(), file)
				if err == nil {
					if _, ps := flowdoc.Decode(doc, opts); len(ps) > 0 {
						err = ps
					}
				}
				if err != nil {
					bad++
					// One line per problem, each naming the file: easy to read and to grep.
					var ps problem.List
					if !errors.As(err, &ps) {
						fmt.Fprintf(stderr, "%s: %v\n", file, err)
						continue
					}
					for _, p := range ps {
						fmt.Fprintf(stderr, "%s: %s\n", file, p)
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d documents are invalid", bad, len(args))
			}
			return nil
		},
	}
	checkFlags(cmd, &topicPrefix, &connectorsDir)
	return cmd
}
