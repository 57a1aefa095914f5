"""A small client for the Binance USD-M futures REST endpoints ingestion needs.

It keeps one HTTP connection alive, reads ``X-MBX-USED-WEIGHT-1M`` from every response and
sleeps rather than exceed its share of the per-minute weight limit, honours ``Retry-After`` on a
429, and stops at once on a 418 (an IP ban): ignoring 429s is how a client earns one.
"""
from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from .errors import ConfigError, FeedError, RateLimitError
from .wire import Trade, parse_rest_agg_trade, parse_rest_trade

__all__ = ["RestClient", "WEIGHTS"]

log = logging.getLogger(__name__)

#: Request weight of each endpoint, as Binance documents them.
WEIGHTS = {"/fapi/v1/aggTrades": 20, "/fapi/v1/historicalTrades": 20,
           "/fapi/v1/exchangeInfo": 1, "/fapi/v1/time": 1}
_DEFAULT_WEIGHT_LIMIT = 2400


class RestClient:
    """Binance futures REST client with weight accounting.

    Parameters
    ----------
    base_url
        Scheme and host[:port], e.g. ``https://fapi.binance.com``.
    weight_budget
        Share of the per-minute weight limit this client may use (the rest is left for the
        user's other tools on the same IP).
    timeout
        Seconds per request.
    sleep
        Injected for tests; defaults to :func:`time.sleep`.
    """

    def __init__(self, base_url: str, *, weight_budget: float = 0.5, timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"rest_url: {base_url!r} is not an http(s) base URL")
        self.base_url = base_url
        self._parts = parts
        self._timeout = timeout
        self._sleep = sleep
        self._budget = weight_budget
        self.weight_limit = _DEFAULT_WEIGHT_LIMIT
        self.used_weight = 0
        self._minute = 0
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.throttled_s = 0.0

    # -- transport -------------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (http.client.HTTPSConnection if self._parts.scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(self._parts.hostname, self._parts.port, timeout=self._timeout)
        return self._conn

    def _wait_for_weight(self, weight: int) -> None:
        minute = int(time.time() // 60)
        if minute != self._minute:  # Binance's weight window is the calendar minute
            self._minute, self.used_weight = minute, 0
        if self.used_weight + weight > self._budget * self.weight_limit:
            pause = 60 - time.time() % 60 + 0.05
            log.info("REST weight %d/%d used this minute: pausing %.1f s",
                     self.used_weight, self.weight_limit, pause)
            self.throttled_s += pause
            self._sleep(pause)
            self._minute, self.used_weight = int(time.time() // 60), 0

    def get(self, path: str, params: dict[str, Any] | None = None, *, attempts: int = 4) -> Any:
        """GET ``path`` and return the decoded JSON, retrying transient failures.

        Raises
        ------
        RateLimitError
            On a 418 (banned), or a 429 that persists over ``attempts``.
        FeedError
            On an error answer from the exchange or a connection that keeps failing.
        """
        weight = WEIGHTS.get(path, 1)
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{path}?{query}" if query else path
        with self._lock:
            for attempt in range(attempts):
                self._wait_for_weight(weight)
                try:
                    conn = self._connection()
                    conn.request("GET", url, headers={"Accept": "application/json"})
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.close()
                    if attempt == attempts - 1:
                        raise FeedError(f"GET {self.base_url}{url} failed: {exc}") from None
                    self._sleep(min(0.25 * 2 ** attempt, 5.0))
                    continue
                self.requests += 1
                used = resp.getheader("X-MBX-USED-WEIGHT-1M")
                self.used_weight = int(used) if used and used.isdigit() else self.used_weight + weight
                if resp.status == 200:
                    return orjson.loads(body)
                retry_after = float(resp.getheader("Retry-After") or 60)
                if resp.status == 418:
                    raise RateLimitError(
                        f"the exchange banned this IP for {retry_after:.0f} s (HTTP 418): "
                        "no more requests until then", retry_after)
                if resp.status == 429:
                    log.warning("HTTP 429 from %s: backing off %.1f s", path, retry_after)
                    if attempt == attempts - 1:
                        raise RateLimitError(f"rate limited (HTTP 429) on {path}", retry_after)
                    self.throttled_s += retry_after
                    self._sleep(retry_after)
                    continue
                raise self._error(resp.status, body, url)
        raise FeedError(f"GET {url}: gave up after {attempts} attempts")  # pragma: no cover

    def _error(self, status: int, body: bytes, url: str) -> Exception:
        try:
            err = orjson.loads(body)
            code, msg = err.get("code"), err.get("msg")
        except (orjson.JSONDecodeError, AttributeError):
            code, msg = None, body[:200].decode(errors="replace")
        if code == -1121:
            return ConfigError(f"the exchange says {msg!r} for {url}: check the symbol")
        return FeedError(f"GET {self.base_url}{url} answered HTTP {status}: {code} {msg}")

    # -- endpoints ---------------------------------------------------------------------------
    def exchange_info(self) -> dict[str, Any]:
        """``GET /fapi/v1/exchangeInfo``; also learns the REQUEST_WEIGHT limit from it."""
        info = self.get("/fapi/v1/exchangeInfo")
        for limit in info.get("rateLimits", []):
            if limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == "MINUTE":
                self.weight_limit = int(limit["limit"]) // max(int(limit.get("intervalNum", 1)), 1)
        return info

    def symbols(self) -> set[str]:
        """Symbols whose status is ``TRADING``."""
        return {s["symbol"] for s in self.exchange_info().get("symbols", [])
                if s.get("status") == "TRADING"}

    def server_time(self) -> int:
        """``GET /fapi/v1/time`` in ms UTC."""
        return int(self.get("/fapi/v1/time")["serverTime"])

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_time: int | None = None,
                   end_time: int | None = None, limit: int = 1000) -> list[Trade]:
        """``GET /fapi/v1/aggTrades``: ascending aggregate trades from ``from_id`` or in a time window.

        Binance takes either ``from_id`` or a window of ``start_time``/``end_time`` under one
        hour, not both; at most 1000 rows per call (weight 20).
        """
        if from_id is not None and (start_time is not None or end_time is not None):
            raise ConfigError("agg_trades: give from_id or a time window, not both")
        rows = self.get("/fapi/v1/aggTrades", {"symbol": symbol, "fromId": from_id,
                                               "startTime": start_time, "endTime": end_time,
                                               "limit": min(int(limit), 1000)})
        return [parse_rest_agg_trade(symbol, r) for r in rows]

    def historical_trades(self, symbol: str, *, from_id: int, limit: int = 500) -> list[Trade]:
        """``GET /fapi/v1/historicalTrades``: individual trades from ``from_id`` (for ``trade`` streams)."""
        rows = self.get("/fapi/v1/historicalTrades", {"symbol": symbol, "fromId": from_id,
                                                      "limit": min(int(limit), 500)})
        return [parse_rest_trade(symbol, r) for r in rows]

    def fetch_range(self, symbol: str, stream: str, from_id: int, to_id: int) -> list[Trade]:
        """Every trade with ``from_id <= id <= to_id``, paging as needed (for gap backfill)."""
        out: list[Trade] = []
        next_id = from_id
        while next_id <= to_id:
            if stream == "aggTrade":
                page = self.agg_trades(symbol, from_id=next_id, limit=min(1000, to_id - next_id + 1))
            else:
                page = self.historical_trades(symbol, from_id=next_id,
                                              limit=min(500, to_id - next_id + 1))
            page = [t for t in page if next_id <= t.id <= to_id]
            if not page:
                break  # the exchange has nothing more (history expired, or ids never issued)
            out.extend(page)
            next_id = page[-1].id + 1
        return out
