// Package topicpolicy decides which Kafka topics a flow may read and write: never flowd's own
// or Kafka's internal ones (flowdoc's validation refuses those for everyone), and, where an
// administrator restricted a tenant, only the partner topics on that tenant's list. The API
// checks it when a flow is saved and started; the router again when it subscribes, so a list
// narrowed after a flow was saved takes effect at its next start.
package topicpolicy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

// Directory looks up the tenants and users that own flows (the store is one); an unknown one
// is an error wrapping store.ErrNotFound.
type Directory interface {
	Tenant(ctx context.Context, id string) (*identity.Tenant, error)
	User(ctx context.Context, id string) (*identity.User, error)
}

// Policy checks flows' topics against their tenants' partner-topic lists.
type Policy struct {
	Directory Directory
	// Restricted makes a tenant without a list of its own use no partner topic at all.
	Restricted bool
}

// Check returns a topic_not_allowed problem for each topic of f that one of its owning
// tenants may not use. A templated topic of a restricted tenant is refused too: it cannot be
// checked before it runs. The error is for a directory that could not be read.
func (p Policy) Check(ctx context.Context, f *flowdoc.Flow) (problem.List, error) {
	uses := flowdoc.Topics(f)
	if len(uses) == 0 {
		return nil, nil
	}
	tenants, err := p.tenants(ctx, f.Owners)
	if err != nil {
		return nil, err
	}
	var out problem.List
	for _, u := range uses {
		for _, t := range tenants {
			if pr, bad := check(u, t, p.Restricted); bad {
				out = append(out, pr)
				break // one problem per topic is enough
			}
		}
	}
	return out, nil
}

func check(u flowdoc.TopicUse, t identity.Tenant, restricted bool) (problem.Problem, bool) {
	switch {
	case u.Templated && (t.PartnerTopics != nil || restricted):
		return problem.New(flowdoc.CodeTopicNotAllowed, u.Path,
			"tenant %s may use only the partner topics an administrator allowed: name the topic instead of computing it", t.Name), true
	case !u.Templated && !t.AllowsTopic(u.Topic, restricted):
		return problem.New(flowdoc.CodeTopicNotAllowed, u.Path,
			"tenant %s may not use topic %q (allowed: %s); an administrator sets a tenant's partner topics", t.Name, u.Topic, allowed(t)), true
	}
	return problem.Problem{}, false
}

// tenants resolves the owners to their tenants: tenant owners directly, user owners through
// their user record. Users without a tenant (administrators) restrict nothing.
func (p Policy) tenants(ctx context.Context, owners []flowdoc.Owner) ([]identity.Tenant, error) {
	seen := map[string]bool{}
	var out []identity.Tenant
	add := func(id string) error {
		if id == "" || seen[id] {
			return nil
		}
		seen[id] = true
		t, err := p.Directory.Tenant(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				// An owner naming a deleted tenant: hold it to the deployment's default.
				out = append(out, identity.Tenant{ID: id, Name: id})
				return nil
			}
			return fmt.Errorf("tenant %s: %w", id, err)
		}
		out = append(out, *t)
		return nil
	}
	for _, o := range owners {
		switch o.Type {
		case flowdoc.OwnerTenant:
			if err := add(o.ID); err != nil {
				return nil, err
			}
		case flowdoc.OwnerUser:
			u, err := p.Directory.User(ctx, o.ID)
			if err != nil {
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				return nil, fmt.Errorf("user %s: %w", o.ID, err)
			}
			if err := add(u.Tenant); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func allowed(t identity.Tenant) string {
	if t.PartnerTopics == nil || len(*t.PartnerTopics) == 0 {
		return "none"
	}
	return strings.Join(*t.PartnerTopics, ", ")
}
