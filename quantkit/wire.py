"""Binance USD-M futures wire format: pure parsers from messages to :class:`Trade` records.

Binance's one-letter field names appear only in this module. Parsing never does I/O: the
ingestor decodes a frame, calls :func:`parse_message`, and decides what to do with the result.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from .errors import DataError

__all__ = [
    "MalformedMessage",
    "Trade",
    "parse_message",
    "parse_rest_agg_trade",
    "parse_rest_trade",
    "trade_to_agg_payload",
    "trade_to_trade_payload",
]


class MalformedMessage(DataError):
    """A message that is not valid JSON or lacks the fields of its kind. Counted and logged."""


class Trade(NamedTuple):
    """One trade (or aggregate trade) as stored; field order is the store's column order."""

    symbol: str
    #: Aggregate trade id ``a`` for aggTrade, trade id ``t`` for trade. Consecutive per symbol.
    id: int
    #: Trade time ``T`` in ms UTC: bars are keyed on this, never on receive time.
    trade_time: int
    price: float
    qty: float
    #: First and last individual trade ids ``f``/``l`` (both ``t`` for a single trade).
    first_id: int
    last_id: int
    #: ``m``: True when the buyer was the maker, i.e. the taker sold.
    is_buyer_maker: bool
    #: Local receive time in ms UTC; None for trades that came from REST or an archive.
    recv_time: int | None


def _positive(value: Any, name: str) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def _parse_payload(data: dict[str, Any], recv_time: int | None) -> Trade | None:
    kind = data.get("e")
    if kind == "aggTrade":
        # a: aggregate id, f/l: first/last trade id, T: trade time, m: buyer is maker
        first_id, last_id = int(data["f"]), int(data["l"])
        if last_id < first_id:
            raise ValueError(f"last trade id l={last_id} is below first f={first_id}")
        trade_id = int(data["a"])
    elif kind == "trade":
        # t: trade id; X: order type ("MARKET"; "INSURANCE_FUND"/"ADL" are special trades)
        trade_id = first_id = last_id = int(data["t"])
    else:
        return None
    maker = data["m"]
    if not isinstance(maker, bool):
        raise ValueError(f"m must be true/false, got {maker!r}")
    symbol = data["s"]
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"s must be a symbol name, got {symbol!r}")
    return Trade(
        symbol,
        trade_id,
        int(data["T"]),
        _positive(data["p"], "p"),
        _positive(data["q"], "q"),
        first_id,
        last_id,
        maker,
        recv_time,
    )


def parse_message(raw: bytes | str, recv_time: int | None = None) -> Trade | None:
    """Parse one WebSocket message from a raw (``/ws``) or combined (``/stream``) connection.

    Parameters
    ----------
    raw
        The frame's payload.
    recv_time
        Local receive time in ms UTC, kept beside the exchange's trade time.

    Returns
    -------
    Trade or None
        ``None`` for messages that are well-formed but carry no trade (subscription replies
        such as ``{"result": null, "id": 1}``, other event kinds).

    Raises
    ------
    MalformedMessage
        For anything that is not JSON, or a trade message with missing or invalid fields.
        Unknown extra fields are ignored: Binance adds fields from time to time.
    """
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}: {bytes(raw[:80]) if isinstance(raw, (bytes, bytearray, memoryview)) else raw[:80]!r}") from None
    if not isinstance(msg, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(msg).__name__}")
    data = msg.get("data", msg)  # combined streams wrap the payload as {"stream", "data"}
    if not isinstance(data, dict):
        raise MalformedMessage(f"'data' is not an object: {str(data)[:80]!r}")
    try:
        return _parse_payload(data, recv_time)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise MalformedMessage(f"bad {data.get('e')!r} message: {detail}") from None


def parse_rest_agg_trade(symbol: str, row: dict[str, Any]) -> Trade:
    """One row of ``GET /fapi/v1/aggTrades`` (same letters as the stream, without ``e``/``s``)."""
    try:
        return Trade(symbol, int(row["a"]), int(row["T"]), _positive(row["p"], "p"),
                     _positive(row["q"], "q"), int(row["f"]), int(row["l"]), bool(row["m"]), None)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad aggTrades row {row!r}: {exc}") from None


def parse_rest_trade(symbol: str, row: dict[str, Any]) -> Trade:
    """One row of ``GET /fapi/v1/historicalTrades`` (``id, price, qty, time, isBuyerMaker``)."""
    try:
        trade_id = int(row["id"])
        return Trade(symbol, trade_id, int(row["time"]), _positive(row["price"], "price"),
                     _positive(row["qty"], "qty"), trade_id, trade_id, bool(row["isBuyerMaker"]),
                     None)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad historicalTrades row {row!r}: {exc}") from None


def trade_to_agg_payload(trade: Trade, event_time: int | None = None) -> dict[str, Any]:
    """The ``aggTrade`` stream payload Binance would send for ``trade`` (used by the local exchange)."""
    return {"e": "aggTrade", "E": event_time or trade.trade_time, "a": trade.id, "s": trade.symbol,
            "p": _fmt(trade.price), "q": _fmt(trade.qty), "f": trade.first_id, "l": trade.last_id,
            "T": trade.trade_time, "m": trade.is_buyer_maker}


def trade_to_trade_payload(trade: Trade, event_time: int | None = None) -> dict[str, Any]:
    """The ``trade`` stream payload Binance would send for ``trade`` (used by the local exchange)."""
    return {"e": "trade", "E": event_time or trade.trade_time, "T": trade.trade_time,
            "s": trade.symbol, "t": trade.id, "p": _fmt(trade.price), "q": _fmt(trade.qty),
            "X": "MARKET", "m": trade.is_buyer_maker}


def _fmt(x: float) -> str:
    # repr() is the shortest string that round-trips to the same float: "61800.3" parses back
    # to exactly the stored value, which is what the replay tests compare.
    return repr(float(x))
