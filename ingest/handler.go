package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
)

// HeaderExecutionID names the execution on every accepted request's answer (sync replies and
// 504s included, whose bodies are the flow's or an error).
const HeaderExecutionID = "Flowd-Execution-Id"

// HeaderIdempotencyKey makes a request safe to retry; HeaderReplayed marks the answer to one.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderReplayed       = "Idempotent-Replayed"
	maxIdempotencyKey    = 255
)

// lookup returns the flow's metadata if its hook takes requests.
func (s *Server) lookup(c *fiber.Ctx) (*flowMeta, *httpproblem.Error) {
	// Cloned: the cache keeps the id as a map key, and fiber reuses the buffer behind Params.
	id := strings.Clone(c.Params("flowId"))
	m, err := s.flows.get(c.UserContext(), id, s.cfg.Now())
	if err != nil {
		s.log.Warn("flow lookup failed", "flow", id, "err", err)
		return nil, unavailable("the flow cannot be looked up right now")
	}
	if m == nil || !m.open {
		return nil, notFound()
	}
	return m, nil
}

func (s *Server) head(c *fiber.Ctx) error {
	if _, herr := s.lookup(c); herr != nil {
		return herr
	}
	return c.SendStatus(fiber.StatusOK)
}

// misconfiguredRetryAfter (seconds) paces partners retrying a misconfigured webhook: it waits
// for a person, not for a broker.
const misconfiguredRetryAfter = 60

func (s *Server) hook(c *fiber.Ctx) error {
	defer metrics.WebhookBegun()()
	span := startSpan(c)
	return counted(c, span, s.accept(c, hookInput, ""))
}

func (s *Server) flowMate(c *fiber.Ctx) error {
	defer metrics.WebhookBegun()()
	span := startSpan(c)
	return counted(c, span, s.accept(c, flowMateInput, "/data"))
}

// counted counts a webhook request by the status it is answered with (err's, once the error
// handler renders it, else the response's) and ends its span, if traced, with that status.
func counted(c *fiber.Ctx, span trace.Span, err error) error {
	status := c.Response().StatusCode()
	var pe *httpproblem.Error
	var fe *fiber.Error
	switch {
	case errors.As(err, &pe):
		status = pe.Status
	case errors.As(err, &fe):
		status = fe.Code
	case err != nil:
		status = fiber.StatusInternalServerError
	}
	metrics.WebhookAnswered(status)
	endSpan(span, status)
	return err
}

