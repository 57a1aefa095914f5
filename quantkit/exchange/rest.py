"""The REST side of the local exchange: Binance USD-M endpoints with request-weight limits.

Endpoints (weights as Binance documents them): ``GET /fapi/v1/aggTrades`` (20),
``GET /fapi/v1/historicalTrades`` (20), ``GET /fapi/v1/klines`` (1-10 by limit),
``GET /fapi/v1/exchangeInfo`` (1), ``GET /fapi/v1/time`` (1). Every response carries ``X-MBX-USED-WEIGHT-1M``. Going over ``weight_limit`` in a minute
answers 429 with ``Retry-After``; asking again while still over earns a 418 ban. The admin
endpoints under ``/quantkit/`` (faults, status) are free and never limited.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from tornado.web import RequestHandler

from .tape import AGG, TRADE, Tape, format_scaled

__all__ = ["RestState", "rest_routes"]

_HOUR_MS = 3_600_000
_MAX_BAN_S = 3 * 24 * 3600.0


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


class RestState:
    """Request-weight accounting and what the REST endpoints serve.

    Parameters
    ----------
    tapes
        ``(symbol, kind) -> Tape`` for every listed symbol.
    exchange_info
        Builds the ``exchangeInfo`` body (without ``serverTime``).
    weight_limit
        Request weight allowed per minute (Binance: 2400).
    ban_seconds
        Length of the first 418 ban; it doubles with each further ban, up to 3 days.
    """

    def __init__(self, tapes: dict[tuple[str, str], Tape], exchange_info: Callable[[], dict],
                 *, weight_limit: int, ban_seconds: float) -> None:
        self.tapes = tapes
        self.exchange_info = exchange_info
        self.weight_limit = weight_limit
        self.ban_seconds = ban_seconds
        self.window = -1
        self.used = 0
        self.warned = False  # a 429 was sent in this window: the next request over earns a ban
        self.banned_until = 0.0
        self.bans = 0
        self.forced = 0  # rate_limit(n): answer 429 to the next n calls
        self.forced_retry_after = 1
        self.requests = 0

    def admit(self, weight: int, ip: str) -> tuple[int, dict[str, Any] | None, float]:
        """``(status, error body or None, retry_after)`` for a request of ``weight``."""
        now = time.time()
        window = int(now // 60)
        if window != self.window:
            self.window, self.used, self.warned = window, 0, False
        self.requests += 1
        if now < self.banned_until:
            return 418, _banned(ip, self.banned_until), self.banned_until - now
        if self.forced > 0:
            self.forced -= 1
            return 429, _too_many(ip, self.weight_limit), self.forced_retry_after
        if self.used + weight > self.weight_limit:
            if self.warned:
                self.banned_until = now + min(self.ban_seconds * 2 ** self.bans, _MAX_BAN_S)
                self.bans += 1
                return 418, _banned(ip, self.banned_until), self.banned_until - now
            self.warned = True
            return 429, _too_many(ip, self.weight_limit), (window + 1) * 60 - now
        self.used += weight
        return 200, None, 0.0


def _too_many(ip: str, limit: int) -> dict[str, Any]:
    return {"code": -1003, "msg": f"Too many requests; current limit of IP({ip}) request weight "
            f"per minute is {limit}. Please use WebSocket Streams for live updates to avoid "
            "polling the API."}


def _banned(ip: str, until: float) -> dict[str, Any]:
    return {"code": -1003, "msg": f"Way too many requests; IP({ip}) banned until "
            f"{int(until * 1000)}. Please use WebSocket Streams for live updates to avoid bans."}


class _Endpoint(RequestHandler):
    WEIGHT = 1

    def initialize(self, state: RestState) -> None:
        self.state = state

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def prepare(self) -> None:
        status, body, retry_after = self.state.admit(self.WEIGHT, self.request.remote_ip or "")
        self.set_header("X-MBX-USED-WEIGHT-1M", str(self.state.used))
        if status != 200:
            self.set_status(status)
            self.set_header("Retry-After", str(max(1, math.ceil(retry_after))))
            self.finish(orjson.dumps(body))

    def send(self, obj: Any) -> None:
        self.finish(orjson.dumps(obj))

    def fail(self, exc: _BadRequest) -> None:
        self.set_status(exc.status)
        self.finish(orjson.dumps({"code": exc.code, "msg": exc.msg}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(orjson.dumps({"code": -1000, "msg": "An unknown error occurred while "
                                  f"processing the request (HTTP {status_code})."}))

    def int_arg(self, name: str) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise _BadRequest(-1100, f"Illegal characters found in parameter '{name}'; legal "
                              "range is '^[0-9]{1,20}$'.")
        return int(raw)

    def tape(self, kind: str) -> Tape:
        symbol = self.get_query_argument("symbol", None)
        if not symbol:
            raise _BadRequest(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                              "or malformed.")
        tape = self.state.tapes.get((symbol, kind))
        if tape is None:
            raise _BadRequest(-1121, "Invalid symbol.")
        return tape

    def limit(self, default: int, maximum: int) -> int:
        limit = self.int_arg("limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        return limit


class AggTradesHandler(_Endpoint):
    """``GET /fapi/v1/aggTrades``: symbol, fromId | startTime/endTime, limit (500, max 1000)."""

    WEIGHT = 20

    def get(self) -> None:
        try:
            tape = self.tape(AGG)
            limit = self.limit(500, 1000)
            from_id = self.int_arg("fromId")
            start, end = self.int_arg("startTime"), self.int_arg("endTime")
            if from_id is not None and (start is not None or end is not None):
                raise _BadRequest(-1128, "Combination of optional parameters invalid.")
            if start is not None and end is not None:
                if end < start:
                    raise _BadRequest(-1128, "Combination of optional parameters invalid.")
                if end - start >= _HOUR_MS:
                    raise _BadRequest(-1127, "More than 1 hours between startTime and endTime.")
            elif start is not None:
                end = start + _HOUR_MS - 1
            positions = tape.select(from_id=from_id, start_time=start, end_time=end, limit=limit)
        except _BadRequest as exc:
            self.fail(exc)
            return
        # a: aggregate id, p/q: price/qty strings, f/l: first/last trade id, T: time, m: maker
        self.send([{"a": a, "p": p, "q": q, "f": f, "l": l, "T": t, "m": m}
                   for a, _e, t, p, q, f, l, m in tape.rows(positions)])


class HistoricalTradesHandler(_Endpoint):
    """``GET /fapi/v1/historicalTrades``: symbol, fromId, limit (100, max 500)."""

    WEIGHT = 20

    def get(self) -> None:
        try:
            tape = self.tape(TRADE)
            limit = self.limit(100, 500)
            positions = tape.select(from_id=self.int_arg("fromId"), limit=limit)
        except _BadRequest as exc:
            self.fail(exc)
            return
        qd = tape.price_decimals + tape.qty_decimals
        self.send([{"id": i, "price": p, "qty": q, "quoteQty": _quote(p, q, qd), "time": t,
                    "isBuyerMaker": m} for i, _e, t, p, q, _f, _l, m in tape.rows(positions)])


def _quote(price: str, qty: str, decimals: int) -> str:
    # Exact product of the two decimal strings, printed without trailing zeros.
    scaled = int(price.replace(".", "")) * int(qty.replace(".", ""))
    if decimals == 0:
        return str(scaled)
    text = f"{scaled // 10 ** decimals}.{scaled % 10 ** decimals:0{decimals}d}".rstrip("0")
    return text.rstrip(".")


_INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
                 "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
                 "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000}


class KlinesHandler(_Endpoint):
    """``GET /fapi/v1/klines``: bars of the trades this exchange served (symbol, interval,
    startTime, endTime, limit 500, max 1500); the last bar is the one still open.

    Weight by limit as Binance documents: 1 (< 100), 2 (< 500), 5 (<= 1000), 10 (more).
    """

    def prepare(self) -> None:
        limit = self.get_query_argument("limit", "500")
        n = int(limit) if limit.isdigit() else 500
        self.WEIGHT = 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10
        super().prepare()

    def get(self) -> None:
        try:
            tape = self.tape(AGG)
            if len(tape) == 0:
                tape = self.tape(TRADE)  # trade-only replays: bars from individual trades
            interval = self.get_query_argument("interval", None)
            if interval not in _INTERVALS_MS:
                raise _BadRequest(-1120, "Invalid interval.")
            limit = self.limit(500, 1500)
            start, end = self.int_arg("startTime"), self.int_arg("endTime")
        except _BadRequest as exc:
            self.fail(exc)
            return
        self.send(_klines(tape, _INTERVALS_MS[interval], start, end, limit))


def _klines(tape: Tape, step: int, start: int | None, end: int | None,
            limit: int) -> list[list[Any]]:
    if len(tape) == 0:
        return []
    newest = int(tape.columns(slice(-1, None), ("trade_time",))[0][0])
    if start is None:
        last_open = (min(end, newest) if end is not None else newest) // step * step
        start = last_open - (limit - 1) * step
    else:
        start = start // step * step
    stop = start + limit * step - 1
    if end is not None:
        stop = min(stop, end)
    t, p, q, f, l, m = tape.columns(tape.time_span(start, stop), (
        "trade_time", "price", "qty", "first_id", "last_id", "maker"))
    if len(t) == 0:
        return []
    pd, qd = tape.price_decimals, tape.qty_decimals
    bar = t // step
    cuts = np.flatnonzero(np.diff(bar)) + 1
    starts, stops = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(t)]))
    quote = p * q  # exact: scaled by 10**(pd + qd)
    count = l - f + 1
    taker_buy = ~m  # the buyer was the taker

    def total(values: np.ndarray, lo: int, hi: int, decimals: int) -> str:
        return format_scaled(int(values[lo:hi].sum()), decimals)

    out = []
    for lo, hi in zip(starts.tolist(), stops.tolist()):
        open_time = int(bar[lo]) * step
        out.append([open_time, format_scaled(int(p[lo]), pd),
                    format_scaled(int(p[lo:hi].max()), pd),
                    format_scaled(int(p[lo:hi].min()), pd),
                    format_scaled(int(p[hi - 1]), pd), total(q, lo, hi, qd),
                    open_time + step - 1, total(quote, lo, hi, pd + qd),
                    int(count[lo:hi].sum()), total(q * taker_buy, lo, hi, qd),
                    total(quote * taker_buy, lo, hi, pd + qd), "0"])
    return out


class ExchangeInfoHandler(_Endpoint):
    """``GET /fapi/v1/exchangeInfo``."""

    def get(self) -> None:
        info = self.state.exchange_info()
        info["serverTime"] = int(time.time() * 1000)
        self.send(info)


class TimeHandler(_Endpoint):
    """``GET /fapi/v1/time``."""

    def get(self) -> None:
        self.send({"serverTime": int(time.time() * 1000)})


class NotFoundHandler(_Endpoint):
    """Unknown ``/fapi/...`` paths: 404 as Binance answers them."""

    def get(self, *_: Any) -> None:
        self.set_status(404)
        self.send({"code": -5000, "msg": "Path not found"})


def rest_routes(state: RestState) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes of the REST endpoints."""
    kw = {"state": state}
    return [
        (r"/fapi/v1/aggTrades", AggTradesHandler, kw),
        (r"/fapi/v1/historicalTrades", HistoricalTradesHandler, kw),
        (r"/fapi/v1/exchangeInfo", ExchangeInfoHandler, kw),
        (r"/fapi/v1/time", TimeHandler, kw),
        (r"/fapi/v1/klines", KlinesHandler, kw),
        (r"/fapi/(.*)", NotFoundHandler, kw),
    ]
