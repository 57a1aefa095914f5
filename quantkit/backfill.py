"""Fetch a time range of aggregate trades over REST (``GET /fapi/v1/aggTrades``) into the store.

The first aggregate id at or after ``since`` is found with a time window (Binance allows windows
under one hour), then pages of 1000 follow by ``fromId`` until trade time reaches ``until``.
:class:`~quantkit.rest.RestClient` keeps the requests under the exchange's weight limit.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from .config import BINANCE_REST_URL, suggest_symbol
from .errors import ConfigError, DataError
from .rest import RestClient
from .storage import TickWriter

__all__ = ["BackfillReport", "backfill", "configure_parser", "parse_when", "run"]

_HOUR_MS = 3_600_000
_PAGE = 1000
_RELATIVE_RE = re.compile(r"^\s*\d+(\.\d+)?\s*(s|sec|min|h|hours?|d|days?)\s*$")


@dataclass(frozen=True)
class BackfillReport:
    """What :func:`backfill` fetched and stored."""

    symbol: str
    #: The range asked for, ms UTC: ``since <= trade time < until``.
    since: int
    until: int
    rows_fetched: int
    rows_new: int
    first_id: int | None
    last_id: int | None
    requests: int
    #: Seconds spent waiting to stay under the exchange's weight limit.
    throttled_s: float
    seconds: float
    origin: str

    def __str__(self) -> str:
        span = (f"{pd.Timestamp(self.since, unit='ms', tz='UTC')} .. "
                f"{pd.Timestamp(self.until, unit='ms', tz='UTC')}")
        ids = f", ids {self.first_id}..{self.last_id}" if self.first_id is not None else ""
        return (f"{self.symbol} {span}: {self.rows_fetched:,} aggregate trades fetched, "
                f"{self.rows_new:,} new{ids}; {self.requests} requests in {self.seconds:.1f} s "
                f"({self.throttled_s:.1f} s waiting for the weight limit)")


def parse_when(value: Any, name: str, *, now_ms: int) -> int:
    """A time as ms UTC: ms, a datetime, an ISO string (naive = UTC) or an age like ``"2h"``.

    Raises
    ------
    ConfigError
        If ``value`` is none of these.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():  # an epoch in ms from the CLI
        return int(value)
    if isinstance(value, str) and _RELATIVE_RE.match(value):
        return now_ms - int(pd.Timedelta(value.strip()).total_seconds() * 1000)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise ConfigError(f"{name}: cannot read {value!r} as a time; give e.g. "
                          "'2024-08-08 23:55' (UTC), an epoch in ms, or an age such as '2h'")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _first_id(client: RestClient, symbol: str, since: int, until: int) -> int | None:
    """Id of the first aggregate trade with ``since <= T < until``, hour window by hour window."""
    start = since
    while start < until:
        end = min(start + _HOUR_MS, until) - 1  # Binance: the window must be under one hour
        page = client.agg_trades(symbol, start_time=start, end_time=end, limit=1)
        if page:
            return page[0].id
        start = end + 1
    return None


def _check_symbol(info: dict[str, Any], symbol: str, url: str) -> None:
    trading = {s["symbol"] for s in info.get("symbols", []) if s.get("status") == "TRADING"}
    if trading and symbol not in trading:
        raise ConfigError(f"symbol: {suggest_symbol(symbol, trading)} ({url})")


