"""flowd_connector: write a flowd connector in Python.

Declare a manifest, write handlers, call serve::

    from flowd_connector import ItemError, serve

    def greet(config, input, connection):
        return {"message": f"{config.get('greeting', 'Hello')}, {input['name']}!"}

    if __name__ == "__main__":
        serve(MANIFEST, {"greet": greet})

The connector then runs as an out-of-process plugin of the flowd runners (hashicorp/go-plugin's
handshake, gRPC with mutual TLS) and prints its manifest with `describe`. flowd_connector.testing
runs handlers in process for unit tests.
"""

import sys
from typing import Callable

from ._types import ItemError, Output, PollResult

__all__ = ["ItemError", "Output", "PollResult", "serve"]

# Shown, and pickled, under the name they are imported by.
for _cls in (ItemError, Output, PollResult):
    _cls.__module__ = __name__
del _cls


def serve(manifest: dict, actions: dict[str, Callable], triggers: dict[str, Callable] | None = None):
    """Runs the connector and exits: `describe` as the only argument prints the manifest as JSON;
    no argument serves the flowd host, which starts the connector.

    manifest is the connector's manifest (schemas/connector.schema.json); actions and triggers map
    the names it declares to handlers, every one of them and no other.

    An action handler is called as handler(config, input, connection): config is the node's config
    (a dict, {} when unset), input the item (any JSON value), connection None or {"type": ...,
    "data": {...}}. It returns one output's data (a dict or any JSON value), a list with one
    element per output, an Output for a port other than the default, or None for no output.

    A trigger handler is called as handler(config, cursor, connection), cursor "" on the first
    poll, and returns (items, cursor) or a PollResult: the new items and the cursor to resume from.

    Either raises ItemError for a failure of that call alone; any other exception is a permanent
    "panic" error for that call, logged with its traceback. Logs go to stderr through the logging
    module (records' extra={"fields": {...}} become attributes); stdout belongs to the handshake.
    """
    from ._plugin import main

    sys.exit(main(manifest, actions, triggers, sys.argv[1:]))
