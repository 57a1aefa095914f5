"""A local exchange that speaks Binance USD-M futures' protocol, for the demo, tests and benchmarks.

``LocalExchange`` serves routed WebSocket streams and the REST endpoints ingestion uses on one
127.0.0.1 port, with synthetic cointegrated trades or replayed recordings, and faults on demand.
"""
from __future__ import annotations

from .server import ExchangeProcess, LocalExchange

__all__ = ["ExchangeProcess", "LocalExchange"]
