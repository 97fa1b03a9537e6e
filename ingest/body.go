package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

// emptyObject is the input of a request without a body: no fields, rather than null, so an
// input contract reports the missing fields one by one.
var emptyObject = []byte("{}")

// hookInput turns a /hooks request into the flow's input, as JSON:
//   - GET: the query string, as an object of strings (string arrays for repeated names);
//   - JSON bodies (application/json, */*+json, or no Content-Type): as sent;
//   - application/x-www-form-urlencoded: like the query string;
//   - text/*: one JSON string.
//
// Anything else is 415. The result may alias fiber's request buffer; it is only used while
// the handler runs and is copied when the record is encoded.
func hookInput(c *fiber.Ctx) ([]byte, *httpproblem.Error) {
	if c.Method() == fiber.MethodGet {
		return argsObject(c.Request().URI().QueryArgs()), nil
	}
	body, mt, herr := rawBody(c)
	if herr != nil {
		return nil, herr
	}
	switch {
	case isJSON(mt):
		if len(bytes.TrimSpace(body)) == 0 {
			return emptyObject, nil
		}
		if herr := checkJSON(body); herr != nil {
			return nil, herr
		}
		return body, nil
	case mt == fiber.MIMEApplicationForm:
		return argsObject(c.Request().PostArgs()), nil
	case strings.HasPrefix(mt, "text/"):
		out, err := json.Marshal(string(body)) // invalid UTF-8 becomes U+FFFD
		if err != nil {
			return nil, fail(fiber.StatusBadRequest, problem.New(codeMalformed, "", "the text body cannot be read: %s", err))
		}
		return out, nil
	}
	return nil, unsupported(mt)
}

// flowMateInput reads POST /webhooks/{flowId}: a JSON object whose "data" is the input.
func flowMateInput(c *fiber.Ctx) ([]byte, *httpproblem.Error) {
	body, mt, herr := rawBody(c)
	if herr != nil {
		return nil, herr
	}
	if !isJSON(mt) {
		return nil, unsupported(mt)
	}
	if herr := checkJSON(body); herr != nil {
		return nil, herr
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fail(fiber.StatusBadRequest, problem.New(codeMalformed, "", `the body must be a JSON object {"data": {...}}`))
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil, fail(fiber.StatusBadRequest, problem.New(codeRequired, "/data", `the body must be {"data": {...}} with the flow's input in "data"`))
	}
	return env.Data, nil
}

// rawBody returns the body exactly as sent and its media type. Compressed bodies are refused:
// inflating them would escape the body limit, and signatures cover the bytes as sent.
func rawBody(c *fiber.Ctx) ([]byte, string, *httpproblem.Error) {
	if enc := strings.TrimSpace(c.Get(fiber.HeaderContentEncoding)); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, "", fail(fiber.StatusUnsupportedMediaType, problem.New(codeUnsupported, "", "Content-Encoding %q is not accepted; send the body uncompressed", enc))
	}
	ct := c.Get(fiber.HeaderContentType)
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, "", fail(fiber.StatusUnsupportedMediaType, problem.New(codeUnsupported, "", "Content-Type %q cannot be parsed", ct))
		}
	}
	return c.Request().Body(), mt, nil
}

func isJSON(mt string) bool {
	return mt == "" || mt == fiber.MIMEApplicationJSON || strings.HasSuffix(mt, "+json")
}

func unsupported(mt string) *httpproblem.Error {
	return fail(fiber.StatusUnsupportedMediaType, problem.New(codeUnsupported, "",
		"Content-Type %q is not accepted; send application/json, application/x-www-form-urlencoded or text/*", mt))
}

// checkJSON reports a syntax error with its line and column.
func checkJSON(body []byte) *httpproblem.Error {
	// json.Valid is one scan without allocating; decoding (which scans twice and copies) is
	// only needed to say where a bad body goes wrong.
	if json.Valid(body) {
		return nil
	}
	var raw json.RawMessage
	err := json.Unmarshal(body, &raw)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(body, se.Offset)
		return fail(fiber.StatusBadRequest, problem.New(codeMalformed, "", "invalid JSON at line %d, column %d: %s", line, col, se.Error()))
	}
	return fail(fiber.StatusBadRequest, problem.New(codeMalformed, "", "invalid JSON: %s", err.Error()))
}

// position converts encoding/json's offset (bytes read, so the culprit is the byte before it)
// into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	at := min(max(int(offset)-1, 0), len(data))
	before := data[:at]
	return bytes.Count(before, []byte("\n")) + 1, at - bytes.LastIndexByte(before, '\n')
}

// visitor is what fasthttp's query and form arguments offer (named here so this package does
// not import fasthttp itself).
type visitor interface {
	Len() int
	VisitAll(func(k, v []byte))
}

// argsObject encodes query or form arguments as a JSON object: one value as a string, a
// repeated name as an array of strings.
func argsObject(args visitor) []byte {
	if args.Len() == 0 {
		return emptyObject
	}
	obj := make(map[string]any, args.Len())
	args.VisitAll(func(k, v []byte) {
		name := string(k)
		switch cur := obj[name].(type) {
		case nil:
			obj[name] = string(v)
		case string:
			obj[name] = []string{cur, string(v)}
		case []string:
			obj[name] = append(cur, string(v))
		}
	})
	out, _ := json.Marshal(obj) // strings only: cannot fail
	return out
}

// queryMap copies the query string for the record.
func queryMap(args visitor) map[string][]string {
	if args.Len() == 0 {
		return nil
	}
	out := make(map[string][]string, args.Len())
	args.VisitAll(func(k, v []byte) {
		out[string(k)] = append(out[string(k)], string(v))
	})
	return out
}

// droppedHeaders never reach the flow: credentials (the flow has no business with the
// caller's, and records and execution snapshots are not secret stores) and hop-by-hop
// headers that describe this connection only.
var droppedHeaders = map[string]bool{
	"Authorization":       true,
	"Proxy-Authorization": true,
	"Cookie":              true,
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Content-Length":      true,
}

// headerMap copies the request headers passed to the flow: every header except
// droppedHeaders, repeated ones joined with ", ". fasthttp's read buffer bounds their size.
func headerMap(h interface{ VisitAll(func(k, v []byte)) }) map[string]string {
	out := map[string]string{}
	h.VisitAll(func(k, v []byte) {
		name := string(k) // fasthttp canonicalises names (content-type -> Content-Type)
		if droppedHeaders[name] {
			return
		}
		if prev, ok := out[name]; ok {
			out[name] = prev + ", " + string(v)
		} else {
			out[name] = string(v)
		}
	})
	return out
}
