"""greeter: a flowd connector written in Python, on the flowd_connector package
(connectors/sdk/python), which speaks the plugin protocol: go-plugin's handshake, mutual TLS,
gRPC, the health service, exiting with the host.

Its one action, greet, turns {"name": "Ada"} into {"message": "Hello, Ada!"}; its polling
trigger, arrivals, announces guests a few at a time, resuming from a cursor. It defines a
connection type of its own, guestbook (greeter.guestbook: a URL and a secret token), which greet
signs when its node has one. Run `greeter describe` to print the manifest.
"""

import json

from flowd_connector import ItemError, serve

# The connection type greeter defines (MANIFEST["credentials"]); flowd names it
# "<connector>.<name>".
GUESTBOOK = "guestbook"
GUESTBOOK_TYPE = "greeter." + GUESTBOOK

# The arrivals trigger's bounds (its config schema says the same).
DEFAULT_BATCH = 3
MAX_BATCH = 100

MANIFEST = {
    "name": "greeter",
    "version": "1.1.0",
    "description": "Example connector in Python: greets someone by name.",
    "actions": {
        "greet": {
            "title": "Greet",
            "description": 'Builds "<greeting>, <name>!".',
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {"greeting": {"type": "string", "default": "Hello"}},
            },
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "guestbook": {"type": "string", "description": "the guestbook signed, when the node has a guestbook connection"},
                },
            },
        }
    },
    "triggers": {
        "arrivals": {
            "title": "Arrivals",
            "description": "Guests arriving, numbered from 1: each poll returns the next `batch` guests "
            "after the cursor, up to `total` guests when it is set. Each guest is an item "
            '{"id": "guest-<n>", "number": n, "name": "Guest <n>"}, ready for greet.',
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "batch": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_BATCH, "description": "guests per poll"},
                    "total": {"type": "integer", "minimum": 0, "description": "guests in all; unset: no end"},
                },
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["id", "number", "name"],
                "properties": {
                    "id": {"type": "string"},
                    "number": {"type": "integer", "minimum": 1},
                    "name": {"type": "string"},
                },
            },
        }
    },
    # A connection type of its own: users create it as type "greeter.guestbook"; the token is
    # secret (encrypted by flowd, masked in its API, decrypted only for greeter's calls).
    "credentials": {
        GUESTBOOK: {
            "title": "Guestbook",
            "description": "The guestbook greet signs: its URL and the token that grants access.",
            "schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "required": ["url", "token"],
                "properties": {
                    "url": {"type": "string", "format": "uri", "description": "the guestbook's address"},
                    "token": {"type": "string", "minLength": 1, "description": "access token"},
                },
            },
            "secret": ["token"],
        }
    },
}


def greet(config, item, connection):
    """The greet action: the output data, or ItemError for bad config, input or connection. A
    guestbook connection is signed: the output names its URL (its token is a credential: never
    echoed)."""
    greeting = config.get("greeting") or "Hello"
    if not isinstance(greeting, str):
        raise ItemError("invalid_config", "config.greeting must be a string")
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ItemError("invalid_input", "input.name must be a non-empty string")
    out = {"message": f"{greeting}, {item['name']}!"}
    if connection is not None:
        typ, data = connection.get("type"), connection.get("data")
        if typ != GUESTBOOK_TYPE:
            raise ItemError("invalid_connection", f"greet signs a {GUESTBOOK_TYPE} connection, not {typ!r}")
        if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str) or not data["token"]:
            raise ItemError("invalid_connection", "a guestbook connection has a url and a token")
        out["guestbook"] = data["url"]
    return out


def integer(config, key, default, minimum, maximum=None):
    """config[key] as an int within bounds (None or absent: default), else invalid_config."""
    value = config.get(key)
    if value is None:
        return default
    # JSON numbers like 3.0 are integers to a schema; booleans are not numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ItemError("invalid_config", f"config.{key} must be an integer {bounds}, got {json.dumps(value)}")
    return value


def arrivals(config, cursor, connection):
    """The arrivals trigger: the guests after cursor (the number of the last guest returned, as a
    decimal string; "" before the first poll) and the cursor to resume from. ItemError for bad
    config or a cursor that is not this trigger's."""
    batch = integer(config, "batch", DEFAULT_BATCH, 1, MAX_BATCH)
    total = integer(config, "total", None, 0)
    if cursor == "":
        last = 0
    elif cursor.isascii() and cursor.isdigit():
        last = int(cursor)
    else:
        raise ItemError("invalid_cursor", f"cursor {cursor[:40]!r} is not this trigger's: want the number of the last guest")
    end = last + batch if total is None else min(last + batch, total)
    items = [{"id": f"guest-{n}", "number": n, "name": f"Guest {n}"} for n in range(last + 1, end + 1)]
    # Nothing new keeps the cursor as it was.
    return items, (str(items[-1]["number"]) if items else cursor)


ACTIONS = {"greet": greet}
TRIGGERS = {"arrivals": arrivals}

if __name__ == "__main__":
    serve(MANIFEST, ACTIONS, TRIGGERS)
