package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/connectors/sdk/telemetry"
)

const (
	defaultTimeout          = 30 * time.Second
	maxTimeout              = 5 * time.Minute
	defaultMaxResponseBytes = 10 << 20
	// A response travels back as one output inside one gRPC message (sdk.MaxMessageSize, 32 MiB)
	// beside its headers and batch neighbours, so the cap stays well below that bound.
	maxMaxResponseBytes = 24 << 20
	maxRedirects        = 10
	defaultAPIKeyHeader = "X-API-Key"
	idempotencyHeader   = "Idempotency-Key"
	// drainLimit bounds how much of an unwanted body is read so the connection can be reused.
	drainLimit = 64 << 10
	// maxRetryAfter caps the wait a server's Retry-After can ask for: a longer one is more
	// likely a misconfiguration than a plan, and would park the step for too long.
	maxRetryAfter = time.Hour
)

// methods are the only methods the connector sends: others (CONNECT, TRACE, WebDAV's and
// made-up ones) serve no integration and widen what a flow can make a server do.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// requestConfig is the request action's config, templates already rendered by the runner.
type requestConfig struct {
	Method           string                `json:"method"`
	URL              string                `json:"url"`
	Headers          map[string]textValues `json:"headers"`
	Query            map[string]textValues `json:"query"`
	Body             json.RawMessage       `json:"body"`
	TimeoutMs        *int64                `json:"timeoutMs"`
	MaxResponseBytes *int64                `json:"maxResponseBytes"`
	FollowRedirects  *bool                 `json:"followRedirects"`
}

// textValues is a header or query value: a scalar or a list of scalars. Rendered templates may
// yield numbers or booleans; numbers keep their JSON text so large ids are not rounded.
type textValues []string

func (v *textValues) UnmarshalJSON(data []byte) error {
	var raw any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return err
	}
	list, ok := raw.([]any)
	if !ok {
		list = []any{raw}
	}
	out := make(textValues, 0, len(list))
	for _, x := range list {
		switch x := x.(type) {
		case nil: // an absent value renders as null: send nothing rather than "null"
		case string:
			out = append(out, x)
		case json.Number:
			out = append(out, x.String())
		case bool:
			out = append(out, strconv.FormatBool(x))
		default:
			return fmt.Errorf("want a string, number, boolean or a list of them, got %T", x)
		}
	}
	*v = out
	return nil
}

// prepared is a validated request, ready to send.
type prepared struct {
	method   string
	url      *url.URL
	header   http.Header
	host     string // a Host header from the config overrides the URL's
	body     []byte // nil: no body
	timeout  time.Duration
	maxBytes int64
	follow   bool
	// secretHeaders carry the connection's credentials: they are dropped when a redirect
	// leaves the origin (Go drops Authorization itself, not a custom API key header).
	secretHeaders []string
}

