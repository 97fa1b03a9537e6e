package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowsync"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
)

// applyPlanned, set by tests only, runs between printing the plan and applying it: the moment
// a concurrent edit makes the plan stale.
var applyPlanned func(ctx context.Context, p *flowsync.Plan)

type applyOptions struct {
	path, topicPrefix, connectorsDir string
	prune, dryRun, restart           bool
}

func newApplyCmd() *cobra.Command {
	var r remote
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply -f DIR|FILE",
		Short: "Make the flows on a flowd API match flow documents in files: print the plan, then apply it",
		Long: `apply reads flow documents (JSON or YAML, one flow per file; a directory is read recursively
for *.json, *.yaml and *.yml), checks them as flowd validate does, and makes the server's flows
match them, matched by name: it creates the missing ones and updates the ones that differ (a
merge patch of the differing fields, sent with If-Match: the revision the plan saw). Flows no
file states are left alone unless --prune deletes them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Every file is checked before anything is asked of the server.
			srcs, err := loadSources(cmd, o)
			if err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			return runApply(cmd.Context(), c, srcs, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	r.register(cmd)
	cmd.Flags().StringVarP(&o.path, "file", "f", envOr("FLOWD_APPLY_FILE", ""), "flow document, or directory of them (required) (env FLOWD_APPLY_FILE)")
	_ = cmd.MarkFlagRequired("file")
	cmd.Flags().BoolVar(&o.prune, "prune", envBool("FLOWD_APPLY_PRUNE", false), "delete the flows you can see that no file states (env FLOWD_APPLY_PRUNE)")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", envBool("FLOWD_APPLY_DRY_RUN", false), "print the plan only; change nothing (env FLOWD_APPLY_DRY_RUN)")
	cmd.Flags().BoolVar(&o.restart, "restart", envBool("FLOWD_APPLY_RESTART", false), "update a running flow by stopping it, changing it and starting it again (env FLOWD_APPLY_RESTART)")
	checkFlags(cmd, &o.topicPrefix, &o.connectorsDir)
	return cmd
}

// flowFiles lists the flow documents at path: the file itself, or a directory's *.json,
// *.yaml and *.yml files at any depth (hidden ones aside), sorted by path.
func flowFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != path && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir // .git and the like
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".json", ".yaml", ".yml":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no flow documents (*.json, *.yaml, *.yml)", path)
	}
	slices.Sort(files)
	return files, nil
}

// loadSources reads and checks every file, reporting each problem on a line of its own
// ("file: path: message (code)"), and fails if any file has one.
func loadSources(cmd *cobra.Command, o applyOptions) ([]flowsync.Source, error) {
	files, err := flowFiles(o.path)
	if err != nil {
		return nil, err
	}
	opts, err := localChecks(cmd, o.connectorsDir, o.topicPrefix, false)
	if err != nil {
		return nil, err
	}
	stderr := cmd.ErrOrStderr()
	bad := map[string]bool{}
	var srcs []flowsync.Source
	for _, file := range files {
		doc, err := readDoc(cmd.InOrStdin(), file)
		var f *flowdoc.Flow
		if err == nil {
			var ps problem.List
			if f, ps = flowdoc.Decode(doc, opts); len(ps) > 0 {
				err = ps
			}
		}
		if err != nil {
			bad[file] = true
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
		srcs = append(srcs, flowsync.Source{Path: file, Flow: f})
	}
	for _, fp := range flowsync.CheckNames(srcs) {
		bad[fp.Path] = true
		fmt.Fprintf(stderr, "%s: %s\n", fp.Path, fp.Problem)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%d of %d documents are invalid; nothing was applied", len(bad), len(files))
	}
	return srcs, nil
}

// runApply plans, prints the plan, and applies it unless o.dryRun.
func runApply(ctx context.Context, c *apiClient, srcs []flowsync.Source, o applyOptions, stdout, stderr io.Writer) error {
	self, err := selfOwners(ctx, c)
	if err != nil {
		return err
	}
	current, err := allFlows(ctx, c)
	if err != nil {
		return err
	}
	plan, err := flowsync.Make(srcs, current, flowsync.Options{Prune: o.prune, Self: self})
	if err != nil {
		return err
	}
	if n := len(plan.Untracked); n > 0 {
		fmt.Fprintf(stderr, "%d other flows on the server are left as they are (--prune deletes them)\n", n)
	}
	if plan.Empty() {
		fmt.Fprintln(stdout, "no changes")
		return nil
	}
	for _, ch := range plan.Changes {
		fmt.Fprintln(stdout, ch.Line())
	}
	if o.dryRun {
		fmt.Fprintf(stdout, "plan: %d to create, %d to update, %d to delete, %d unchanged (dry run: nothing changed)\n",
			plan.Count(flowsync.Create), plan.Count(flowsync.Update), plan.Count(flowsync.Delete), plan.Count(flowsync.Unchanged))
		return nil
	}
	if applyPlanned != nil {
		applyPlanned(ctx, plan)
	}
	a := applier{c: c, restart: o.restart}
	done := map[flowsync.Op]int{}
	failed := 0
	for _, ch := range plan.Changes {
		if ch.Op == flowsync.Unchanged {
			continue
		}
		// Flows are independent: one that fails does not hold back the others.
		if err := a.apply(ctx, ch); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed++
			fmt.Fprintln(stderr, strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		done[ch.Op]++
	}
	fmt.Fprintf(stdout, "apply: %d created, %d updated, %d deleted, %d unchanged\n",
		done[flowsync.Create], done[flowsync.Update], done[flowsync.Delete], plan.Count(flowsync.Unchanged))
	if failed > 0 {
		return fmt.Errorf("%d of %d changes failed", failed, len(plan.Changes)-plan.Count(flowsync.Unchanged))
	}
	return nil
}

// selfOwners are the owner entries the server adds to the flows the caller creates.
func selfOwners(ctx context.Context, c *apiClient) ([]flowdoc.Owner, error) {
	var me identity.User
	if err := c.do(ctx, http.MethodGet, "/api/v1/users/me", "", nil, &me); err != nil {
		return nil, err
	}
	self := []flowdoc.Owner{{ID: me.ID, Type: flowdoc.OwnerUser}}
	if me.Tenant != "" {
		self = append(self, flowdoc.Owner{ID: me.Tenant, Type: flowdoc.OwnerTenant})
	}
	return self, nil
}

// allFlows are every flow the caller may see, page by page.
func allFlows(ctx context.Context, c *apiClient) ([]flowdoc.Flow, error) {
	const size = 100 // the API's largest page
	var all []flowdoc.Flow
	seen := map[string]bool{}
	for n := 1; ; n++ {
		var page []flowdoc.Flow
		path := fmt.Sprintf("/api/v1/flows?page[size]=%d&page[number]=%d&sort=createdAt", size, n)
		if err := c.do(ctx, http.MethodGet, path, "", nil, &page); err != nil {
			return nil, err
		}
		for _, f := range page {
			if !seen[f.ID] {
				seen[f.ID] = true
				all = append(all, f)
			}
		}
		if len(page) < size {
			return all, nil
		}
	}
}

// applier carries out the changes of a plan.
type applier struct {
	c       *apiClient
	restart bool
}

func flowPath(id string) string { return "/api/v1/flows/" + url.PathEscape(id) }

// ifMatch is the precondition that the flow is still at the revision the plan saw.
func ifMatch(rev int) []string { return []string{"If-Match", strconv.Quote(strconv.Itoa(rev))} }

func (a *applier) apply(ctx context.Context, ch flowsync.Change) error {
	switch ch.Op {
	case flowsync.Create:
		if err := a.c.do(ctx, http.MethodPost, "/api/v1/flows", "application/json", ch.Doc, nil); err != nil {
			return fmt.Errorf("%s: %w", ch.Path, err)
		}
		return nil
	case flowsync.Update:
		err := a.patch(ctx, ch)
		if statusOf(err) == http.StatusConflict && a.restart {
			return a.restartWith(ctx, ch)
		}
		return a.explain(ctx, ch, "update", err)
	case flowsync.Delete:
		err := a.c.send(ctx, http.MethodDelete, flowPath(ch.ID), "", ifMatch(ch.Revision), nil, nil)
		return a.explain(ctx, ch, "delete", err)
	}
	return nil
}

func (a *applier) patch(ctx context.Context, ch flowsync.Change) error {
	return a.c.send(ctx, http.MethodPatch, flowPath(ch.ID), "application/merge-patch+json", ifMatch(ch.Revision), ch.Patch, nil)
}

// restartWith stops a running flow, updates it and starts it again; a flow that was not
// running (stopping, say) is updated once inactive and left stopped.
func (a *applier) restartWith(ctx context.Context, ch flowsync.Change) error {
	var f flowdoc.Flow
	if err := a.c.do(ctx, http.MethodGet, flowPath(ch.ID), "", nil, &f); err != nil {
		return a.explain(ctx, ch, "update", err)
	}
	running := flowdoc.Runs(f.Status)
	if running {
		if err := a.c.do(ctx, http.MethodPost, flowPath(ch.ID)+"/stop", "", nil, &f); err != nil {
			return fmt.Errorf("%s: stop: %w", ch.Name, err)
		}
	}
	if err := a.awaitEditable(ctx, ch, &f); err != nil {
		return err
	}
	err := a.explain(ctx, ch, "update", a.patch(ctx, ch))
	if running {
		// Started again even when the update failed: the flow runs as it did.
		if serr := a.c.do(ctx, http.MethodPost, flowPath(ch.ID)+"/start", "", nil, &f); serr != nil {
			return errors.Join(err, fmt.Errorf("%s: start again: %w", ch.Name, serr))
		}
	}
	return err
}

// awaitEditable polls until the router confirmed the stop (f is the flow as last seen).
func (a *applier) awaitEditable(ctx context.Context, ch flowsync.Change, f *flowdoc.Flow) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a bound for a router that never confirms
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !flowdoc.Editable(f.Status) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is still %s: no router confirmed the stop", ch.Name, f.Status)
		case <-tick.C:
		}
		if err := a.c.do(ctx, http.MethodGet, flowPath(ch.ID), "", nil, f); err != nil {
			return fmt.Errorf("%s: %w", ch.Name, err)
		}
	}
	return nil
}

// explain turns the API's refusal of a planned change into what to do about it.
func (a *applier) explain(ctx context.Context, ch flowsync.Change, verb string, err error) error {
	if err == nil {
		return nil
	}
	switch statusOf(err) {
	case http.StatusPreconditionFailed:
		var f flowdoc.Flow
		if a.c.do(ctx, http.MethodGet, flowPath(ch.ID), "", nil, &f) == nil {
			return fmt.Errorf("conflict: %s changed on the server since the plan (revision %d → %d); run apply again", ch.Name, ch.Revision, f.Revision)
		}
		return fmt.Errorf("conflict: %s changed on the server since the plan (revision %d); run apply again", ch.Name, ch.Revision)
	case http.StatusNotFound:
		return fmt.Errorf("conflict: %s was deleted on the server since the plan; run apply again", ch.Name)
	case http.StatusConflict:
		var f flowdoc.Flow
		status := "running"
		if a.c.do(ctx, http.MethodGet, flowPath(ch.ID), "", nil, &f) == nil {
			status = f.Status
		}
		if verb == "update" {
			return fmt.Errorf("%s is %s: stop it first (flowd flows stop %s), or apply with --restart", ch.Name, status, ch.ID)
		}
		return fmt.Errorf("%s is %s: stop it first (flowd flows stop %s) to %s it", ch.Name, status, ch.ID, verb)
	}
	return fmt.Errorf("%s: %w", ch.Name, err)
}
