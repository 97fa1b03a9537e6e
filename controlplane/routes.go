package controlplane

import (
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

// routeTable answers, before a request is authenticated, whether its path is served at all
// and by which methods: an unknown path is a 404 and a known path with another method a 405
// with Allow, with or without a token (a 401 would tell a client to fix its token, not its URL).
type routeTable struct {
	routes []servedRoute
}

type servedRoute struct {
	method string
	parts  []string // path segments; ":name" matches one segment, "*" the rest
}

// newRouteTable reads the routes app serves (its middleware excluded).
func newRouteTable(app *fiber.App) *routeTable {
	t := &routeTable{}
	for _, r := range app.GetRoutes(true) {
		t.routes = append(t.routes, servedRoute{method: r.Method, parts: segments(r.Path)})
	}
	return t
}

func segments(path string) []string {
	return strings.Split(strings.Trim(path, "/"), "/")
}

func (r servedRoute) matches(parts []string) bool {
	for i, p := range r.parts {
		if p == "*" || strings.HasPrefix(p, "*") {
			return true
		}
		if i >= len(parts) {
			return strings.HasSuffix(p, "?") // optional parameter
		}
		if strings.HasPrefix(p, ":") {
			if parts[i] == "" {
				return false
			}
			continue
		}
		if !strings.EqualFold(p, parts[i]) { // fiber routes ignore case by default

			return false
		}
	}
	return len(parts) == len(r.parts)
}

// allowed lists the methods that serve path; nil when none does.
func (t *routeTable) allowed(path string) []string {
	parts := segments(path)
	var out []string
	for _, r := range t.routes {
		if r.matches(parts) && !slices.Contains(out, r.method) {
			out = append(out, r.method)
		}
	}
	slices.Sort(out)
	return out
}

// check is the middleware that runs before authentication.
func (t *routeTable) check(c *fiber.Ctx) error {
	allow := t.allowed(c.Path())
	if len(allow) == 0 {
		return notFoundRoute(c)
	}
	m := c.Method()
	if m == fiber.MethodHead {
		m = fiber.MethodGet
	}
	if !slices.Contains(allow, m) {
		return httpproblem.New(fiber.StatusMethodNotAllowed, problem.New(httpproblem.CodeMethodNotAllowed, "", "%s takes %s, not %s",
			c.Path(), strings.Join(allow, ", "), c.Method())).With(fiber.HeaderAllow, strings.Join(allow, ", "))
	}
	return c.Next()
}

func notFoundRoute(c *fiber.Ctx) error {
	return fail(fiber.StatusNotFound, problem.New("not_found", "", "no route %s %s", c.Method(), c.Path()))
}
