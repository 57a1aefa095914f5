"""In-memory trade tapes of the local exchange: every trade it served, per symbol and stream kind.

Prices and quantities are kept as scaled integers (value times ``10**decimals``) so that the
strings served on the wire and over REST are exactly Binance's fixed-precision strings, and a
replayed file comes back value for value. The REST handlers and ``LocalExchange.trades()`` read
the tapes; the feeder appends to them.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from ..wire import Trade

__all__ = ["AGG", "KINDS", "TRADE", "Events", "Tape", "format_scaled"]

#: Stream kinds, as in Binance stream names (``btcusdt@aggTrade``, ``btcusdt@trade``).
AGG = "aggTrade"
TRADE = "trade"
KINDS = (AGG, TRADE)

_COLUMNS = ("id", "event_time", "trade_time", "price", "qty", "first_id", "last_id", "maker")


class Events(NamedTuple):
    """A batch of trade events in delivery order; each row belongs to one (symbol, kind) stream.

    ``stream`` indexes ``symbols x kinds``: ``stream = symbol_index * 2 + kind_index`` with kind
    index 0 for ``aggTrade`` and 1 for ``trade``. ``price``/``qty`` are scaled integers.
    """

    stream: np.ndarray  # int64
    id: np.ndarray  # a (aggTrade) or t (trade)
    event_time: np.ndarray  # E, ms
    trade_time: np.ndarray  # T, ms
    price: np.ndarray  # p * 10**price_decimals
    qty: np.ndarray  # q * 10**qty_decimals
    first_id: np.ndarray  # f (= t for trades)
    last_id: np.ndarray  # l (= t for trades)
    maker: np.ndarray  # m, bool

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.stream)

    def take(self, index: np.ndarray | slice) -> Events:
        """The rows at ``index`` (a boolean mask, index array or slice)."""
        return Events(*(col[index] for col in self))


def format_scaled(value: int, decimals: int) -> str:
    """``12345, 2 -> "123.45"``: Binance's fixed-precision decimal string of a scaled integer."""
    if decimals == 0:
        return str(value)
    scale = 10 ** decimals
    return f"{value // scale}.{value % scale:0{decimals}d}"


class Tape:
    """Trades of one symbol and kind, ascending by id, bounded to the newest ``max_rows``.

    Appends come from the exchange's event loop; reads may come from any thread, so both hold
    a lock (uncontended in practice: microseconds).
    """

    def __init__(self, symbol: str, kind: str, *, price_decimals: int, qty_decimals: int,
                 max_rows: int) -> None:
        self.symbol = symbol
        self.kind = kind
        self.price_decimals = price_decimals
        self.qty_decimals = qty_decimals
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._cols = {name: np.empty(1024, dtype=bool if name == "maker" else np.int64)
                      for name in _COLUMNS}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, events: Events) -> None:
        """Append rows (already of this symbol and kind, ascending ids)."""
        n = len(events)
        if n == 0:
            return
        with self._lock:
            if self._size + n > min(len(self._cols["id"]), self.max_rows + self.max_rows // 2):
                self._make_room(n)
            for name in _COLUMNS:
                self._cols[name][self._size:self._size + n] = getattr(events, name)
            self._size += n

    def _make_room(self, n: int) -> None:
        # Drop the oldest rows down to the bound, and leave slack (half the bound) so that the
        # copy this costs happens once per max_rows/2 appended rows, not on every append.
        drop = min(self._size, max(0, self._size + n - self.max_rows))
        kept = self._size - drop
        new_len = max(1024, min(2 * (kept + n), int(self.max_rows * 1.5) + n))
        for name in _COLUMNS:
            old = self._cols[name]
            new = np.empty(new_len, dtype=old.dtype)
            new[:kept] = old[drop:self._size]
            self._cols[name] = new
        self._size = kept

    def column(self, name: str) -> np.ndarray:
        """A copy of one column (``id``, ``trade_time``, ``price``, ...)."""
        with self._lock:
            return self._cols[name][:self._size].copy()

    def last_id(self) -> int | None:
        """The newest id on the tape, or None when empty."""
        with self._lock:
            return int(self._cols["id"][self._size - 1]) if self._size else None

    def select(self, *, from_id: int | None = None, start_time: int | None = None,
               end_time: int | None = None, limit: int) -> slice:
        """Rows REST would return, as a slice of positions (ascending).

        ``from_id``: ids >= from_id. ``start_time``/``end_time`` (inclusive, ms): rows in the
        window, the oldest first; ``end_time`` alone: the newest rows up to it. Nothing: the newest
        ``limit`` rows.
        """
        with self._lock:
            ids = self._cols["id"][:self._size]
            times = self._cols["trade_time"][:self._size]
            if from_id is not None:
                lo = int(np.searchsorted(ids, from_id, side="left"))
                return slice(lo, min(lo + limit, self._size))
            if start_time is not None:
                lo = int(np.searchsorted(times, start_time, side="left"))
                hi = self._size if end_time is None else int(
                    np.searchsorted(times, end_time, side="right"))
                return slice(lo, max(lo, min(hi, lo + limit)))
            hi = self._size if end_time is None else int(
                np.searchsorted(times, end_time, side="right"))
            return slice(max(0, hi - limit), hi)

    def columns(self, positions: slice, names: tuple[str, ...]) -> list[np.ndarray]:
        """Copies of the columns ``names`` at ``positions``."""
        with self._lock:
            return [self._cols[name][:self._size][positions].copy() for name in names]

    def time_span(self, start_time: int, end_time: int) -> slice:
        """Positions of the rows with ``start_time <= trade_time <= end_time``."""
        with self._lock:
            times = self._cols["trade_time"][:self._size]
            return slice(int(np.searchsorted(times, start_time, side="left")),
                         int(np.searchsorted(times, end_time, side="right")))

    def rows(self, positions: slice) -> list[tuple[int, int, int, str, str, int, int, bool]]:
        """``(id, event_time, trade_time, price_str, qty_str, first_id, last_id, maker)`` rows."""
        with self._lock:
            cols = [self._cols[name][positions].tolist() for name in _COLUMNS]
        pd, qd = self.price_decimals, self.qty_decimals
        return [(i, e, t, format_scaled(p, pd), format_scaled(q, qd), f, l, m)
                for i, e, t, p, q, f, l, m in zip(*cols)]

    def trades(self) -> list[Trade]:
        """Everything on the tape as :class:`quantkit.wire.Trade` (``recv_time`` None)."""
        with self._lock:
            cols = [self._cols[name][:self._size].tolist() for name in _COLUMNS]
        pd, qd = self.price_decimals, self.qty_decimals
        # float(str) rather than int / scale: exactly the float a client parses from the wire.
        return [Trade(self.symbol, i, t, float(format_scaled(p, pd)), float(format_scaled(q, qd)),
                      f, l, m, None)
                for i, _e, t, p, q, f, l, m in zip(*cols)]
