package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
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
		var e struct {
			Errors problem.List `json:"errors"`
		}
		if json.Unmarshal(raw, &e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("%s %s: %d: %w", method, path, resp.StatusCode, e.Errors)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
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
