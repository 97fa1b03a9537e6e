package topicpolicy

import (
	"context"
	"fmt"
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
)

type directory struct {
	tenants map[string]identity.Tenant
	users   map[string]identity.User
}

func (d directory) Tenant(_ context.Context, id string) (*identity.Tenant, error) {
	t, ok := d.tenants[id]
	if !ok {
		return nil, fmt.Errorf("tenant %s: %w", id, store.ErrNotFound)
	}
	return &t, nil
}

func (d directory) User(_ context.Context, id string) (*identity.User, error) {
	u, ok := d.users[id]
	if !ok {
		return nil, fmt.Errorf("user %s: %w", id, store.ErrNotFound)
	}
	return &u, nil
}

func list(s ...string) *[]string { return &s }

func flow(owner flowdoc.Owner, topics ...string) *flowdoc.Flow {
	f := &flowdoc.Flow{Owners: []flowdoc.Owner{owner}}
	f.Graph.Nodes = append(f.Graph.Nodes, flowdoc.Node{ID: "k", Type: flowdoc.TypeKafka, Config: map[string]any{"topic": topics[0]}})
	for i, t := range topics[1:] {
		f.Graph.Nodes = append(f.Graph.Nodes, flowdoc.Node{ID: fmt.Sprint("p", i), Type: flowdoc.TypeAction,
			Connector: flowdoc.KafkaConnector, Action: "produce", Config: map[string]any{"topic": t}})
	}
	return f
}

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := directory{
		tenants: map[string]identity.Tenant{
			"acme":  {ID: "acme", Name: "acme", PartnerTopics: list("acme.*", "shared-orders")},
			"open":  {ID: "open", Name: "open"},
			"none":  {ID: "none", Name: "none", PartnerTopics: list()},
			"other": {ID: "other", Name: "other", PartnerTopics: list("other.*")},
		},
		users: map[string]identity.User{
			"ada":   {ID: "ada", Tenant: "acme"},
			"admin": {ID: "admin"},
		},
	}
	tenant := func(id string) flowdoc.Owner { return flowdoc.Owner{ID: id, Type: flowdoc.OwnerTenant} }
	user := func(id string) flowdoc.Owner { return flowdoc.Owner{ID: id, Type: flowdoc.OwnerUser} }
	for _, tc := range []struct {
		name       string
		f          *flowdoc.Flow
		restricted bool
		want       []string // paths refused
	}{
		{"listed prefix", flow(tenant("acme"), "acme.orders"), false, nil},
		{"listed name", flow(tenant("acme"), "shared-orders"), false, nil},
		{"not listed", flow(tenant("acme"), "other.orders"), false, []string{"/graph/nodes/0/config/topic"}},
		{"prefix is not a name", flow(tenant("acme"), "acme"), false, []string{"/graph/nodes/0/config/topic"}},
		{"through the user's tenant", flow(user("ada"), "acme.in", "other.out"), false, []string{"/graph/nodes/1/config/topic"}},
		{"templated topic of a listed tenant", flow(tenant("acme"), "acme.in", "{{ input.t }}"), false, []string{"/graph/nodes/1/config/topic"}},
		{"unlisted tenant, open deployment", flow(tenant("open"), "anything", "{{ input.t }}"), false, nil},
		{"unlisted tenant, restricted deployment", flow(tenant("open"), "anything"), true, []string{"/graph/nodes/0/config/topic"}},
		{"empty list allows none", flow(tenant("none"), "x"), false, []string{"/graph/nodes/0/config/topic"}},
		{"administrator without tenant", flow(user("admin"), "anything"), true, nil},
		{"deleted tenant, restricted deployment", flow(tenant("gone"), "x"), true, []string{"/graph/nodes/0/config/topic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := Policy{Directory: dir, Restricted: tc.restricted}.Check(context.Background(), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range ps {
				if p.Code != flowdoc.CodeTopicNotAllowed {
					t.Fatalf("code %q", p.Code)
				}
				got = append(got, p.Path)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("refused %v, want %v (%v)", got, tc.want, ps)
			}
		})
	}
}