func prepare(call sdk.Call[requestConfig, json.RawMessage]) (*prepared, error) {
	cfg := call.Config
	p := &prepared{
		method:   strings.ToUpper(strings.TrimSpace(cfg.Method)),
		header:   make(http.Header),
		timeout:  defaultTimeout,
		maxBytes: defaultMaxResponseBytes,
		follow:   true,
	}
	if p.method == "" {
		p.method = http.MethodGet
	}
	if !slices.Contains(methods, p.method) {
		return nil, sdk.Errorf("invalid_config", "method %q is not allowed: use one of %s", cfg.Method, strings.Join(methods, ", "))
	}

	if strings.TrimSpace(cfg.URL) == "" {
		return nil, sdk.Errorf("invalid_config", "url is required")
	}
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil {
		// url.Parse quotes the whole URL, which may carry a secret: report the reason only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("url: %w", err))
	}
	if u.Scheme = strings.ToLower(u.Scheme); u.Scheme != "http" && u.Scheme != "https" {
		return nil, sdk.Errorf("invalid_config", "url: scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, sdk.Errorf("invalid_config", "url: no host")
	}
	if len(cfg.Query) > 0 {
		q := u.Query()
		for k, vs := range cfg.Query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	p.url = u

	for name, vs := range cfg.Headers {
		if !isToken(name) {
			return nil, sdk.Errorf("invalid_config", "headers: %q is not a valid header name", name)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, sdk.Errorf("invalid_config", "headers: value of %q contains a line break or NUL", name)
			}
			if strings.EqualFold(name, "Host") {
				p.host = v
				continue
			}
			p.header.Add(name, v)
		}
	}

	if cfg.TimeoutMs != nil {
		if *cfg.TimeoutMs < 1 || *cfg.TimeoutMs > maxTimeout.Milliseconds() {
			return nil, sdk.Errorf("invalid_config", "timeoutMs must be between 1 and %d, got %d", maxTimeout.Milliseconds(), *cfg.TimeoutMs)
		}
		p.timeout = time.Duration(*cfg.TimeoutMs) * time.Millisecond
	}
	if cfg.MaxResponseBytes != nil {
		if *cfg.MaxResponseBytes < 1 || *cfg.MaxResponseBytes > maxMaxResponseBytes {
			return nil, sdk.Errorf("invalid_config", "maxResponseBytes must be between 1 and %d, got %d", maxMaxResponseBytes, *cfg.MaxResponseBytes)
		}
		p.maxBytes = *cfg.MaxResponseBytes
	}
	if cfg.FollowRedirects != nil {
		p.follow = *cfg.FollowRedirects
	}

	body, contentType, err := encodeBody(cfg.Body)
	if err != nil {
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("body: %w", err))
	}
	p.body = body
	if body != nil && p.header.Get("Content-Type") == "" {
		p.header.Set("Content-Type", contentType)
	}

	// The step's idempotency key makes a retried POST safe on servers that honour it; an
	// explicit header in the config wins.
	if call.IdempotencyKey != "" && p.header.Get(idempotencyHeader) == "" {
		p.header.Set(idempotencyHeader, call.IdempotencyKey)
	}

	// The connection is applied last so a credential is never overridden by a config header.
	if p.secretHeaders, err = applyAuth(p.header, call.Connection); err != nil {
		return nil, err
	}
	return p, nil
}

// encodeBody: a JSON string is sent as its text, any other JSON value as JSON.
func encodeBody(raw json.RawMessage) ([]byte, string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, "", err
		}
		return []byte(s), "text/plain; charset=utf-8", nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "application/json", nil
}

// applyAuth sets the credential headers of conn and returns their names. Errors never quote
// the connection's data.
func applyAuth(h http.Header, conn *sdk.Connection) ([]string, error) {
	if conn == nil {
		return nil, nil
	}
	field := func(name string, required bool) (string, error) {
		v, ok := conn.Data[name]
		if !ok || v == nil {
			if required {
				return "", sdk.Errorf("invalid_connection", "%s connection has no %s", conn.Type, name)
			}
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", sdk.Errorf("invalid_connection", "%s connection: %s must be a string", conn.Type, name)
		}
		if required && s == "" {
			return "", sdk.Errorf("invalid_connection", "%s connection has an empty %s", conn.Type, name)
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			return "", sdk.Errorf("invalid_connection", "%s connection: %s contains a line break or NUL", conn.Type, name)
		}
		return s, nil
	}
	switch conn.Type {
	case "basic":
		user, err := field("username", true)
		if err != nil {
			return nil, err
		}
		pass, err := field("password", false)
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		return []string{"Authorization"}, nil
	case "api_key":
		name, err := field("header", false)
		if err != nil {
			return nil, err
		}
		if name == "" {
			name = defaultAPIKeyHeader
		}
		if !isToken(name) {
			return nil, sdk.Errorf("invalid_connection", "api_key connection: header is not a valid header name")
		}
		key, err := field("key", true)
		if err != nil {
			return nil, err
		}
		h.Set(name, key)
		return []string{name}, nil
	case "bearer":
		token, err := field("token", true)
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Bearer "+token)
		return []string{"Authorization"}, nil
	case "oauth2":
		// The runner's resolver fetched or refreshed the token; the connector only presents it.
		token, err := field("accessToken", true)
		if err != nil {
			return nil, err
		}
		typ, err := field("tokenType", false)
		if err != nil {
			return nil, err
		}
		// Token endpoints often answer "bearer"; RFC 6750 servers expect "Bearer".
		if typ == "" || strings.EqualFold(typ, "bearer") {
			typ = "Bearer"
		}
		if !isToken(typ) {
			return nil, sdk.Errorf("invalid_connection", "oauth2 connection: tokenType is not a valid auth scheme")
		}
		h.Set("Authorization", typ+" "+token)
		return []string{"Authorization"}, nil
	default:
		return nil, sdk.Errorf("unsupported_connection", "connection type %q is not supported by http (basic, api_key, bearer, oauth2)", conn.Type)
	}
}

