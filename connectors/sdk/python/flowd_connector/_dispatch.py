"""Runs a connector's handlers as the protocol asks, for the gRPC server and
flowd_connector.testing alike: JSON documents in, JSON documents out, every failure an ItemError
for that item alone."""

import json
import logging
from typing import Any, Callable

from ._types import ItemError, Output, PollResult

log = logging.getLogger("flowd_connector")

# A connection as it travels: its type and its fields as a JSON document; None for none.
WireConnection = tuple[str, bytes] | None


class Handlers:
    """A connector's manifest and handlers, checked to agree: every declared action and trigger
    has a handler and every handler is declared, so a typo fails at start rather than per call.
    A kind given as None is not checked and has no handlers: flowd_connector.testing runs one
    kind."""

    def __init__(self, manifest: dict, actions: dict[str, Callable] | None, triggers: dict[str, Callable] | None):
        if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str) or not manifest["name"]:
            raise ValueError("flowd_connector: the manifest must be a dict with a name")
        for kind, handlers in (("actions", actions), ("triggers", triggers)):
            if handlers is None:
                continue
            declared = manifest.get(kind) or {}
            if not isinstance(declared, dict) or not isinstance(handlers, dict):
                raise ValueError(f"flowd_connector: manifest {kind} and {kind} handlers must be dicts keyed by name")
            if missing := sorted(set(declared) - set(handlers)):
                raise ValueError(f"flowd_connector: {kind} {missing} are in the manifest but have no handler")
            if undeclared := sorted(set(handlers) - set(declared)):
                raise ValueError(f"flowd_connector: {kind} {undeclared} have handlers but are not in the manifest")
            if not_callable := sorted(name for name, fn in handlers.items() if not callable(fn)):
                raise ValueError(f"flowd_connector: the handlers of {kind} {not_callable} are not callable")
        try:
            self.manifest_json = json.dumps(manifest).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"flowd_connector: the manifest is not JSON: {e}") from None
        self.manifest = manifest
        self.name = manifest["name"]
        self.actions = actions or {}
        self.triggers = triggers or {}

    def execute(self, action: str, config_json: bytes, input_json: bytes, connection: WireConnection,
                log_fields: dict | None = None) -> list[tuple[str, bytes]]:
        """Runs one invocation: its outputs as (port, JSON document) pairs, or raises ItemError."""
        handler = self.actions.get(action)
        if handler is None:
            raise ItemError("unknown_action", f"connector {self.name} has no action {action!r}")
        config = decode_config(config_json)
        item = decode(input_json, None, "input")
        conn = decode_connection(connection)
        try:
            value = handler(config, item, conn)
        except ItemError:
            raise
        except Exception as e:  # a bug fails this item, never the batch
            log.exception("action failed", extra={"fields": {"action": action, **(log_fields or {})}})
            raise ItemError("panic", f"action {action} failed: {e!r}") from None
        ports = (self.manifest["actions"][action] or {}).get("ports") or []
        encoded = []
        for i, out in enumerate(outputs(value)):
            if not isinstance(out.port, str) or (out.port and out.port not in ports):
                raise ItemError("invalid_output", f"output {i}: port {out.port!r} is not declared by action {action}")
            encoded.append((out.port, encode(out.data, f"output {i}")))
        return encoded

    def poll(self, trigger: str, config_json: bytes, cursor: str, connection: WireConnection) -> tuple[list[bytes], str]:
        """Runs one poll: the new items as JSON documents and the next cursor, or raises ItemError."""
        handler = self.triggers.get(trigger)
        if handler is None:
            raise ItemError("unknown_trigger", f"connector {self.name} has no trigger {trigger!r}")
        config = decode_config(config_json)
        conn = decode_connection(connection)
        try:
            value = handler(config, cursor, conn)
        except ItemError:
            raise
        except Exception as e:
            log.exception("poll failed", extra={"fields": {"trigger": trigger}})
            raise ItemError("panic", f"trigger {trigger} failed: {e!r}") from None
        if isinstance(value, PollResult):
            items, next_cursor = value.items, value.cursor
        elif isinstance(value, tuple) and len(value) == 2:
            items, next_cursor = value
        else:
            raise ItemError("invalid_output", f"trigger {trigger} returned {type(value).__name__}: want (items, cursor) or PollResult")
        if not isinstance(items, list) or not isinstance(next_cursor, str):
            raise ItemError("invalid_output", f"trigger {trigger} returned items {type(items).__name__} and cursor "
                            f"{type(next_cursor).__name__}: want a list and a str")
        return [encode(item, f"item {i}") for i, item in enumerate(items)], next_cursor


def outputs(value: Any) -> list[Output]:
    """An action's return value as outputs: None is none, a list is one output per element (each an
    Output or data for the default port), anything else one output. An item that is itself a JSON
    array is returned as Output(array)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [v if isinstance(v, Output) else Output(v) for v in value]
    return [value if isinstance(value, Output) else Output(value)]


def decode(data: bytes, default: Any, what: str) -> Any:
    """A JSON payload; an absent or null document is the default."""
    if not data:
        return default
    try:
        value = json.loads(data)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise ItemError("invalid_json", f"{what}: {e}") from None
    return default if value is None else value


def decode_config(config_json: bytes) -> dict:
    """The node's config: a JSON object, {} when unset."""
    config = decode(config_json, {}, "config")
    if not isinstance(config, dict):
        raise ItemError("invalid_config", f"config is {type(config).__name__}: want an object")
    return config


def decode_connection(connection: WireConnection) -> dict | None:
    """The connection as handlers get it: {"type": ..., "data": {...}}, or None."""
    if connection is None:
        return None
    typ, data_json = connection
    data = decode(data_json, {}, "connection")
    if not isinstance(data, dict):
        raise ItemError("invalid_connection", f"connection data is {type(data).__name__}: want an object")
    return {"type": typ, "data": data}


def encode(value: Any, what: str) -> bytes:
    """A JSON document; NaN and infinities are not JSON, so they are refused like any unencodable value."""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ItemError("invalid_output", f"{what}: {e}") from None
