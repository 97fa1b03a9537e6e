// Package flowsync compares flow documents kept in files with the flows on a server and plans
// the changes that make the server match the files (flows as code: `flowd apply`), and writes
// server flows back as files (`flowd export`). It is pure: no I/O, no clock, so every decision
// is unit-tested; the command line fetches, prints and sends.
//
// Flows are matched by name. Only what a client writes is compared (the fields flow.schema.json
// does not mark readOnly), each side normalised through flowdoc's types so that key order,
// defaults and spelling (`port: true` in YAML) never make a difference of their own.
package flowsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// Fields are the writable fields of a flow document, in schema order: what apply compares and
// export writes.
var Fields = []string{"name", "description", "graph", "owners", "fromTemplate", "payload", "retry", "notifications", "onError", "settings", "history"}

// Source is a flow as a file states it.
type Source struct {
	Path string
	Flow *flowdoc.Flow
}

// Op is what a plan does to one flow.
type Op string

// The ops, in the order a plan lists their kinds in its summary.
const (
	Create    Op = "create"
	Update    Op = "update"
	Delete    Op = "delete"
	Unchanged Op = "unchanged"
)

// Change is one step of a plan.
type Change struct {
	Op   Op
	Name string
	Path string // the file stating the flow; "" for a deletion
	ID   string // the server's flow; "" for a creation
	// Revision is the server flow's revision when the plan was made: the update is sent with
	// If-Match, so a flow edited since is not overwritten.
	Revision int
	Fields   []string // update: the fields that differ, in schema order
	Doc      []byte   // create: the document to send
	Patch    []byte   // update: the JSON merge patch (RFC 7396) of the differing fields
}

// Line is the change as the plan prints it.
func (c Change) Line() string {
	switch c.Op {
	case Create:
		return "+ create " + c.Name
	case Update:
		return fmt.Sprintf("~ update %s (revision %d): fields %s", c.Name, c.Revision, strings.Join(c.Fields, ", "))
	case Delete:
		return "- delete " + c.Name
	default:
		return "= " + c.Name + " unchanged"
	}
}

// Plan is every change that makes the server match the files.
type Plan struct {
	Changes []Change
	// Untracked are server flows no file states, left alone because pruning was not asked for.
	Untracked []string
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return !slices.ContainsFunc(p.Changes, func(c Change) bool { return c.Op != Unchanged })
}

// Count is how many changes of op the plan holds.
func (p *Plan) Count(op Op) int {
	n := 0
	for _, c := range p.Changes {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Options steer a plan.
type Options struct {
	// Prune deletes server flows no file states.
	Prune bool
	// Self are the owners the server adds to every flow the caller creates (the caller's user
	// and tenant): they are not compared, so a flow created from a file without them does
	// not differ from it, and an update keeps them so callers never lock themselves out.
	Self []flowdoc.Owner
}

// FileProblem is a problem of one file.
type FileProblem struct {
	Path    string
	Problem problem.Problem
}

// CodeDuplicateName is a flow name that more than one file states.
const CodeDuplicateName = "duplicate_name"

// CheckNames reports every file whose flow name an earlier file already states: flows are
// matched by name, so each must be unique among the files.
func CheckNames(srcs []Source) []FileProblem {
	var out []FileProblem
	first := map[string]string{}
	for _, s := range srcs {
		if prev, ok := first[s.Flow.Name]; ok {
			out = append(out, FileProblem{s.Path, problem.New(CodeDuplicateName, "/name",
				"flow name %q is also stated by %s; names must be unique among the files", s.Flow.Name, prev)})
			continue
		}
		first[s.Flow.Name] = s.Path
	}
	return out
}

// Make plans the changes that make the server's flows (current: every flow the caller may
// see) match the files (srcs, whose names must be unique: see CheckNames). Changes follow the
// files' order, then deletions by name. Two server flows of a name a file states make the
// match ambiguous: an error naming both.
func Make(srcs []Source, current []flowdoc.Flow, opts Options) (*Plan, error) {
	byName := map[string][]*flowdoc.Flow{}
	for i := range current {
		f := &current[i]
		byName[f.Name] = append(byName[f.Name], f)
	}
	var ambiguous []string
	wanted := map[string]bool{}
	for _, s := range srcs {
		wanted[s.Flow.Name] = true
		if fs := byName[s.Flow.Name]; len(fs) > 1 {
			ids := make([]string, len(fs))
			for i, f := range fs {
				ids[i] = f.ID
			}
			ambiguous = append(ambiguous, fmt.Sprintf("%d flows on the server are named %q (ids %s): rename or delete all but one",
				len(fs), s.Flow.Name, strings.Join(ids, ", ")))
		}
	}
	if len(ambiguous) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(ambiguous, "; "))
	}
	p := &Plan{}
	for _, s := range srcs {
		cur := byName[s.Flow.Name]
		if len(cur) == 0 {
			doc, err := Document(s.Flow)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Path, err)
			}
			p.Changes = append(p.Changes, Change{Op: Create, Name: s.Flow.Name, Path: s.Path, Doc: doc})
			continue
		}
		c, err := diff(s, cur[0], opts.Self)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Path, err)
		}
		p.Changes = append(p.Changes, c)
	}
	var rest []*flowdoc.Flow
	for i := range current {
		if !wanted[current[i].Name] {
			rest = append(rest, &current[i])
		}
	}
	slices.SortStableFunc(rest, func(a, b *flowdoc.Flow) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range rest {
		if opts.Prune {
			p.Changes = append(p.Changes, Change{Op: Delete, Name: f.Name, ID: f.ID, Revision: f.Revision})
		} else {
			p.Untracked = append(p.Untracked, f.Name)
		}
	}
	return p, nil
}