var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)

// connector holds what lives as long as the plugin: one transport, so keep-alive connections
// are reused across calls.
type connector struct {
	policy    *egress.Policy
	transport http.RoundTripper
}

// dialFunc connects to an address; net.Dialer.DialContext is one.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newTransport dials through the egress policy. It never uses a proxy from the environment:
// through a proxy the connector would only see the proxy's address, and the policy must apply
// to the destination. Operators who need a forward proxy make it the network's egress path
// and give it the same rules. dial connects to an address the policy permitted (nil: a
// net.Dialer); tests pass one that cannot reach beyond loopback.
func newTransport(policy *egress.Policy, dial dialFunc) *http.Transport {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	d := &egress.Dialer{
		Policy: policy,
		Dial:   dial,
		OnDeny: func(e *egress.DeniedError) {
			// The step's error names what the flow asked for; the operator's log has the address.
			slog.Warn("egress refused", "target", e.Target, "address", e.IP.String(), "kind", e.What)
		},
	}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    10 * time.Second,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
}

func (c *connector) request(ctx context.Context, call sdk.Call[requestConfig, json.RawMessage]) ([]sdk.Output, error) {
	p, err := prepare(call)
	if err != nil {
		return nil, err
	}
	log := slog.Default().With("execution", call.ExecutionID, "node", call.NodeID, "method", p.method, "url", redact(p.url))
	resp, raw, err := c.send(ctx, p, log)
	if err != nil {
		return nil, err
	}
	port := "error"
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		port = "success"
	}
	return []sdk.Output{{Port: port, Data: responseData(resp, raw)}}, nil
}

// send makes p's request once, within p.timeout, and reads the response body (at most
// p.maxBytes; the body is closed on return). It is the one path to the network of the request
// action and the poll trigger, so both check the egress policy, present the same headers and
// report failures alike: the transport's errors classified by failure, 429 and 5xx as
// retryable errors with the wait a Retry-After asks for, an oversized body as
// response_too_large. Any other status is the caller's to judge.
func (c *connector) send(ctx context.Context, p *prepared, log *slog.Logger) (*http.Response, []byte, error) {
	target := redact(p.url)
	if err := c.precheck(p.url); err != nil {
		return nil, nil, sdk.Permanent("egress_denied", fmt.Errorf("%s %s: %w", p.method, target, err))
	}

	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var body io.Reader
	if p.body != nil {
		body = bytes.NewReader(p.body)
	}
	req, err := http.NewRequestWithContext(ctx, p.method, p.url.String(), body)
	if err != nil {
		return nil, nil, sdk.Permanent("invalid_config", fmt.Errorf("%s %s: %w", p.method, target, err))
	}
	req.Header = p.header
	if trace.SpanContextFromContext(ctx).IsValid() && req.Header.Get("traceparent") == "" {
		// The step's trace goes on to the partner (W3C Trace Context), unless the flow set
		// the header itself. The context holds a span only when the runner traces.
		if req.Header == nil {
			req.Header = http.Header{}
		}
		telemetry.Propagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	if p.host != "" {
		req.Host = p.host
	}

	// A client per call is two words on top of the shared transport; it carries this call's
	// redirect policy.
	client := &http.Client{Transport: c.transport, CheckRedirect: p.checkRedirect}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, failure(ctx, p, target, err)
	}
	defer resp.Body.Close()
	log = log.With("status", resp.StatusCode)

	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		drain(resp.Body)
		code := "http_5xx"
		if resp.StatusCode == http.StatusTooManyRequests {
			code = "http_429"
		}
		msg := fmt.Sprintf("%s %s: %s", p.method, target, resp.Status)
		header := resp.Header.Get("Retry-After")
		wait, ok := retryAfter(header, time.Now())
		switch {
		case ok:
			msg += "; Retry-After: " + wait.String()
		case strings.TrimSpace(header) != "":
			msg += "; Retry-After not understood: " + strconv.Quote(header)
		}
		log.Debug("http request retryable", "duration", time.Since(start))
		return nil, nil, &sdk.Error{Code: code, Message: msg, Retryable: true, RetryAfter: wait}
	}

	raw, err := readLimited(resp, p.maxBytes)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			drain(resp.Body)
			return nil, nil, sdk.Errorf("response_too_large", "%s %s: %s: body exceeds maxResponseBytes (%d)", p.method, target, resp.Status, p.maxBytes)
		}
		return nil, nil, failure(ctx, p, target, fmt.Errorf("reading response: %w", err))
	}
	log.Debug("http request done", "duration", time.Since(start), "bytes", len(raw))
	return resp, raw, nil
}