// accept runs a webhook request: flow, auth, input, idempotency, produce, answer.
func (s *Server) accept(c *fiber.Ctx, input func(*fiber.Ctx) ([]byte, *httpproblem.Error), inputPath string) error {
	received := s.cfg.Now().UTC()
	m, herr := s.lookup(c)
	if herr != nil {
		return herr
	}
	if m.misconfig != nil {
		if !m.warned.Swap(true) { // once per cache entry, not once per request
			s.log.Warn("webhook refused: flow misconfigured", "flow", m.id, "revision", m.revision, "err", m.misconfig)
		}
		// Not the partner's fault, nor a fault of flowd's: what the flow uses changed since it
		// was checked (its auth connection deleted, the ingest role's secret key missing).
		// A partner retrying later succeeds once the owner fixes it.
		return fail(fiber.StatusServiceUnavailable, problem.New(codeMisconfigured, "", "this webhook cannot take requests until its flow's configuration is fixed")).
			With(fiber.HeaderRetryAfter, strconv.Itoa(misconfiguredRetryAfter))
	}
	if herr := authenticate(c, m); herr != nil {
		return herr
	}
	in, herr := input(c)
	if herr != nil {
		return herr
	}
	if m.input != nil {
		probs, err := validateInput(m.input, in, inputPath)
		if err != nil {
			return fail(fiber.StatusBadRequest, problem.New(codeMalformed, inputPath, "the input cannot be read: %s", err))
		}
		if len(probs) > 0 {
			return fail(fiber.StatusUnprocessableEntity, probs...)
		}
	}

	rec := envelope.Ingest{
		ExecutionID: newExecutionID(received),
		FlowID:      m.id,
		Revision:    m.revision,
		Trigger:     envelope.TriggerWebhook,
		ReceivedAt:  received,
		Input:       in,
		Request: &envelope.HTTPRequest{
			Method:  c.Method(),
			Query:   queryMap(c.Request().URI().QueryArgs()),
			Headers: headerMap(&c.Request().Header),
		},
		Sync: m.sync,
	}
	if suffix := c.Params("*"); suffix != "" {
		rec.Request.Path = "/" + suffix
	}
	spanRecord(c, &rec)

	key := c.Get(HeaderIdempotencyKey)
	if key != "" {
		if len(key) > maxIdempotencyKey {
			return fail(fiber.StatusBadRequest, problem.New(codeInvalidKey, "", "%s is limited to %d characters", HeaderIdempotencyKey, maxIdempotencyKey))
		}
		// The lease covers the produce: a process dying meanwhile blocks retries that long.
		lease := s.cfg.ProduceTimeout + 5*time.Second
		id, state, claimed, err := s.cfg.Store.ClaimIdempotency(c.UserContext(), m.id, key, rec.ExecutionID, lease)
		switch {
		case err != nil:
			s.log.Warn("idempotency key unavailable", "flow", m.id, "err", err)
			return unavailable("the idempotency key cannot be checked right now")
		case !claimed && state == store.IdemDone:
			c.Set(HeaderReplayed, "true")
			c.Set(HeaderExecutionID, id)
			return c.Status(fiber.StatusOK).JSON(fiber.Map{"data": fiber.Map{"executionId": id}})
		case !claimed:
			return fail(fiber.StatusConflict, problem.New(codeInProgress, "", "a request with this %s is still being accepted; retry shortly", HeaderIdempotencyKey)).
				With(fiber.HeaderRetryAfter, "1")
		}
		// A retry after a failed attempt reuses that attempt's id, which may still land.
		rec.ExecutionID = id
	}

	if herr := s.produce(c.UserContext(), &rec); herr != nil {
		if key != "" {
			s.finishKey(m.id, key, rec.ExecutionID, store.IdemFailed)
		}
		return herr
	}
	if key != "" {
		s.finishKey(m.id, key, rec.ExecutionID, store.IdemDone)
	}
	c.Set(HeaderExecutionID, rec.ExecutionID)
	if m.sync {
		return s.awaitReply(c, m, rec.ExecutionID)
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"data": fiber.Map{"executionId": rec.ExecutionID}})
}

// finishKey records the outcome of a claimed idempotency key; the request's answer does not
// depend on it, so it runs on its own bounded context.
func (s *Server) finishKey(flowID, key, executionID, state string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Store.FinishIdempotency(ctx, flowID, key, executionID, state, s.cfg.IdempotencyTTL); err != nil {
		// The claim's lease runs out by itself; until then a retry gets 409.
		s.log.Warn("idempotency key not updated", "flow", flowID, "execution", executionID, "state", state, "err", err)
	}
}

// produce writes the record and returns once the broker acknowledged it (acks=all), or the
// answer to give instead.
func (s *Server) produce(ctx context.Context, rec *envelope.Ingest) *httpproblem.Error {
	// Encoding copies the input out of fiber's request buffer: the writer may hold the
	// value after this handler returned (a timed-out batch is still retried).
	val, err := encodeRecord(rec)
	if err != nil {
		return fail(fiber.StatusBadRequest, problem.New(codeMalformed, "", "the input cannot be encoded: %s", err))
	}
	// Keyed by execution: the router needs order only within an execution, so one busy flow
	// spreads over every partition and every router instance.
	msg := kafka.Message{Topic: s.topic, Key: []byte(rec.ExecutionID), Value: val, Time: rec.ReceivedAt}
	if len(val)+len(msg.Key)+64 > s.maxRecord {
		return fail(fiber.StatusRequestEntityTooLarge, problem.New(codeTooLarge, "", "the request is too large to be recorded (limit about %s)", httpproblem.Bytes(s.maxRecord)))
	}
	// The webhook's span goes with the record, signed with it, so the router continues it.
	msg.Headers = tracing.Inject(ctx, msg.Headers)
	s.cfg.Kafka.RecordKeys.Sign(&msg)
	if !s.brk.allow(s.cfg.Now()) {
		return unavailable("the event log is unavailable; retry later")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProduceTimeout)
	defer cancel()
	if err := s.w.WriteMessages(ctx, msg); err != nil {
		s.brk.failure(s.cfg.Now())
		s.log.Warn("record not acknowledged", "flow", rec.FlowID, "execution", rec.ExecutionID, "err", err)
		return unavailable("the event log did not acknowledge the request; retry later")
	}
	s.brk.success()
	return nil
}

