"""{{.Name}}: a flowd connector in Python, on the flowd_connector package.

Its action, echo, prefixes a text: {"text": "hi"} becomes {"message": "<prefix>hi"}, signed with
the user of an account connection when its node has one. Its polling
trigger, ticks, counts from 1 to a total a few numbers a poll, resuming from a cursor; each tick
is an item echo takes as its input. `./{{.Name}} describe` prints the manifest.
"""

from flowd_connector import ItemError, serve

# The ticks trigger's bounds (its config schema says the same).
DEFAULT_BATCH = 10
MAX_BATCH = 100

MANIFEST = {
    "name": "{{.Name}}",
    "version": "0.1.0",
    "description": "Echoes text with a prefix; counts ticks.",
    "actions": {
        "echo": {
            "title": "Echo",
            "description": "Returns the input's text after the configured prefix.",
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {"prefix": {"type": "string", "default": "", "description": "put before the text"}},
            },
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
            },
        }
    },
    # A connection type of the connector's own: users create "{{.Name}}.account" connections;
    # the token is secret (encrypted by flowd, masked in its API, decrypted for this connector).
    "credentials": {
        "account": {
            "title": "Account",
            "schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "required": ["user", "token"],
                "properties": {"user": {"type": "string", "minLength": 1}, "token": {"type": "string", "minLength": 1}},
            },
            "secret": ["token"],
        }
    },
    "triggers": {
        "ticks": {
            "title": "Ticks",
            "description": "Numbers from 1 to `total`, `batch` of them a poll, each an item "
            '{"id": "tick-<n>", "n": n, "text": "tick <n>"}.',
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "required": ["total"],
                "properties": {
                    "total": {"type": "integer", "minimum": 0, "description": "the last number"},
                    "batch": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_BATCH, "description": "numbers per poll"},
                },
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["id", "n", "text"],
                "properties": {
                    "id": {"type": "string"},
                    "n": {"type": "integer", "minimum": 1},
                    "text": {"type": "string"},
                },
            },
        }
    },
}


def echo(config, input, connection):
    """The echo action: config {"prefix": ...}, input {"text": ...}, output {"message": ...}.
    connection is None, or {"type": "{{.Name}}.account", "data": {"user", "token"}}."""
    text = input.get("text") if isinstance(input, dict) else None
    if not isinstance(text, str):
        # A permanent error for this item only: retrying the same input cannot help.
        raise ItemError("invalid_input", "input.text must be a string")
    message = f"{config.get('prefix', '')}{text}"
    if connection is not None:
        if connection.get("type") != "{{.Name}}.account":
            raise ItemError("invalid_connection", "echo signs with a {{.Name}}.account connection")
        message += f" (from {connection['data']['user']})"
    return {"message": message}


def ticks(config, cursor, connection):
    """The ticks trigger: the numbers after cursor (the last number returned, "" before the first
    poll) and the cursor to resume from."""
    total, batch = config.get("total"), config.get("batch", DEFAULT_BATCH)
    for key, value, minimum in (("total", total, 0), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ItemError("invalid_config", f"config.{key} must be an integer of at least {minimum}")
    if cursor and not (cursor.isascii() and cursor.isdigit()):
        raise ItemError("invalid_cursor", f"cursor {cursor[:40]!r} is not this trigger's: want the last number")
    last = int(cursor or 0)
    items = [{"id": f"tick-{n}", "n": n, "text": f"tick {n}"} for n in range(last + 1, min(last + batch, total) + 1)]
    # Nothing new keeps the cursor as it was.
    return items, (str(items[-1]["n"]) if items else cursor)


ACTIONS = {"echo": echo}
TRIGGERS = {"ticks": ticks}

if __name__ == "__main__":
    serve(MANIFEST, ACTIONS, TRIGGERS)
