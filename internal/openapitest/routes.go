package openapitest

import (
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Routes lists what app serves as "METHOD /path/{param}", the document's notation: fiber's
// ":param" becomes "{param}" and its "*" the WildcardParam. Middleware (Use) is left out, and
// so are the fallbacks registered with All for every method (the 405 answers of a known path):
// a path with handlers for every method has one handler per method taken off. Handlers, not
// routes, are counted: fiber merges a route into the one registered just before it for the
// same method and path.
func Routes(app *fiber.App) []string {
	count := map[string]map[string]int{} // path -> method -> handlers
	for _, r := range app.GetRoutes(true) {
		p := templatePath(r.Path)
		if count[p] == nil {
			count[p] = map[string]int{}
		}
		count[p][r.Method] += len(r.Handlers)
	}
	var out []string
	for p, methods := range count {
		all := true
		for _, m := range fiber.DefaultMethods {
			all = all && methods[m] > 0
		}
		for m, n := range methods {
			if all {
				n--
			}
			if n > 0 {
				out = append(out, m+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out
}

func templatePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		switch {
		case strings.HasPrefix(s, ":"):
			parts[i] = "{" + strings.TrimPrefix(s, ":") + "}"
		case strings.HasPrefix(s, "*"):
			parts[i] = "{" + WildcardParam + "}"
		}
	}
	return strings.Join(parts, "/")
}

// Operations lists the document's operations as "METHOD /path".
func (s *Spec) Operations() []string {
	var out []string
	for p, item := range s.Model.Paths.PathItems.FromOldest() {
		for m := range item.GetOperations().KeysFromOldest() {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(out)
	return out
}

// Compare returns the served routes the document lacks and the documented operations nothing
// serves. A HEAD route needs no operation of its own where the document has the path's GET
// (fiber serves HEAD with every GET).
func (s *Spec) Compare(served []string) (undocumented, unserved []string) {
	docs := s.Operations()
	for _, r := range served {
		if slices.Contains(docs, r) {
			continue
		}
		if p, ok := strings.CutPrefix(r, fiber.MethodHead+" "); ok && slices.Contains(docs, fiber.MethodGet+" "+p) {
			continue
		}
		undocumented = append(undocumented, r)
	}
	for _, d := range docs {
		if !slices.Contains(served, d) {
			unserved = append(unserved, d)
		}
	}
	return undocumented, unserved
}
