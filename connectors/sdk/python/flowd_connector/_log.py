"""Logging as the host reads it: JSON lines on stderr with hclog's key names, which go-plugin's
host parses and re-logs with their level under the connector's name."""

import datetime
import json
import logging
import os
import sys

LEVEL_ENV = "FLOWD_LOG_LEVEL"


class HCLogFormatter(logging.Formatter):
    """One JSON object per record: @level, @message, @timestamp, plus the record's `fields`
    (logging's extra={"fields": {...}}) as attributes."""

    def format(self, record):
        ts = datetime.datetime.fromtimestamp(record.created).astimezone()
        line = {
            "@level": {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower()),
            "@message": record.getMessage(),
            # The exact layout go-plugin parses; any other makes it log the raw line.
            "@timestamp": ts.isoformat(timespec="microseconds"),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging():
    """Routes the root logger to stderr in hclog's shape, at FLOWD_LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HCLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    root.setLevel(level if level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR") else "INFO")
