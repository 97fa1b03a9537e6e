// Package openapitest checks HTTP exchanges against flowd's OpenAPI document
// (schemas/openapi.json), for the API tests of every role: a request the document rejects
// must not succeed, and every answer must have a documented status and a body that matches.
package openapitest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi/datamodel"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/flowd/flowd/schemas"
)

// WildcardParam is the path parameter that stands for fiber's "*": the rest of the URL, slashes
// included. OpenAPI path templates match one segment, so a request's tail is folded into one.
const WildcardParam = "path"

// Spec is the parsed document with its validator. Safe for concurrent use.
type Spec struct {
	Model *v3.Document
	mu    sync.Mutex // the validator is not documented as safe for concurrent use
	v     validator.Validator
}

var (
	once    sync.Once
	loaded  *Spec
	loadErr error
)

// Load parses the embedded document once.
func Load() (*Spec, error) {
	once.Do(func() { loaded, loadErr = Parse(schemas.OpenAPI()) })
	return loaded, loadErr
}

// metaschemaRef is a JSON Schema's reference to the 2020-12 metaschema (a connector's config
// schema, a flow's parameters are schemas themselves). libopenapi cannot resolve the
// metaschema, so those places are checked as "an object or a boolean" here; the server checks
// them fully with its own compiler.
var metaschemaRef = regexp.MustCompile(`"\$ref":\s*"https://json-schema\.org/draft/2020-12/schema"`)

// Parse builds a document and its validator; the $refs to flowd's JSON Schemas resolve to
// the embedded files, never the network.
func Parse(doc []byte) (*Spec, error) {
	cfg := &datamodel.DocumentConfiguration{AllowRemoteReferences: true, RemoteURLHandler: embeddedSchema}
	d, err := libopenapi.NewDocumentWithConfiguration(doc, cfg)
	if err != nil {
		return nil, fmt.Errorf("openapi: parse: %w", err)
	}
	m, err := d.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapi: build the model: %w", err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapi: validator: %w", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("openapi: the document is not valid OpenAPI: %s", describe(verrs))
	}
	return &Spec{Model: &m.Model, v: v}, nil
}

func embeddedSchema(url string) (*http.Response, error) {
	name, ok := strings.CutPrefix(url, schemas.BaseURL)
	if !ok {
		return nil, fmt.Errorf("openapi: %s is not one of flowd's schemas", url)
	}
	b, err := schemas.FS.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("openapi: %s: %w", url, err)
	}
	b = metaschemaRef.ReplaceAll(b, []byte(`"type": ["object", "boolean"]`))
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(b))}, nil
}

// Exchange is one request and its answer, as a test sent and read them.
type Exchange struct {
	Method         string
	Target         string // path and query
	Header         http.Header
	Body           []byte
	Status         int
	ResponseHeader http.Header
	ResponseBody   []byte
}

// Check returns what in x disagrees with the document, nil when nothing does:
//   - a route the document does not have, unless the answer is 404 or 405;
//   - a request the document rejects that the server accepted (a 2xx or 3xx);
//   - an answer whose status is not documented or whose body does not match.
func (s *Spec) Check(x Exchange) error {
	req := s.request(x)
	s.mu.Lock()
	defer s.mu.Unlock()
	item, _, _ := paths.FindPath(req, s.Model, nil)
	if item == nil && req.URL.Path != strings.ToLower(req.URL.Path) {
		// Like fiber's, flowd's routes ignore case; the document spells them in lower case.
		req.URL.Path = strings.ToLower(req.URL.Path)
		x.Target = strings.ToLower(x.Target)
		item, _, _ = paths.FindPath(req, s.Model, nil)
	}
	if item == nil || item.GetOperations().GetOrZero(strings.ToLower(x.Method)) == nil {
		if x.Status == http.StatusNotFound || x.Status == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("%s %s is not in the OpenAPI document, yet answered %d", x.Method, x.Target, x.Status)
	}
	var problems []string
	if ok, errs := s.v.ValidateHttpRequest(req); !ok && x.Status < 400 {
		problems = append(problems, fmt.Sprintf("the request does not match the document, yet answered %d: %s", x.Status, describe(errs)))
	}
	resReq := s.request(x) // the validator has read req's body
	res := &http.Response{StatusCode: x.Status, Header: x.ResponseHeader, Body: io.NopCloser(bytes.NewReader(x.ResponseBody)), Request: resReq}
	if res.Header == nil {
		res.Header = http.Header{}
	}
	if ok, errs := s.v.ValidateHttpResponse(resReq, res); !ok {
		problems = append(problems, fmt.Sprintf("the %d answer does not match the document: %s", x.Status, describe(errs)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s %s: %s", x.Method, x.Target, strings.Join(problems, "; "))
	}
	return nil
}

// Check is Spec.Check against the embedded document, with the answer's body in the error.
func Check(x Exchange) error {
	s, err := Load()
	if err != nil {
		return err
	}
	if err := s.Check(x); err != nil {
		return fmt.Errorf("OpenAPI: %w\nresponse body: %.2000s", err, x.ResponseBody)
	}
	return nil
}

// Validate fails t when x disagrees with the document (see Spec.Check).
func Validate(t testing.TB, x Exchange) {
	t.Helper()
	if err := Check(x); err != nil {
		t.Error(err)
	}
}

// request rebuilds x's request for the validator (each validation reads the body).
func (s *Spec) request(x Exchange) *http.Request {
	r := httptest.NewRequest(x.Method, s.fold(x.Target), bytes.NewReader(x.Body))
	for k, v := range x.Header {
		r.Header[k] = v
	}
	return r
}

// fold joins the segments a wildcard parameter matches into one, so that the document's
// template (…/{path}) matches the request.
func (s *Spec) fold(target string) string {
	p, query, _ := strings.Cut(target, "?")
	parts := strings.Split(p, "/")
	for tmpl := range s.Model.Paths.PathItems.KeysFromOldest() {
		tp := strings.Split(tmpl, "/")
		if tp[len(tp)-1] != "{"+WildcardParam+"}" || len(parts) <= len(tp) || !prefixMatches(tp[:len(tp)-1], parts) {
			continue
		}
		tail := strings.Join(parts[len(tp)-1:], "_")
		p = strings.Join(append(parts[:len(tp)-1:len(tp)-1], tail), "/")
		break
	}
	if query != "" {
		return p + "?" + query
	}
	return p
}

func prefixMatches(tmpl, parts []string) bool {
	for i, t := range tmpl {
		if !strings.HasPrefix(t, "{") && !strings.EqualFold(t, parts[i]) {
			return false
		}
	}
	return true
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n  - %s", e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			fmt.Fprintf(&b, " (%s)", e.Reason)
		}
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s: %s", f.FieldPath, f.Reason)
		}
	}
	return b.String()
}
