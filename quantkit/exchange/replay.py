"""Recorded trades for the local exchange to replay: hftbacktest, cryptofeed and Binance CSVs.

:func:`load_recording` reads any mix of these files into one :class:`Recording`: events in
release order, with prices and quantities as scaled integers that print back to the recorded
strings' values, and the recorded ids, sides and times untouched.
"""
from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ..errors import ConfigError, DataError
from .tape import AGG, KINDS, TRADE, Events

__all__ = ["Recording", "load_recording"]

_HFTBACKTEST = re.compile(rb"^\d+ \{")
_CRYPTOFEED = re.compile(rb"^\d+(\.\d+)?: \{")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")

#: (symbol, kind, id, event_time, trade_time, price, qty, first_id, last_id, maker)
_Row = tuple[str, str, int, int, int, str, str, int, int, bool]


@dataclass(frozen=True)
class Recording:
    """Trades read from recorded files, ready to replay."""

    symbols: list[str]  # stream order: Events.stream // 2 indexes this
    price_decimals: dict[str, int]
    qty_decimals: dict[str, int]
    events: Events  # in release order
    release_ms: np.ndarray  # pacing clock: trade time, made non-decreasing per stream

    def kinds(self, symbol: str) -> set[str]:
        """Stream kinds that carry data for ``symbol`` (``aggTrade``, ``trade``)."""
        i = self.symbols.index(symbol)
        present = np.unique(self.events.stream[self.events.stream // 2 == i]) % 2
        return {KINDS[int(k)] for k in present}


def load_recording(paths: Iterable[str | Path]) -> Recording:
    """Read recorded trade files into one :class:`Recording`.

    Parameters
    ----------
    paths
        Files in any of these formats, plain, ``.gz`` or (CSV) ``.zip``:
        hftbacktest (``<recv_ns> <combined-stream JSON>`` lines), cryptofeed recordings
        (``<epoch_s>: <JSON>`` lines after a URL line), data.binance.vision ``aggTrades``
        (7 columns) or ``trades`` (6 columns) CSVs with or without a header row, named
        ``SYMBOL-...`` so the symbol can be read from the name. Messages other than
        ``aggTrade``/``trade`` (depth, bookTicker, kline, REST snapshots) are skipped.

    Returns
    -------
    Recording

    Raises
    ------
    ConfigError
        A file is missing, or a CSV name does not start with its symbol.
    DataError
        A file holds no trades or a row cannot be read.
    """
    rows: list[_Row] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"replay file {str(path)!r} not found: pass existing files")
        before = len(rows)
        rows.extend(_read_file(path))
        if len(rows) == before:
            raise DataError(f"replay file {str(path)!r} holds no aggTrade or trade messages")
    if not rows:
        raise ConfigError("replay mode needs files: pass files=[...] (or --files)")
    return _build(rows)


def _lines(path: Path) -> Iterator[bytes]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if not names:
                raise DataError(f"{path}: the zip holds no .csv file")
            with zf.open(names[0]) as fh:
                yield from io.BufferedReader(fh)  # type: ignore[arg-type]
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        yield from fh


def _read_file(path: Path) -> Iterator[_Row]:
    lines = _lines(path)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if _HFTBACKTEST.match(line) or _CRYPTOFEED.match(line) or line.startswith(b"wss://"):
            yield from _read_json_lines(path, [line], lines)
        else:
            yield from _read_csv(path, [line], lines)
        return


def _read_json_lines(path: Path, head: list[bytes], lines: Iterable[bytes]) -> Iterator[_Row]:
    for number, line in enumerate(_chain(head, lines), 1):
        if _HFTBACKTEST.match(line):
            body = line.partition(b" ")[2]
        elif _CRYPTOFEED.match(line):
            body = line.partition(b": ")[2]
        else:
            continue  # URL or other header lines
        try:
            msg = orjson.loads(body)
            data = msg.get("data", msg)
            kind = data.get("e") if isinstance(data, dict) else None
            if kind == AGG:
                yield (data["s"], AGG, int(data["a"]), int(data["E"]), int(data["T"]), data["p"],
                       data["q"], int(data["f"]), int(data["l"]), bool(data["m"]))
            elif kind == TRADE:
                t = int(data["t"])
                yield (data["s"], TRADE, t, int(data["E"]), int(data["T"]), data["p"],
                       data["q"], t, t, bool(data["m"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}:{number}: unreadable trade message ({exc})") from None


def _read_csv(path: Path, head: list[bytes], lines: Iterable[bytes]) -> Iterator[_Row]:
    symbol = path.name.split("-")[0].upper()
    if not _SYMBOL.match(symbol):
        raise ConfigError(f"cannot tell the symbol of {str(path)!r}: name it like "
                          "BTCUSDT-aggTrades-2024-08-08.zip (data.binance.vision's naming)")
    for number, line in enumerate(_chain(head, lines), 1):
        fields = line.decode().strip().split(",")
        if not fields[0].isdigit():
            continue  # header row (present in newer archives only)
        try:
            maker = fields[-1].strip().lower()
            if maker not in ("true", "false"):
                raise ValueError(f"is_buyer_maker {fields[-1]!r}")
            if len(fields) == 7:  # agg_trade_id,price,quantity,first,last,transact_time,maker
                a, p, q, f, l, t = fields[:6]
                time = _ms(int(t))
                yield (symbol, AGG, int(a), time, time, p, q, int(f), int(l), maker == "true")
            elif len(fields) == 6:  # id,price,qty,quote_qty,time,is_buyer_maker
                i, p, q, _quote, t = fields[:5]
                time = _ms(int(t))
                yield (symbol, TRADE, int(i), time, time, p, q, int(i), int(i), maker == "true")
            else:
                raise ValueError(f"{len(fields)} columns, expected 7 (aggTrades) or 6 (trades)")
        except ValueError as exc:
            raise DataError(f"{path}:{number}: unreadable CSV row ({exc})") from None


def _ms(t: int) -> int:
    # Spot archives switched to microseconds in 2025; futures use milliseconds.
    return t // 1000 if t > 10 ** 14 else t


def _chain(head: list[bytes], rest: Iterable[bytes]) -> Iterator[bytes]:
    yield from head
    for line in rest:
        line = line.strip()
        if line:
            yield line


def _decimals(values: Iterable[str]) -> int:
    return max((len(v) - v.index(".") - 1 for v in values if "." in v), default=0)


def _scale(value: str, decimals: int) -> int:
    whole, _, frac = value.partition(".")
    return int(whole or "0") * 10 ** decimals + int(frac.ljust(decimals, "0") or "0")


def _build(rows: list[_Row]) -> Recording:
    symbols = sorted({r[0] for r in rows})
    pdec = {s: _decimals(r[5] for r in rows if r[0] == s) for s in symbols}
    qdec = {s: _decimals(r[6] for r in rows if r[0] == s) for s in symbols}
    index = {s: i for i, s in enumerate(symbols)}
    kind_index = {AGG: 0, TRADE: 1}
    n = len(rows)
    stream = np.fromiter((index[r[0]] * 2 + kind_index[r[1]] for r in rows), np.int64, n)
    ids = np.fromiter((r[2] for r in rows), np.int64, n)
    cols = Events(stream, ids,
                  np.fromiter((r[3] for r in rows), np.int64, n),
                  np.fromiter((r[4] for r in rows), np.int64, n),
                  np.fromiter((_scale(r[5], pdec[r[0]]) for r in rows), np.int64, n),
                  np.fromiter((_scale(r[6], qdec[r[0]]) for r in rows), np.int64, n),
                  np.fromiter((r[7] for r in rows), np.int64, n),
                  np.fromiter((r[8] for r in rows), np.int64, n),
                  np.fromiter((r[9] for r in rows), bool, n))
    # Per stream: ascending ids (some archives are unsorted), first copy of a duplicated id.
    order = np.lexsort((np.arange(n), ids, stream))
    cols = cols.take(order)
    keep = np.ones(n, dtype=bool)
    keep[1:] = (cols.stream[1:] != cols.stream[:-1]) | (cols.id[1:] != cols.id[:-1])
    cols = cols.take(keep)
    # Pace by trade time, made non-decreasing within each stream so that the stable sort
    # below never reorders a stream's ids.
    release = cols.trade_time.copy()
    for s in np.unique(cols.stream):
        m = cols.stream == s
        release[m] = np.maximum.accumulate(release[m])
    order = np.argsort(release, kind="stable")
    return Recording(symbols, pdec, qdec, cols.take(order), release[order])