def backfill(symbol: str, since: Any, until: Any = None, *, db: str | Path,
             rest_url: str = BINANCE_REST_URL, progress: bool = True,
             client: RestClient | None = None) -> BackfillReport:
    """Fetch the aggregate trades of ``symbol`` with ``since <= trade time < until`` into ``db``.

    Parameters
    ----------
    symbol
        e.g. ``"BTCUSDT"``.
    since, until
        Range bounds: ms since the epoch, a datetime, an ISO string (naive times are UTC), or
        an age such as ``"2h"`` (before now). ``until`` defaults to the exchange's time now.
    db
        The tick store (created if missing). Stored rows are deduplicated on ``(symbol, id)``,
        so overlapping or repeated backfills add nothing twice.
    rest_url
        The REST base URL (the local exchange's ``rest_url`` in tests).
    progress
        Show a tqdm bar of the time range covered (on stderr, only when it is a terminal).
    client
        A :class:`~quantkit.rest.RestClient` to use instead of a new one (it is not closed).

    Returns
    -------
    BackfillReport
        Rows fetched and new, id range, requests made and time spent waiting for weight.

    Raises
    ------
    ConfigError
        For an unreadable time, ``until <= since``, or a symbol the exchange does not trade.
    StorageError
        If the store holds another origin (the local exchange's ``quantkitOrigin`` is
        ``"simulated"``, real Binance is ``"binance"``) or ``trade`` ids for ``symbol``.
    FeedError, RateLimitError
        If the exchange keeps failing or bans the IP.

    Notes
    -----
    Each page is its own transaction: an interrupted backfill keeps what it stored and can
    be re-run. Binance keeps about a year of aggregate trades; older ranges come back empty
    (use ``quantkit import`` with data.binance.vision archives instead). Each page costs
    weight 20; at half of Binance's 2400/min that is 60 pages (60,000 trades) a minute.
    """
    symbol = symbol.strip().upper()
    own = client is None
    rest = client if client is not None else RestClient(rest_url)
    t0 = time.perf_counter()
    throttled0, requests0 = rest.throttled_s, rest.requests
    try:
        info = rest.exchange_info()
        _check_symbol(info, symbol, rest.base_url)
        origin = str(info.get("quantkitOrigin") or "binance")
        now = rest.server_time()
        lo = parse_when(since, "since", now_ms=now)
        hi = now if until is None else parse_when(until, "until", now_ms=now)
        if hi <= lo:
            raise ConfigError(f"until ({pd.Timestamp(hi, unit='ms', tz='UTC')}) must be after "
                              f"since ({pd.Timestamp(lo, unit='ms', tz='UTC')})")
        with TickWriter(db) as writer:
            writer.claim(origin=origin, stream="aggTrade", symbols=[symbol])
            fetched, new, first, last = _pages(rest, writer, symbol, lo, hi, progress)
            report = BackfillReport(symbol, lo, hi, fetched, new, first, last,
                                    rest.requests - requests0, rest.throttled_s - throttled0,
                                    time.perf_counter() - t0, origin)
            writer.record_event("backfill", symbol, json.dumps({
                "since": lo, "until": hi, "rows_fetched": fetched, "rows_new": new,
                "first_id": first, "last_id": last, "requests": report.requests,
                "rest_url": rest.base_url}))
        return report
    finally:
        if own:
            rest.close()


def _pages(rest: RestClient, writer: TickWriter, symbol: str, lo: int, hi: int,
           progress: bool) -> tuple[int, int, int | None, int | None]:
    """Page through ``[lo, hi)``; return rows fetched, rows new, first and last id stored."""
    fetched = new = 0
    first = last = None
    next_id = _first_id(rest, symbol, lo, hi)
    with tqdm(total=round((hi - lo) / 1000, 3), unit="s", desc=f"{symbol} backfill",
              disable=None if progress else True, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of trades [{elapsed}<{remaining}"
                         "{postfix}]") as bar:
        covered = lo
        while next_id is not None:
            page = rest.agg_trades(symbol, from_id=next_id, limit=_PAGE)
            rows = [t for t in page if lo <= t.trade_time < hi]
            if rows:
                new += writer.insert(rows)
                fetched += len(rows)
                first = rows[0].id if first is None else first
                last = rows[-1].id
            reached = min(page[-1].trade_time, hi) if page else hi
            bar.update(round(max(0, reached - covered) / 1000, 3))
            bar.set_postfix(trades=f"{fetched:,}", refresh=False)
            covered = max(covered, reached)
            # Done when time passes `until`, or the exchange has nothing newer yet.
            if not page or page[-1].trade_time >= hi or len(page) < _PAGE:
                break
            next_id = page[-1].id + 1
        bar.n = bar.total  # the whole range is covered, even its quiet tail
        bar.refresh()
    return fetched, new, first, last


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``quantkit backfill``."""
    parser.add_argument("symbol", metavar="SYMBOL", help="e.g. BTCUSDT")
    parser.add_argument("--since", required=True, metavar="WHEN",
                        help="start (UTC), e.g. '2024-08-08 23:00', an epoch in ms, or '2h' ago")
    parser.add_argument("--until", default=None, metavar="WHEN",
                        help="end, excluded (default: now)")
    parser.add_argument("--db", default=None,
                        help="tick store (default: $QUANTKIT_DB or ~/.quantkit/binance-futures.db)")
    parser.add_argument("--rest-url", default=None,
                        help="REST base URL (default: $QUANTKIT_REST_URL or Binance's)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    """``quantkit backfill SYMBOL --since WHEN [--until WHEN] [--db PATH] [--rest-url URL]``."""
    from .config import Settings

    settings = Settings.load(db=args.db, rest_url=args.rest_url)
    report = backfill(args.symbol, args.since, args.until, db=settings.db,
                      rest_url=settings.rest_url, progress=not args.no_progress)
    print(report)
    if report.rows_fetched == 0:
        raise DataError(f"no aggregate trades of {report.symbol} in that range on "
                        f"{settings.rest_url} (Binance keeps about a year; for older "
                        "history use `quantkit import` with data.binance.vision archives)")
    return 0
