package controlplane

import (
	"encoding/json"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
)

// echo answers with what it received and a fresh id: the stand-in "CRM" the example flow of
// `flowd dev` calls, so the example works on a machine without internet access. Dev only.
func echo(c *fiber.Ctx) error {
	var body any
	if len(c.Body()) > 0 {
		if err := json.Unmarshal(c.Body(), &body); err != nil {
			return fail(fiber.StatusBadRequest, problem.New("malformed", "", "echo takes a JSON body"))
		}
	}
	return c.JSON(fiber.Map{"id": identity.NewID(), "received": body, "idempotencyKey": c.Get("Idempotency-Key")})
}
