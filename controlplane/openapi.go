package controlplane

import (
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/schemas"
)

// PathOpenAPI serves the OpenAPI document of flowd's HTTP surface (schemas/openapi.json).
const PathOpenAPI = "/api/v1/openapi.json"

// serveOpenAPI answers without authentication: the document is public, like the schemas it
// references, and a client needs it before it has a token.
func serveOpenAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(schemas.OpenAPI())
}