// precheck refuses a URL whose host is a refused address literal before any request starts, so
// the answer is egress_denied whatever the step's timeout. Names and redirects are checked by
// the transport's dialer, on the addresses they resolve to.
func (c *connector) precheck(u *url.URL) error {
	ip, ipErr := netip.ParseAddr(u.Hostname())
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	n, portErr := strconv.ParseUint(port, 10, 16)
	if ipErr != nil || portErr != nil {
		// A name (the dialer checks what it resolves to) or a bad port (the transport says so).
		return nil
	}
	err := c.policy.Check(ip, uint16(n))
	var de *egress.DeniedError
	if errors.As(err, &de) {
		de.Target = u.Host
	}
	return err
}

func (p *prepared) checkRedirect(req *http.Request, via []*http.Request) error {
	if !p.follow {
		// The 3xx itself becomes the output, on the error port.
		return http.ErrUseLastResponse
	}
	if len(via) > maxRedirects {
		return errTooManyRedirects
	}
	if origin := via[0].URL; req.URL.Scheme != origin.Scheme || req.URL.Host != origin.Host {
		for _, name := range p.secretHeaders {
			req.Header.Del(name)
		}
	}
	return nil
}

// failure classifies a transport error. Messages name the method and the URL without its query
// (which may hold a key), never the request's headers.
func failure(ctx context.Context, p *prepared, target string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // url.Error quotes the full URL
	}
	var netErr net.Error
	var denied *egress.DeniedError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.As(err, &denied):
		// Checked first: a refusal is final, whatever else the transport wrapped around it.
		return sdk.Permanent("egress_denied", fmt.Errorf("%s %s: %w", p.method, target, denied))
	case errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return sdk.Retryable("timeout", fmt.Errorf("%s %s: no complete response within %s (timeoutMs or the step's deadline)", p.method, target, p.timeout))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s %s: %w", p.method, target, err)
	case errors.Is(err, errTooManyRedirects):
		return sdk.Errorf("too_many_redirects", "%s %s: %v", p.method, target, err)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		// A certificate the client does not trust is a configuration problem, not a blip.
		return sdk.Errorf("tls", "%s %s: %v", p.method, target, err)
	default:
		return sdk.Retryable("connection", fmt.Errorf("%s %s: %w", p.method, target, err))
	}
}

var errTooLarge = errors.New("response body too large")

func readLimited(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, drainLimit)) }

func responseData(resp *http.Response, raw []byte) map[string]any {
	headers := make(map[string]any, len(resp.Header))
	for name, vs := range resp.Header {
		name = strings.ToLower(name)
		if len(vs) == 1 {
			headers[name] = vs[0]
		} else {
			headers[name] = vs
		}
	}
	data := map[string]any{"status": resp.StatusCode, "headers": headers}
	if isJSON(resp.Header.Get("Content-Type")) && len(raw) > 0 {
		if v, err := sdk.DecodeJSON(raw); err == nil {
			data["body"] = v
			return data
		}
		// A server that mislabels its body still gets its body passed on, as text.
	}
	if utf8.Valid(raw) {
		data["body"] = string(raw)
	} else {
		// Binary bodies cannot travel as a JSON string without loss.
		data["body"] = base64.StdEncoding.EncodeToString(raw)
		data["bodyEncoding"] = "base64"
	}
	return data
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// retryAfter reads a Retry-After header, delay-seconds or an HTTP date, as the wait it asks
// for from now, capped at maxRetryAfter (a date already past is no wait). ok is false when the
// header is absent or not understood.
func retryAfter(v string, now time.Time) (wait time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now).Round(time.Second), 0), maxRetryAfter), true
}

// redact keeps scheme, host and path: the query and user info may carry secrets.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

// isToken reports whether s is an RFC 9110 token (method, header name, auth scheme).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
