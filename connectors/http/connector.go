package main

import (
	"encoding/json"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
)

// version is the connector's manifest version; bump it when config or output change.
const version = "1.1.0"

// newConnector wires the request action and the poll trigger to one long-lived transport that
// dials through the egress policy; dial is the underlying connect (nil: a net.Dialer).
func newConnector(policy *egress.Policy, dial dialFunc) sdk.Connector {
	c := &connector{policy: policy, transport: newTransport(policy, dial)}
	return sdk.Connector{
		Manifest: sdk.Manifest{
			Name:            "http",
			Version:         version,
			Description:     "Calls HTTP APIs, with credentials from a connection.",
			CredentialTypes: []string{"basic", "api_key", "bearer", "oauth2"},
		},
		Actions: map[string]sdk.Handler{
			"request": sdk.Action(sdk.ActionSpec{
				Title: "HTTP request",
				Description: "Sends one HTTP request. 2xx responses go to the success port, other " +
					"statuses to the error port; 429, 5xx, timeouts and connection failures are " +
					"retryable errors, a 429 or 5xx with the wait its Retry-After asks for (at most an hour). The step's idempotency key is sent as Idempotency-Key. Loopback, " +
					"private, link-local (cloud metadata) and other internal addresses are refused " +
					"(egress_denied) unless the operator allows them.",
				ConfigSchema: json.RawMessage(configSchema),
				InputSchema:  json.RawMessage(`{"$schema":"https://json-schema.org/draft/2020-12/schema","description":"Unused: reference the input from config templates."}`),
				OutputSchema: json.RawMessage(outputSchema),
				Ports:        []string{"success", "error"},
			}, c.request),
		},
		Triggers: map[string]sdk.TriggerHandler{
			"poll": sdk.Poller(sdk.TriggerSpec{
				Title: "Poll an HTTP API",
				Description: "GETs a JSON list of items (the body, or the array at itemsPointer) and returns " +
					"each item as the API lists it; flowd starts one execution per item and tells items " +
					"apart by their id. Follows next links (Link: rel=\"next\" headers, or the URL at " +
					"nextPointer) up to maxPages pages. With cursorField, the last item's field is sent " +
					"as cursorParam on the next poll, so the API must list items oldest first. The " +
					"first page is requested with If-None-Match / If-Modified-Since from the previous " +
					"poll; a 304 returns nothing. Credentials, egress policy, timeouts and retryable " +
					"errors (429, 5xx, Retry-After) are the request action's; credentials are not sent " +
					"to a next link on another origin.",
				ConfigSchema: json.RawMessage(pollConfigSchema),
				OutputSchema: json.RawMessage(pollOutputSchema),
			}, c.poll),
		},
	}
}

const configSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "method": {"type": "string", "default": "GET", "pattern": "^([Gg][Ee][Tt]|[Hh][Ee][Aa][Dd]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$", "description": "GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"},
    "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "description": "http or https only"},
    "headers": {"type": "object", "additionalProperties": {"$ref": "#/$defs/values"}},
    "query": {"type": "object", "additionalProperties": {"$ref": "#/$defs/values"}, "description": "added to the URL's own query"},
    "body": {"description": "a string is sent as-is (text/plain unless headers say otherwise), any other JSON value as JSON"},
    "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 300000, "default": 30000},
    "maxResponseBytes": {"type": "integer", "minimum": 1, "maximum": 25165824, "default": 10485760},
    "followRedirects": {"type": "boolean", "default": true, "description": "at most 10 redirects; credentials are dropped when a redirect leaves the origin"}
  },
  "$defs": {
    "scalar": {"type": ["string", "number", "boolean", "null"]},
    "values": {"anyOf": [{"$ref": "#/$defs/scalar"}, {"type": "array", "items": {"$ref": "#/$defs/scalar"}}]}
  }
}`

const outputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["status", "headers", "body"],
  "properties": {
    "status": {"type": "integer"},
    "headers": {
      "type": "object",
      "description": "lower-case names; a list when the header repeats",
      "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    },
    "body": {"description": "decoded when the response is JSON, else the text (base64 when bodyEncoding says so)"},
    "bodyEncoding": {"enum": ["base64"]}
  }
}`

// pollConfigSchema shares url, headers, query, timeoutMs and maxResponseBytes with the request
// action's configSchema (the same code validates them); timeoutMs and maxResponseBytes apply
// to each page.
const pollConfigSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "description": "the first page; http or https only"},
    "headers": {"type": "object", "additionalProperties": {"$ref": "#/$defs/values"}},
    "query": {"type": "object", "additionalProperties": {"$ref": "#/$defs/values"}, "description": "added to the URL's own query; next links are followed as the API gives them"},
    "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 300000, "default": 30000, "description": "per page"},
    "maxResponseBytes": {"type": "integer", "minimum": 1, "maximum": 25165824, "default": 10485760, "description": "per page"},
    "itemsPointer": {"type": "string", "format": "json-pointer", "pattern": "^(/([^~/]|~[01])*)*$", "default": "", "description": "JSON pointer (RFC 6901) to the array of items in each page's JSON body; \"\" is the body itself"},
    "nextPointer": {"type": "string", "format": "json-pointer", "pattern": "^(/([^~/]|~[01])*)+$", "description": "JSON pointer to the next page's URL in the body (relative to the page's URL); absent, null or \"\" there ends the poll. Without it, or when the body has none, a Link: rel=\"next\" header is followed"},
    "maxPages": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10, "description": "pages read per poll, the first included"},
    "cursorField": {"type": "string", "minLength": 1, "description": "field of each item (a string or number) whose value in the poll's last item the next poll sends as cursorParam"},
    "cursorParam": {"type": "string", "minLength": 1, "description": "query parameter of the first page that carries cursorField's last value"}
  },
  "dependentRequired": {"cursorField": ["cursorParam"], "cursorParam": ["cursorField"]},
  "$defs": {
    "scalar": {"type": ["string", "number", "boolean", "null"]},
    "values": {"anyOf": [{"$ref": "#/$defs/scalar"}, {"type": "array", "items": {"$ref": "#/$defs/scalar"}}]}
  }
}`

const pollOutputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "one item as the API lists it; an object's string or number id tells items apart"
}`
