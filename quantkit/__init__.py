"""quantkit: a Jupyter-native quant analytics workbench for Binance USD-M futures.

The public surface: settings, the tick store, ingestion, analytics and the errors.
"""
from __future__ import annotations

from . import analytics
from .analytics import indicator
from .config import Settings
from .errors import (
    ConfigError,
    DataError,
    FeedError,
    QuantkitError,
    RateLimitError,
    StorageError,
)
from .ingest import Feed, Ingestor, start
from .storage import TickStore

__all__ = [
    "ConfigError",
    "DataError",
    "Feed",
    "FeedError",
    "Ingestor",
    "QuantkitError",
    "RateLimitError",
    "Settings",
    "StorageError",
    "TickStore",
    "analytics",
    "indicator",
    "start",
]

__version__ = "0.1.0"
