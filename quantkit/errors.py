"""The exception tree of quantkit: one root, one subclass per kind of failure.

Lower-level errors (``sqlite3``, sockets, HTTP) are translated at the boundary into
these, so a user only ever has to catch :class:`QuantkitError`.
"""
from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "FeedError",
    "QuantkitError",
    "RateLimitError",
    "StorageError",
]


class QuantkitError(Exception):
    """Base class of every error quantkit raises on purpose."""


class ConfigError(QuantkitError, ValueError):
    """A setting (symbol, URL, path, stream kind) is invalid."""


class DataError(QuantkitError, ValueError):
    """Input data is unusable: malformed, empty, misaligned or too short."""


class StorageError(QuantkitError):
    """The tick store cannot be opened, read or written as asked."""


class FeedError(QuantkitError):
    """The exchange connection or its REST API failed in a way that needs attention."""


class RateLimitError(FeedError):
    """The exchange answered 429/418: we must wait before sending more requests."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
