package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/flowd/flowd/connectors/sdk"
)

const (
	defaultMaxPages = 10
	maxMaxPages     = 100
	// pollBudget bounds the bytes of all the pages of one poll: their items travel back in one
	// gRPC message (sdk.MaxMessageSize, 32 MiB), as one response of the request action does.
	// A poll stops paging before a page could take it past the budget.
	pollBudget = maxMaxResponseBytes
	// snippetLen is how much of an error response's body a poll error quotes.
	snippetLen = 200
)

// pollConfig is the poll trigger's config.
type pollConfig struct {
	URL              string                `json:"url"`
	Headers          map[string]textValues `json:"headers"`
	Query            map[string]textValues `json:"query"`
	TimeoutMs        *int64                `json:"timeoutMs"`
	MaxResponseBytes *int64                `json:"maxResponseBytes"`
	ItemsPointer     string                `json:"itemsPointer"`
	NextPointer      string                `json:"nextPointer"`
	CursorField      string                `json:"cursorField"`
	CursorParam      string                `json:"cursorParam"`
	MaxPages         *int                  `json:"maxPages"`
}

// pollCursor is the state the trigger hands flowd between polls, as JSON: the cursorField
// value of the last item seen, and the first page's validators for a conditional request.
type pollCursor struct {
	After        string `json:"after,omitempty"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
}

func decodeCursor(s string) (pollCursor, error) {
	var c pollCursor
	if strings.TrimSpace(s) == "" {
		return c, nil
	}
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return c, sdk.Errorf("invalid_cursor", "cursor is not this trigger's: want a JSON object with string after, etag, lastModified: %v", err)
	}
	if strings.ContainsAny(c.ETag+c.LastModified, "\r\n\x00") {
		return c, sdk.Errorf("invalid_cursor", "cursor: etag or lastModified contains a line break or NUL")
	}
	return c, nil
}

// encode is "" when the cursor knows nothing, as on the first poll.
func (c pollCursor) encode() string {
	if c == (pollCursor{}) {
		return ""
	}
	b, _ := json.Marshal(c) // strings only: cannot fail
	return string(b)
}

// pollPlan is a validated poll trigger config.
type pollPlan struct {
	first       *prepared   // the first page's request, credentials applied
	header      http.Header // first.header before the conditional headers
	items, next pointer
	hasNext     bool // nextPointer is set
	cursorField string
	cursorParam string
	maxPages    int
}

func preparePoll(call sdk.PollCall[pollConfig]) (*pollPlan, error) {
	cfg := call.Config
	// The request action's validation and credentials, for a GET.
	p, err := prepare(sdk.Call[requestConfig, json.RawMessage]{
		Config: requestConfig{
			URL:              cfg.URL,
			Headers:          cfg.Headers,
			Query:            cfg.Query,
			TimeoutMs:        cfg.TimeoutMs,
			MaxResponseBytes: cfg.MaxResponseBytes,
		},
		Connection: call.Connection,
	})
	if err != nil {
		return nil, err
	}
	plan := &pollPlan{first: p, header: p.header, cursorField: cfg.CursorField, cursorParam: cfg.CursorParam, maxPages: defaultMaxPages}
	if plan.items, err = parsePointer(cfg.ItemsPointer); err != nil {
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("itemsPointer: %w", err))
	}
	if cfg.NextPointer != "" {
		if plan.next, err = parsePointer(cfg.NextPointer); err != nil {
			return nil, sdk.Permanent("invalid_config", fmt.Errorf("nextPointer: %w", err))
		}
		plan.hasNext = true
	}
	switch {
	case cfg.CursorField != "" && cfg.CursorParam == "":
		return nil, sdk.Errorf("invalid_config", "cursorParam is required with cursorField: it names the query parameter that carries the last item's %s", cfg.CursorField)
	case cfg.CursorParam != "" && cfg.CursorField == "":
		return nil, sdk.Errorf("invalid_config", "cursorField is required with cursorParam: it names the field of the items whose last value %s carries", cfg.CursorParam)
	}
	if cfg.MaxPages != nil {
		if *cfg.MaxPages < 1 || *cfg.MaxPages > maxMaxPages {
			return nil, sdk.Errorf("invalid_config", "maxPages must be between 1 and %d, got %d", maxMaxPages, *cfg.MaxPages)
		}
		plan.maxPages = *cfg.MaxPages
	}
	return plan, nil
}

// firstPage is the first page's request for cursor: the cursor's after in cursorParam, its
// validators as If-None-Match and If-Modified-Since.
func (pl *pollPlan) firstPage(cur pollCursor) *prepared {
	p := *pl.first
	if cur.After != "" && pl.cursorParam != "" {
		u := *p.url
		q := u.Query()
		q.Set(pl.cursorParam, cur.After)
		u.RawQuery = q.Encode()
		p.url = &u
	}
	if cur.ETag != "" || cur.LastModified != "" {
		p.header = pl.header.Clone()
		if cur.ETag != "" {
			p.header.Set("If-None-Match", cur.ETag)
		}
		if cur.LastModified != "" {
			p.header.Set("If-Modified-Since", cur.LastModified)
		}
	}
	return &p
}

// crossOriginDropped are the headers a next link to another origin does not get, besides the
// connection's: the ones Go drops on a redirect to another host.
var crossOriginDropped = []string{"Authorization", "Proxy-Authorization", "Cookie", "Cookie2", "Www-Authenticate"}

// nextPage is the request for a next link: as the first page's, without the conditional
// headers, and without credentials or a Host override when the link leaves the configured
// URL's origin (as the request action's redirects lose them).
func (pl *pollPlan) nextPage(u *url.URL) *prepared {
	p := *pl.first
	p.url = u
	p.header = pl.header
	if origin := pl.first.url; u.Scheme != origin.Scheme || u.Host != origin.Host {
		p.header = pl.header.Clone()
		for _, name := range append(crossOriginDropped, p.secretHeaders...) {
			p.header.Del(name)
		}
		p.host = ""
	}
	return &p
}

// poll fetches the items after the cursor: the first page (conditionally, when the cursor has
// validators), then next links up to maxPages. Items come back as the source lists them.
func (c *connector) poll(ctx context.Context, call sdk.PollCall[pollConfig]) (sdk.PollResult, error) {
	plan, err := preparePoll(call)
	if err != nil {
		return sdk.PollResult{}, err
	}
	cur, err := decodeCursor(call.Cursor)
	if err != nil {
		return sdk.PollResult{}, err
	}
	log := slog.Default().With("trigger", call.Trigger, "url", redact(plan.first.url))

	page := plan.firstPage(cur)
	next := pollCursor{After: cur.After}
	var items []any
	visited := map[string]bool{}
	total := 0
	for n := 1; ; n++ {
		visited[page.url.String()] = true
		resp, raw, err := c.send(ctx, page, log)
		if err != nil {
			return sdk.PollResult{}, err
		}
		if n == 1 {
			if resp.StatusCode == http.StatusNotModified && (cur.ETag != "" || cur.LastModified != "") {
				log.Debug("http poll: not modified")
				return sdk.PollResult{Cursor: call.Cursor}, nil
			}
			next.ETag, next.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return sdk.PollResult{}, statusError(page, resp, raw)
		}
		total += len(raw)
		got, link, err := plan.read(page, resp, raw)
		if err != nil {
			return sdk.PollResult{}, err
		}
		items = append(items, got...)
		switch {
		case link == nil:
		case n >= plan.maxPages:
			log.Debug("http poll: more pages remain after maxPages", "pages", n)
		case visited[link.String()]:
			log.Warn("http poll: a next link leads to a page already read this poll; stopping", "next", redact(link))
		case total+int(plan.first.maxBytes) > pollBudget:
			log.Warn("http poll: stopping before the next page could exceed what one poll carries", "pages", n, "bytes", total)
		default:
			page = plan.nextPage(link)
			continue
		}
		log.Debug("http poll done", "pages", n, "items", len(items), "bytes", total)
		break
	}

	if plan.cursorField != "" && len(items) > 0 {
		if next.After, err = cursorValue(items[len(items)-1], plan.cursorField); err != nil {
			return sdk.PollResult{}, sdk.Errorf("invalid_response", "GET %s: last item of the poll: %v", redact(page.url), err)
		}
	}
	return sdk.PollResult{Items: items, Cursor: next.encode()}, nil
}

// read returns a page's items and its next link (nil: none): nextPointer's when it is set
// and present in the body, else a Link header's rel="next". A 204 is a page without items.
func (pl *pollPlan) read(page *prepared, resp *http.Response, raw []byte) ([]any, *url.URL, error) {
	target := redact(page.url)
	var items []any
	var nextRef string
	if resp.StatusCode != http.StatusNoContent {
		if len(bytes.TrimSpace(raw)) == 0 {
			return nil, nil, sdk.Errorf("invalid_response", "GET %s: %s: body is empty: the poll trigger reads a JSON array of items, at itemsPointer when set", target, resp.Status)
		}
		body, err := sdk.DecodeJSON(raw)
		if err != nil {
			return nil, nil, sdk.Errorf("invalid_response", "GET %s: %s: body is not JSON (%v): the poll trigger reads a JSON array of items, at itemsPointer when set", target, resp.Status, err)
		}
		v, err := pl.items.resolve(body)
		if err != nil {
			return nil, nil, sdk.Errorf("invalid_response", "GET %s: itemsPointer %q: %v", target, pl.items.text, err)
		}
		var ok bool
		if items, ok = v.([]any); !ok {
			return nil, nil, sdk.Errorf("invalid_response", "GET %s: itemsPointer %q leads to %s, not an array of items", target, pl.items.text, kind(v))
		}
		if pl.hasNext {
			// A body without the link (or with null or "") is the last page.
			if v, err := pl.next.resolve(body); err == nil && v != nil {
				s, ok := v.(string)
				if !ok {
					return nil, nil, sdk.Errorf("invalid_response", "GET %s: nextPointer %q leads to %s, not a URL", target, pl.next.text, kind(v))
				}
				nextRef = s
			}
		}
	}
	if nextRef == "" {
		nextRef = linkNext(resp.Header)
	}
	if nextRef == "" {
		return items, nil, nil
	}
	u, err := page.url.Parse(nextRef) // a relative link is relative to this page
	if err != nil {
		return nil, nil, sdk.Errorf("invalid_response", "GET %s: next link is not a URL", target)
	}
	if u.Scheme = strings.ToLower(u.Scheme); (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, sdk.Errorf("invalid_response", "GET %s: next link %s is not an http or https URL", target, redact(u))
	}
	u.Fragment, u.RawFragment = "", ""
	return items, u, nil
}

// statusError is a poll's answer to a status the trigger cannot read items from: 4xx are
// permanent (http_4xx), as is anything else but 2xx and the retryable statuses send reports.
func statusError(page *prepared, resp *http.Response, raw []byte) error {
	code := "http_status"
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		code = "http_4xx"
	}
	msg := fmt.Sprintf("GET %s: %s", redact(page.url), resp.Status)
	if s := snippet(raw); s != "" {
		msg += ": " + s
	}
	return &sdk.Error{Code: code, Message: msg}
}

// snippet is the start of a text body on one line, for an error message ("" when binary).
func snippet(raw []byte) string {
	if !utf8.Valid(raw) {
		return ""
	}
	s := strings.Join(strings.Fields(string(raw)), " ")
	if len(s) > snippetLen {
		cut := snippetLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// cursorValue is item's field as the cursor's after: a string or a number's JSON text.
func cursorValue(item any, field string) (string, error) {
	obj, ok := item.(map[string]any)
	if !ok {
		return "", fmt.Errorf("it is %s, not an object with the cursorField %q", kind(item), field)
	}
	switch v := obj[field].(type) {
	case string:
		if v != "" {
			return v, nil
		}
	case json.Number:
		return v.String(), nil
	}
	if _, ok := obj[field]; !ok {
		return "", fmt.Errorf("it has no cursorField %q", field)
	}
	return "", fmt.Errorf("its cursorField %q is %s, want a non-empty string or a number", field, kind(obj[field]))
}

// pointer is a JSON pointer (RFC 6901).
type pointer struct {
	text   string
	tokens []string // unescaped
	raw    []string // as written, for messages
}

var pointerUnescape = strings.NewReplacer("~1", "/", "~0", "~")

func parsePointer(s string) (pointer, error) {
	p := pointer{text: s}
	if s == "" {
		return p, nil
	}
	if s[0] != '/' {
		return p, fmt.Errorf("%q is not a JSON pointer: it is empty (the whole body) or starts with /", s)
	}
	p.raw = strings.Split(s[1:], "/")
	p.tokens = make([]string, len(p.raw))
	for i, t := range p.raw {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || (t[j+1] != '0' && t[j+1] != '1')) {
				return p, fmt.Errorf("%q is not a JSON pointer: ~ must be followed by 0 or 1", s)
			}
		}
		p.tokens[i] = pointerUnescape.Replace(t)
	}
	return p, nil
}

// resolve returns the value p points to in doc, or why there is none.
func (p pointer) resolve(doc any) (any, error) {
	v := doc
	for i, tok := range p.tokens {
		at := "the body"
		if i > 0 {
			at = strconv.Quote("/" + strings.Join(p.raw[:i], "/"))
		}
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[tok]
			if !ok {
				return nil, fmt.Errorf("no member %q in the object at %s", tok, at)
			}
			v = next
		case []any:
			idx, err := strconv.Atoi(tok)
			if err != nil || idx < 0 || idx >= len(x) || (len(tok) > 1 && tok[0] == '0') || tok[0] == '+' {
				return nil, fmt.Errorf("no element %q in the array of %d at %s", tok, len(x), at)
			}
			v = x[idx]
		default:
			return nil, fmt.Errorf("%s is %s: no member %q in it", at, kind(v), tok)
		}
	}
	return v, nil
}

// kind names a decoded JSON value's type for messages.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// linkNext is the target of the first rel="next" link in Link headers (RFC 8288), "" when there
// is none. Link values may carry several links, quoted parameters with commas and semicolons,
// and rel lists several relation types.
func linkNext(h http.Header) string {
	for _, v := range h.Values("Link") {
		for v != "" {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				break // not a link-value: give up on this header
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			target := strings.TrimSpace(v[1:end])
			var params map[string]string
			params, v = linkParams(v[end+1:])
			for _, rel := range strings.Fields(params["rel"]) {
				if strings.EqualFold(rel, "next") {
					return target
				}
			}
		}
	}
	return ""
}

// linkParams reads the ;name=value parameters of one link-value and returns them (names
// lower-cased, the first of a repeated name kept) with what follows the link-value.
func linkParams(s string) (map[string]string, string) {
	params := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] == ',' {
			return params, s
		}
		if s[0] != ';' {
			// Stray text: skip to the next link-value.
			if i := strings.IndexByte(s, ','); i >= 0 {
				return params, s[i:]
			}
			return params, ""
		}
		s = strings.TrimLeft(s[1:], " \t")
		i := strings.IndexAny(s, "=;,")
		if i < 0 {
			i = len(s)
		}
		name := strings.ToLower(strings.TrimSpace(s[:i]))
		s = s[i:]
		var value string
		if strings.HasPrefix(s, "=") {
			s = strings.TrimLeft(s[1:], " \t")
			if strings.HasPrefix(s, `"`) {
				var b strings.Builder
				j := 1
				for ; j < len(s) && s[j] != '"'; j++ {
					if s[j] == '\\' && j+1 < len(s) {
						j++
					}
					b.WriteByte(s[j])
				}
				value, s = b.String(), s[min(j+1, len(s)):]
			} else {
				k := strings.IndexAny(s, ";,")
				if k < 0 {
					k = len(s)
				}
				value, s = strings.TrimSpace(s[:k]), s[k:]
			}
		}
		if _, seen := params[name]; !seen && name != "" {
			params[name] = value
		}
	}
}
