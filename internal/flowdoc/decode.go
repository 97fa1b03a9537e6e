package flowdoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/schemas"
)

// MaxDepth bounds object/array nesting; deeper documents are refused before they are decoded.
const MaxDepth = 64

// SchemaFile is the embedded schema every flow document is validated against.
const SchemaFile = "flow.schema.json"

// Problem codes of flow documents besides the schema's own (internal/problem/schemaproblem).
const (
	CodeMalformed = "malformed"
	CodeTooDeep   = "too_deep"
	CodeInternal  = "internal"

	CodeDuplicateNodeID   = "duplicate_node_id"
	CodeUnknownNode       = "unknown_node"
	CodeInvalidPort       = "invalid_port"
	CodeRespondOutbound   = "respond_outbound"
	CodeNoTrigger         = "no_trigger"
	CodeMultipleTriggers  = "multiple_triggers"
	CodeTriggerInbound    = "trigger_inbound"
	CodeCycle             = "cycle"
	CodeUnreachable       = "unreachable"
	CodeInvalidExpression = "invalid_expression"
	CodeMergeInbound      = "merge_inbound"
	CodeInvalidOnError    = "invalid_on_error"
	CodeInvalidSchedule   = "invalid_schedule"
	CodeInvalidConfig     = "invalid_config"
	CodeUnknownConnector  = "unknown_connector"
	CodeUnknownAction     = "unknown_action"
	CodeTopicReserved     = "topic_reserved"
	CodeTopicNotAllowed   = "topic_not_allowed"
)

// ToJSON turns a request body into JSON. YAML is accepted when the content type says so, or
// when there is no usable content type and the body does not look like JSON. A JSON body is
// returned unchanged (minus surrounding whitespace and a byte-order mark).
func ToJSON(body []byte, contentType string) ([]byte, problem.List) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, problem.List{problem.New(CodeMalformed, "", "the document is empty")}
	}
	if isYAML(contentType, trimmed) {
		// The YAML parser's cost grows with the square of the nesting: refuse a document that
		// is far too deep before parsing it (the exact limit is checked on the result).
		if n := yamlNesting(trimmed); n > maxYAMLNesting {
			return nil, problem.List{problem.New(CodeTooDeep, "", "the YAML document nests about %d levels deep; at most %d are accepted", n, MaxDepth)}
		}
		out, err := yamlToJSON(trimmed)
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			msg = strings.Join(strings.Fields(msg), " ")
			return nil, problem.List{problem.New(CodeMalformed, "", "invalid YAML: %s", msg)}
		}
		if string(out) == "null" {
			return nil, problem.List{problem.New(CodeMalformed, "", "the document is empty")}
		}
		if p := checkDepth(out); p != nil {
			return nil, p
		}
		return out, nil
	}
	if p := checkJSON(trimmed); p != nil {
		return nil, p
	}
	// A copy: the HTTP layer may reuse the request buffer once the handler returns.
	return bytes.Clone(trimmed), nil
}

func isYAML(contentType string, body []byte) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(contentType)
	}
	switch {
	case strings.Contains(mt, "yaml"):
		return true
	case strings.Contains(mt, "json"):
		return false
	}
	return body[0] != '{' && body[0] != '['
}

// checkJSON reports syntax errors with a line and column, then excessive nesting.
func checkJSON(data []byte) problem.List {
	var raw json.RawMessage // validates without building a tree
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return problem.List{problem.New(CodeMalformed, "", "invalid JSON at line %d, column %d: %s", line, col, se.Error())}
		}
		return problem.List{problem.New(CodeMalformed, "", "invalid JSON: %s", err.Error())}
	}
	return checkDepth(data)
}

// position converts the offset encoding/json reports (bytes read, so the culprit is the byte
// before it) into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	at := int(offset) - 1
	if at < 0 {
		at = 0
	}
	if at > len(data) {
		at = len(data)
	}
	before := data[:at]
	line = bytes.Count(before, []byte("\n")) + 1
	col = at - bytes.LastIndexByte(before, '\n')
	return line, col
}

// checkDepth scans syntactically valid JSON for nesting deeper than MaxDepth.
func checkDepth(data []byte) problem.List {
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > MaxDepth {
				return problem.List{problem.New(CodeTooDeep, "", "the document nests objects and arrays deeper than %d levels", MaxDepth)}
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

// Decode validates a JSON flow document against flow.schema.json, decodes it and runs the
// semantic checks, returning every problem found. The flow is returned whenever the document
// could be decoded at all, even with problems; callers must check the list.
func Decode(jsonDoc []byte, opts Options) (*Flow, problem.List) {
	if p := checkJSON(bytes.TrimSpace(jsonDoc)); p != nil {
		return nil, p
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(jsonDoc))
	if err != nil {
		return nil, problem.List{problem.New(CodeMalformed, "", "invalid JSON: %s", err.Error())}
	}
	coercePorts(inst)
	sch, err := schemas.Compiled(SchemaFile)
	if err != nil {
		return nil, problem.List{problem.New(CodeInternal, "", "flow schema unavailable: %s", err.Error())}
	}
	var probs problem.List
	v := validator{opts: opts, dropped: map[string]bool{}}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return nil, problem.List{problem.New(CodeInternal, "", "flow schema validation failed: %s", err.Error())}
		}
		leaves := schemaproblem.Leaves(ve, "")
		for _, l := range leaves {
			probs = append(probs, l.Problem)
			switch l.Path {
			case "", "/graph", "/graph/nodes":
				// Without a usable node list "no trigger" would only repeat the schema error.
				v.graphBroken = true
			}
		}
		// Values of the wrong type (or a bad date-time) would make encoding/json give up;
		// drop them so the rest of the document still gets its semantic checks.
		for _, l := range leaves {
			if l.Code == schemaproblem.CodeType || l.Code == schemaproblem.CodeFormat {
				inst = dropAt(inst, l.Location)
				v.dropped[l.Path] = true
			}
		}
	}
	if _, ok := inst.(map[string]any); !ok {
		return nil, finish(probs)
	}
	clean, err := json.Marshal(inst)
	if err != nil {
		return nil, finish(append(probs, problem.New(CodeInternal, "", "re-encoding the document: %s", err.Error())))
	}
	var f Flow
	if err := json.Unmarshal(clean, &f); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return nil, finish(append(probs, problem.New(CodeMalformed, "", "cannot decode the flow: %s", err.Error())))
		}
		// The schema should have caught this; report it rather than lose it.
		path := "/" + strings.ReplaceAll(te.Field, ".", "/")
		probs = append(probs, problem.New(schemaproblem.CodeType, path, "got %s, want %s", te.Value, te.Type))
	}
	v.f = &f
	v.run()
	return &f, finish(append(probs, v.probs...))
}

// coercePorts turns boolean edge ports into "true"/"false": in YAML `port: true` (the natural
// way to write an if branch) is a boolean, and rejecting it would only teach people to quote.
func coercePorts(inst any) {
	doc, _ := inst.(map[string]any)
	graph, _ := doc["graph"].(map[string]any)
	edges, _ := graph["edges"].([]any)
	for _, e := range edges {
		if edge, ok := e.(map[string]any); ok {
			if b, ok := edge["port"].(bool); ok {
				edge["port"] = strconv.FormatBool(b)
			}
		}
	}
}
