package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// apiClient is the small HTTP client the CLI uses against a flowd API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newClient(base, token string) *apiClient {
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request and decodes `data` into out; API errors become one readable error.
func (c *apiClient) do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	return c.send(ctx, method, path, ctype, nil, body, out)
}

// send is do with extra request headers (name, value pairs), e.g. If-Match.
func (c *apiClient) send(ctx context.Context, method, path, ctype string, headers []string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		ae := &apiError{method: method, path: path, status: resp.StatusCode, statusText: resp.Status}
		var e struct {
			Errors problem.List `json:"errors"`
		}
		if json.Unmarshal(raw, &e) == nil {
			ae.problems = e.Errors
		}
		return ae
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil // a 204 (a deletion) has no body to decode
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return json.Unmarshal(env.Data, out)
}

// apiError is an answer with an error status, so callers can tell a 412 from a 409.
type apiError struct {
	method, path, statusText string
	status                   int
	problems                 problem.List
}

func (e *apiError) Error() string {
	if len(e.problems) > 0 {
		return fmt.Sprintf("%s %s: %d: %s", e.method, e.path, e.status, e.problems)
	}
	return fmt.Sprintf("%s %s: %s", e.method, e.path, e.statusText)
}

func (e *apiError) Unwrap() error {
	if len(e.problems) == 0 {
		return nil
	}
	return e.problems
}

// statusOf is the HTTP status of an API error, 0 for any other error.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status
	}
	return 0
}

// exampleBase is the address example flows use for routes of flowd dev itself.
const exampleBase = "http://127.0.0.1:8080"

// loadExample creates the flow in file unless one of the same name exists, starts it, and
// returns its id.
func loadExample(ctx context.Context, base, token, file string) (string, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	doc, ps := flowdoc.ToJSON(body, "")
	if len(ps) > 0 {
		return "", ps
	}
	// The example calls the dev echo route at the default address; follow --addr.
	doc = bytes.ReplaceAll(doc, []byte(exampleBase), []byte(base))
	var named struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(doc, &named)
	c := newClient(base, token)
	var existing []flowdoc.Flow
	if err := c.do(ctx, http.MethodGet, "/api/v1/flows?page[size]=100&search="+url.QueryEscape(named.Name), "", nil, &existing); err != nil {
		return "", err
	}
	var f *flowdoc.Flow
	for i := range existing {
		if existing[i].Name == named.Name {
			f = &existing[i]
			break
		}
	}
	if f == nil {
		f = &flowdoc.Flow{}
		if err := c.do(ctx, http.MethodPost, "/api/v1/flows", "application/json", doc, f); err != nil {
			return "", err
		}
	}
	if f.Status != flowdoc.StatusActive {
		if err := c.do(ctx, http.MethodPost, "/api/v1/flows/"+f.ID+"/start", "", nil, f); err != nil {
			return "", err
		}
		if f.Status != flowdoc.StatusActive {
			if r := f.StatusReason; r != nil {
				return "", fmt.Errorf("flow %s is %s, not active, after start: %s (%s)", f.ID, f.Status, r.Message, r.Code)
			}
			return "", fmt.Errorf("flow %s is %s, not active, after start", f.ID, f.Status)
		}
	}
	return f.ID, nil
}