// diff compares a file's flow with the server's flow of its name.
func diff(s Source, cur *flowdoc.Flow, self []flowdoc.Owner) (Change, error) {
	c := Change{Op: Unchanged, Name: s.Flow.Name, Path: s.Path, ID: cur.ID, Revision: cur.Revision}
	want, err := content(s.Flow)
	if err != nil {
		return c, err
	}
	have, err := content(cur)
	if err != nil {
		return c, err
	}
	patch := map[string]json.RawMessage{}
	for _, field := range Fields {
		if field == "owners" {
			continue // below: owners compare as sets
		}
		w, inW := want[field]
		h, inH := have[field]
		if inW == inH && bytes.Equal(w, h) {
			continue
		}
		c.Fields = append(c.Fields, field)
		switch {
		case !inW:
			patch[field] = json.RawMessage("null")
		case inH && w[0] == '{' && h[0] == '{':
			// Objects merge: a member the file no longer states must be removed (null).
			mp, err := jsonpatch.CreateMergePatch(h, w)
			if err != nil {
				return c, fmt.Errorf("%s: %w", field, err)
			}
			patch[field] = mp
		default:
			patch[field] = w
		}
	}
	// A file without owners leaves them as they are on the server.
	if len(s.Flow.Owners) > 0 {
		if owners, differ := ownersPatch(s.Flow.Owners, cur.Owners, self); differ {
			c.Fields = append(c.Fields, "owners")
			raw, err := json.Marshal(owners)
			if err != nil {
				return c, err
			}
			patch["owners"] = raw
		}
	}
	if len(c.Fields) == 0 {
		return c, nil
	}
	c.Fields = inSchemaOrder(c.Fields)
	c.Op = Update
	raw, err := marshal(patch)
	if err != nil {
		return c, err
	}
	c.Patch = raw
	return c, nil
}

// ownersPatch compares the owners a file states with the server's, the caller's own entries
// aside, and returns what to set: the file's owners and the caller's own entries the server
// has.
func ownersPatch(want, have, self []flowdoc.Owner) ([]flowdoc.Owner, bool) {
	others := func(os []flowdoc.Owner) []flowdoc.Owner {
		out := slices.DeleteFunc(slices.Clone(os), func(o flowdoc.Owner) bool { return slices.Contains(self, o) })
		slices.SortFunc(out, func(a, b flowdoc.Owner) int {
			if c := strings.Compare(a.Type, b.Type); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		return slices.Compact(out)
	}
	if slices.Equal(others(want), others(have)) {
		return nil, false
	}
	out := slices.Clone(want)
	for _, o := range have {
		if slices.Contains(self, o) && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out, true
}

func inSchemaOrder(fields []string) []string {
	slices.SortFunc(fields, func(a, b string) int { return slices.Index(Fields, a) - slices.Index(Fields, b) })
	return fields
}

// writable is f without the fields the server manages.
func writable(f *flowdoc.Flow) flowdoc.Flow {
	c := *f
	c.ID, c.Type, c.Status, c.StatusReason, c.Revision, c.CreatedAt, c.UpdatedAt = "", "", "", nil, 0, nil, nil
	return c
}

// content is each writable field of f as canonical JSON (sorted keys, empty node and edge
// lists as []), absent when empty: equal bytes mean equal values.
func content(f *flowdoc.Flow) (map[string]json.RawMessage, error) {
	w := writable(f)
	raw, err := flowdoc.Canonical(&w)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// Document is the flow as apply sends it to be created: its writable fields only.
func Document(f *flowdoc.Flow) ([]byte, error) {
	w := writable(f)
	return flowdoc.Canonical(&w)
}

// marshal encodes without HTML escaping, as flowdoc.Canonical does: `<` in an expression
// stays readable and the bytes match the stored form.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
