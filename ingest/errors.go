package ingest

import (
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

// Error codes of ingest's own answers (input problems use flowdoc's schema codes; the answers
// fiber gives by itself use httpproblem's).
const (
	codeNotFound         = httpproblem.CodeNotFound
	codeMethodNotAllowed = httpproblem.CodeMethodNotAllowed
	codeUnauthorized     = "unauthorized"
	codeMalformed        = httpproblem.CodeMalformed
	codeRequired         = "required"
	codeTooLarge         = httpproblem.CodeTooLarge
	codeUnsupported      = httpproblem.CodeUnsupportedMedia
	codeUnavailable      = "unavailable"
	codeTimeout          = httpproblem.CodeTimeout
	codeInProgress       = "idempotency_in_progress"
	codeInvalidKey       = "invalid_idempotency_key"
	codeMisconfigured    = "flow_misconfigured"
	codeInternal         = httpproblem.CodeInternal
)

func fail(status int, ps ...problem.Problem) *httpproblem.Error {
	return httpproblem.New(status, ps...)
}

// notFound is the one answer for unknown, deleted, inactive and foreign flows: which of them
// it is must not be revealed.
func notFound() *httpproblem.Error {
	return fail(fiber.StatusNotFound, problem.New(codeNotFound, "", "no active webhook at this address"))
}

// unavailable is a 503 the caller should retry after Config.RetryAfter (the error handler
// adds the Retry-After header).
func unavailable(format string, args ...any) *httpproblem.Error {
	return fail(fiber.StatusServiceUnavailable, problem.New(codeUnavailable, "", format, args...))
}
