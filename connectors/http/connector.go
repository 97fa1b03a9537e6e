package main

import (
	"encoding/json"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
)

// version is the connector's manifest version; bump it when config or output change.
const version = "1.0.0"

// newConnector wires the request action to one long-lived transport that dials through the
// egress policy; dial is the underlying connect (nil: a net.Dialer).
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