// awaitReply holds a synchronous request until the flow answers or its timeout passes. The
// execution carries on either way: the 504 names it so the caller can look it up.
func (s *Server) awaitReply(c *fiber.Ctx, m *flowMeta, executionID string) error {
	// The margin lets WaitReply report its own timeout; the server's shutdown ends it early.
	ctx, cancel := context.WithTimeout(s.stopping, m.timeout+5*time.Second)
	defer cancel()
	r, err := s.replies.WaitReply(ctx, executionID, m.timeout)
	switch {
	case r != nil && err == nil:
	case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, store.ErrNoReply):
		return fail(fiber.StatusGatewayTimeout, problem.New(codeTimeout, "",
			"the flow did not answer within %s; execution %s carries on", m.timeout, executionID))
	default:
		s.log.Error("waiting for a sync reply failed", "flow", m.id, "execution", executionID, "err", err)
		return fail(fiber.StatusInternalServerError, problem.New(codeInternal, "",
			"the flow's answer cannot be read; execution %s carries on", executionID))
	}
	return s.sendReply(c, m, r)
}

// replyHeadersDropped are set by the server for the body it actually sends.
var replyHeadersDropped = map[string]bool{
	"content-length": true, "transfer-encoding": true, "connection": true, "keep-alive": true, "upgrade": true,
}

// sendReply answers with the flow's reply: its status (200 if unset), its headers and its body,
// which payload.outputParameters reduce to the declared fields when the body is JSON and the
// status is 2xx.
func (s *Server) sendReply(c *fiber.Ctx, m *flowMeta, r *envelope.Reply) error {
	status := r.Status
	if status < 100 || status > 599 {
		status = fiber.StatusOK
	}
	ctype := fiber.MIMEApplicationJSON
	for k, v := range r.Headers {
		switch lk := strings.ToLower(k); {
		case replyHeadersDropped[lk]:
		case lk == "content-type":
			ctype = v
		default:
			c.Set(k, v)
		}
	}
	c.Set(fiber.HeaderContentType, ctype)
	c.Status(status)
	if len(r.Body) == 0 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(ctype)
	if !isJSON(mt) {
		// A text answer travels as a JSON string in the reply; send its content.
		var text string
		if err := json.Unmarshal(r.Body, &text); err == nil {
			return c.SendString(text)
		}
		return c.Send(r.Body)
	}
	if status < 200 || status > 299 {
		// outputParameters describe the flow's answer, not its refusals: error bodies pass as they are.
		return c.Send(r.Body)
	}
	return c.Send(shapeBody(m.output, r.Body))
}

// encodeRecord is json.Marshal of rec without re-checking its input: encoding/json validates
// and compacts a json.RawMessage again, which cost a tenth of ingest's CPU, and ingest checked
// the input already (hookInput). The input is spliced in where Marshal writes it as null, as
// the client sent it (not compacted).
func encodeRecord(rec *envelope.Ingest) ([]byte, error) {
	if len(rec.Input) == 0 {
		return json.Marshal(rec)
	}
	bare := *rec
	bare.Input = nil
	head, err := json.Marshal(&bare)
	if err != nil {
		return nil, err
	}
	// Every string before the input is escaped, so this is the input field itself.
	const null = `"input":null`
	i := bytes.Index(head, []byte(null))
	if i < 0 {
		return json.Marshal(rec)
	}
	i += len(null) - len("null")
	out := make([]byte, 0, len(head)+len(rec.Input))
	out = append(out, head[:i]...)
	out = append(out, rec.Input...)
	return append(out, head[i+len("null"):]...), nil
}
