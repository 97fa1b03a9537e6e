"""What handlers raise and return."""

from dataclasses import dataclass
from typing import Any


class ItemError(Exception):
    """A failed invocation or poll, reported in its own result with a code: the rest of the batch
    is unaffected. Permanent unless retryable; retry_after_ms is the wait the called system asked
    for (an HTTP Retry-After, a rate limit's reset), 0 for none, and matters only when retryable."""

    def __init__(self, code: str, message: str, retryable: bool = False, retry_after_ms: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = bool(retryable)
        self.retry_after_ms = max(0, int(retry_after_ms))

    def __str__(self):
        return f"{self.code}: {self.message}"

    def __repr__(self):
        return (
            f"ItemError({self.code!r}, {self.message!r}, retryable={self.retryable!r}, "
            f"retry_after_ms={self.retry_after_ms!r})"
        )


@dataclass(frozen=True)
class Output:
    """One item an action emits: data, any JSON value, on port. "" is the default output; any
    other port must be listed in the action's "ports" in the manifest."""

    data: Any
    port: str = ""


@dataclass(frozen=True)
class PollResult:
    """What a poll found: the new items (each any JSON value) and the cursor to resume from."""

    items: list
    cursor: str
