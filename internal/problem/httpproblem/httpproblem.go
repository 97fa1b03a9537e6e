// Package httpproblem answers HTTP requests with flowd's error envelope,
// {"errors": [{"code", "message", "path"}]}, for every role that serves HTTP over fiber: the
// errors handlers return, and the ones fiber and fasthttp raise by themselves (no route, a
// method the route does not take, a body over the limit, an unreadable request). Package
// problem is the error shape itself and knows nothing of HTTP.
//
// A role builds its fiber app with Handler.Handle as the ErrorHandler and serves it on
// Listener(ln), so that a client still uploading a body over the limit reads its 413 rather
// than a reset connection (see Listener).
package httpproblem

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
)

// Codes of the answers every role gives alike.
const (
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeTooLarge         = "too_large"
	CodeMalformed        = "malformed"
	CodeTimeout          = "timeout"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeInternal         = "internal"
	// CodeHTTP is a status fiber raised that has no code of its own here.
	CodeHTTP = "http_error"
)

// Error is an answer other than success: a status, the problems to report and extra headers
// (Allow, Retry-After, WWW-Authenticate).
type Error struct {
	Status   int
	Problems problem.List
	Headers  map[string]string
}

// New is the answer status with the problems ps.
func New(status int, ps ...problem.Problem) *Error {
	return &Error{Status: status, Problems: ps}
}

func (e *Error) Error() string { return e.Problems.Error() }

// With sets a header of the answer and returns e.
func (e *Error) With(header, value string) *Error {
	if e.Headers == nil {
		e.Headers = map[string]string{}
	}
	e.Headers[header] = value
	return e
}

// fiberCodes name the statuses fiber and fasthttp answer with by themselves.
var fiberCodes = map[int]string{
	fiber.StatusNotFound:              CodeNotFound,
	fiber.StatusMethodNotAllowed:      CodeMethodNotAllowed,
	fiber.StatusRequestEntityTooLarge: CodeTooLarge,
	fiber.StatusBadRequest:            CodeMalformed,
	fiber.StatusRequestTimeout:        CodeTimeout,
	fiber.StatusUnsupportedMediaType:  CodeUnsupportedMedia,
}

// Handler is one role's fiber ErrorHandler (use its Handle method).
type Handler struct {
	// BodyLimit is the app's fiber.Config.BodyLimit, named in the 413 answer.
	BodyLimit int
	// RetryAfter is sent with 503 answers that carry no Retry-After of their own; 0 sends none.
	RetryAfter time.Duration
	// Log receives the errors answered with 500 (slog.Default() when nil).
	Log *slog.Logger
}

// Handle renders err as the error envelope: an *Error as it is, a *fiber.Error under the code
// of its status, context.DeadlineExceeded as a 503 to retry, anything else as a 500 whose
// cause goes to the log only.
func (h Handler) Handle(c *fiber.Ctx, err error) error {
	var e *Error
	var fe *fiber.Error
	switch {
	case errors.As(err, &e):
	case errors.As(err, &fe):
		e = h.fromFiber(c, fe)
	case errors.Is(err, context.DeadlineExceeded):
		e = New(fiber.StatusServiceUnavailable, problem.New(CodeTimeout, "", "the request took too long; try again"))
	default:
		log := h.Log
		if log == nil {
			log = slog.Default()
		}
		log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
		e = New(fiber.StatusInternalServerError, problem.New(CodeInternal, "", "internal error; see the server log"))
	}
	return h.send(c, e)
}

func (h Handler) fromFiber(c *fiber.Ctx, fe *fiber.Error) *Error {
	code := fiberCodes[fe.Code]
	if code == "" {
		code = CodeHTTP
	}
	msg := fe.Message
	if fe.Code == fiber.StatusRequestEntityTooLarge {
		// fasthttp refused the body before any handler ran; what is left of it is still
		// on its way, so the connection ends after this answer, and lingers to read it.
		msg = "request body is larger than the limit of " + Bytes(h.BodyLimit)
		c.Context().SetConnectionClose()
		lingerOnClose(c.Context().Conn())
	}
	return New(fe.Code, problem.Problem{Code: code, Message: msg})
}

func (h Handler) send(c *fiber.Ctx, e *Error) error {
	for k, v := range e.Headers {
		c.Set(k, v)
	}
	if e.Status == fiber.StatusServiceUnavailable && h.RetryAfter > 0 && c.GetRespHeader(fiber.HeaderRetryAfter) == "" {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, int((h.RetryAfter+time.Second-1)/time.Second))))
	}
	if c.Method() == fiber.MethodHead {
		return c.SendStatus(e.Status)
	}
	return c.Status(e.Status).JSON(fiber.Map{"errors": e.Problems})
}

// Bytes writes a size as people read it: 1 MiB, 64 KiB, 1000 bytes.
func Bytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	default:
		return strconv.Itoa(n) + " bytes"
	}
}
