package ingest

import (
	"errors"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
)

// Error codes of ingest's own answers (input problems use flowdoc's schema codes).
const (
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeUnauthorized     = "unauthorized"
	codeMalformed        = "malformed"
	codeRequired         = "required"
	codeTooLarge         = "too_large"
	codeUnsupported      = "unsupported_media_type"
	codeUnavailable      = "unavailable"
	codeTimeout          = "timeout"
	codeInProgress       = "idempotency_in_progress"
	codeInvalidKey       = "invalid_idempotency_key"
	codeMisconfigured    = "flow_misconfigured"
	codeInternal         = "internal"
	codeMethodNotAllow   = "method_not_allowed"
	codeGenericHTTPFail  = "http_error"
)

// httpError is an answer other than success: a status, the problems to report and extra
// headers (Retry-After, WWW-Authenticate).
type httpError struct {
	status   int
	problems problem.List
	headers  map[string]string
}

func (e *httpError) Error() string { return e.problems.Error() }

func fail(status int, ps ...problem.Problem) *httpError {
	return &httpError{status: status, problems: ps}
}

func (e *httpError) with(header, value string) *httpError {
	if e.headers == nil {
		e.headers = map[string]string{}
	}
	e.headers[header] = value
	return e
}

// notFound is the one answer for unknown, deleted, inactive and foreign flows: which of them
// it is must not be revealed.
func notFound() *httpError {
	return fail(fiber.StatusNotFound, problem.New(codeNotFound, "", "no active webhook at this address"))
}

// unavailable is a 503 the caller should retry after a while.
func unavailable(retryAfter time.Duration, format string, args ...any) *httpError {
	secs := max(1, int((retryAfter+time.Second-1)/time.Second))
	return fail(fiber.StatusServiceUnavailable, problem.New(codeUnavailable, "", format, args...)).
		with(fiber.HeaderRetryAfter, strconv.Itoa(secs))
}

// handleError renders every error as the flowd error envelope.
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	var he *httpError
	var fe *fiber.Error
	switch {
	case errors.As(err, &he):
	case errors.As(err, &fe):
		code, msg := codeGenericHTTPFail, fe.Message
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			code, msg = codeTooLarge, "request body is larger than the limit of "+humanBytes(s.cfg.BodyLimit)
		case fiber.StatusNotFound:
			code = codeNotFound
		case fiber.StatusMethodNotAllowed:
			code = codeMethodNotAllow
		case fiber.StatusBadRequest:
			code = codeMalformed
		}
		he = fail(fe.Code, problem.Problem{Code: code, Message: msg})
	default:
		s.log.Error("webhook request failed", "method", c.Method(), "path", c.Path(), "err", err)
		he = fail(fiber.StatusInternalServerError, problem.New(codeInternal, "", "internal error; see the server log"))
	}
	for k, v := range he.headers {
		c.Set(k, v)
	}
	if c.Method() == fiber.MethodHead {
		return c.SendStatus(he.status)
	}
	return c.Status(he.status).JSON(fiber.Map{"errors": he.problems})
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	default:
		return strconv.Itoa(n) + " bytes"
	}
}
