package controlplane

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/identity"
)

func (s *Server) mountConnectors(r fiber.Router) {
	r.Get("/connectors", s.listConnectors)
	r.Get("/connectors/:name", s.getConnector)
}

func (s *Server) listConnectors(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermComponentsRead); err != nil {
		return err
	}
	lp, err := parseList(c, []string{"name"}, "name")
	if err != nil {
		return err
	}
	all := s.cfg.Catalog.Manifests()
	out := make([]sdk.Manifest, 0, len(all))
	for _, m := range all {
		if lp.search == "" || strings.Contains(strings.ToLower(m.Name+"\n"+m.Description), strings.ToLower(lp.search)) {
			out = append(out, m)
		}
	}
	sortBy(out, lp, func(m sdk.Manifest) string { return m.Name }, nil, nil)
	items, m := page(out, lp)
	return sendList(c, items, m)
}

func (s *Server) getConnector(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermComponentsRead); err != nil {
		return err
	}
	e, ok := s.cfg.Catalog.Get(c.Params("name"))
	if !ok {
		return notFound("connector")
	}
	return sendData(c, fiber.StatusOK, e.Manifest)
}
