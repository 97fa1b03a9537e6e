"""Runs handlers in process the way a served connector runs them, for unit tests: config, input
and connection travel as JSON, a handler's exception becomes the ItemError the host would get
(raised here), and outputs come back decoded from JSON, as the host sees them. Schemas are not
checked: the host does that before a call reaches the connector."""

import json
from typing import Any, Callable

from ._dispatch import Handlers, decode
from ._types import ItemError, Output, PollResult

__all__ = ["invoke", "poll"]


def invoke(manifest: dict, actions: dict[str, Callable], action: str, config: dict | None = None,
           input: Any = None, connection: dict | None = None) -> list[Output]:
    """Runs action with config and input, as serve would with the same manifest and actions: the
    outputs, or raises ItemError."""
    handlers = Handlers(manifest, actions, None)
    outs = handlers.execute(action, wire(config, "config"), wire(input, "input"), wire_connection(connection))
    return [Output(decode(data, None, "output"), port) for port, data in outs]


def poll(manifest: dict, triggers: dict[str, Callable], trigger: str, config: dict | None = None,
         cursor: str = "", connection: dict | None = None) -> PollResult:
    """Polls trigger with config from cursor, as serve would with the same manifest and triggers:
    the new items and the next cursor, or raises ItemError."""
    handlers = Handlers(manifest, None, triggers)
    items, next_cursor = handlers.poll(trigger, wire(config, "config"), cursor, wire_connection(connection))
    return PollResult([decode(item, None, "item") for item in items], next_cursor)


def wire(value: Any, what: str) -> bytes:
    """value as the host sends it; None as an absent document."""
    if value is None:
        return b""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ItemError(f"invalid_{what}", f"{what} is not JSON: {e}") from None


def wire_connection(connection: dict | None):
    if connection is None:
        return None
    return connection.get("type", ""), wire(connection.get("data"), "connection")
