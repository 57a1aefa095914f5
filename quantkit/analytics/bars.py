"""Trades to OHLCV bars keyed on exchange trade time, and alignment of two symbols' bars.

The work is done in numpy on integer time keys (``searchsorted`` + ``ufunc.reduceat``), so a
10M-trade frame resamples in tens of milliseconds and bars equal Binance's own klines.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["BAR_COLUMNS", "FREQS", "align_bars", "freq_ms", "resample_ohlcv"]

#: Bar lengths accepted by ``freq``, in milliseconds. Fixed lengths only: calendar
#: frequencies (weeks, months) have no constant length to key on.
FREQS: dict[str, int] = {
    "1s": 1_000, "5s": 5_000, "10s": 10_000, "15s": 15_000, "30s": 30_000,
    "1min": 60_000, "3min": 180_000, "5min": 300_000, "15min": 900_000, "30min": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "12h": 43_200_000, "1d": 86_400_000,
}

#: Columns of a bars frame, in order.
BAR_COLUMNS = ["open", "high", "low", "close", "volume", "quote_volume", "trades",
               "taker_buy_volume"]

_UNIT_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}


def freq_ms(freq: str) -> int:
    """Length of a bar of ``freq`` in milliseconds.

    Raises
    ------
    DataError
        If ``freq`` is not one of :data:`FREQS` (the message lists them).
    """
    try:
        return FREQS[freq]
    except (KeyError, TypeError):
        hint = " (use '1min' for one minute: 'm' is ambiguous)" if freq in ("1m", "1T") else ""
        raise DataError(
            f"freq: unknown bar length {freq!r}{hint}; use one of {', '.join(FREQS)}"
        ) from None


class _Buckets(NamedTuple):
    """Where each non-empty bar starts in the sorted tick arrays."""

    labels: np.ndarray  # bar open time, in the index's own unit
    starts: np.ndarray  # first tick of each bar
    ends: np.ndarray    # one past the last tick of each bar


def _bucket(t: np.ndarray, step: int) -> _Buckets:
    """Split sorted integer times ``t`` into bars of ``step`` (left-closed, open-time label)."""
    n = len(t)
    first = t[0] - t[0] % step
    last = t[-1] - t[-1] % step
    nedges = (last - first) // step + 1
    if nedges <= n:
        # Dense case: a binary search per bar edge is cheaper than dividing every tick.
        edges = first + np.arange(nedges + 1, dtype=np.int64) * step
        pos = np.searchsorted(t, edges, side="left")
        full = pos[1:] > pos[:-1]
        return _Buckets(edges[:-1][full], pos[:-1][full], pos[1:][full])
    keys = t - t % step
    starts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], starts))
    ends = np.concatenate((starts[1:], [n]))
    return _Buckets(keys[starts], starts, ends)


def _index_units(index: pd.DatetimeIndex, name: str) -> tuple[np.ndarray, int]:
    """Integer times of a tz-aware UTC index and how many of its units make a millisecond."""
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"{name}: index must be a DatetimeIndex of trade times, "
                        f"got {type(index).__name__}; use TickStore.ticks() or set_index('time')")
    if index.tz is None:
        raise DataError(f"{name}: index is naive; localise it with .tz_localize('UTC')")
    per_ms = _UNIT_PER_MS.get(index.unit)
    if per_ms is None:
        index = index.as_unit("ms")
        per_ms = 1
    return index.asi8, per_ms


def _empty_bars(index_unit: str = "ms") -> pd.DataFrame:
    idx = pd.DatetimeIndex([], dtype=f"datetime64[{index_unit}, UTC]", name="time")
    data = {c: np.array([], dtype=np.int64 if c == "trades" else np.float64) for c in BAR_COLUMNS}
    return pd.DataFrame(data, index=idx)


def resample_ohlcv(ticks: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Resample trades to OHLCV bars keyed on trade time.

    Parameters
    ----------
    ticks
        A :meth:`quantkit.TickStore.ticks` frame: tz-aware UTC ``DatetimeIndex`` of trade times,
        columns ``price``, ``qty``, ``is_buyer_maker`` and optionally ``id``, ``first_id``,
        ``last_id``. Rows out of time order are sorted first (by time, then ``id``).
    freq
        Bar length, one of :data:`FREQS` (``1s, 5s, ..., 1min, 5min, 15min, 1h, ..., 1d``).

    Returns
    -------
    pandas.DataFrame
        Indexed by bar open time (UTC, same unit as ``ticks``' index, named ``time``) with
        columns ``open, high, low, close, volume, quote_volume, trades, taker_buy_volume``.
        Bars are left-closed: a trade at exactly 12:01:00.000 opens the 12:01 bar.
        **Intervals without trades have no row** (no forward-filled flat bars); an empty
        ``ticks`` frame gives an empty bars frame.

    Raises
    ------
    DataError
        Unknown ``freq`` (lists the valid ones), missing columns or a naive/non-time index.

    Notes
    -----
    For the trades :math:`i` of a bar, in (time, id) order:
    ``open`` = first price, ``close`` = last price, ``high``/``low`` = max/min price,
    ``volume`` = :math:`\\sum q_i`, ``quote_volume`` = :math:`\\sum p_i q_i`,
    ``trades`` = :math:`\\sum (l_i - f_i + 1)` (an aggregate trade holds ``last_id - first_id + 1``
    individual trades; without those columns each row counts one),
    ``taker_buy_volume`` = :math:`\\sum q_i [\\lnot m_i]` (the buyer was the taker).
    These reproduce Binance's klines. Sums are float64 additions in trade order, so they
    equal Binance's printed decimals after rounding to those decimals (error ~1e-12 relative).

    Examples
    --------
    >>> bars = resample_ohlcv(store.ticks("BTCUSDT"), "1min")          # doctest: +SKIP
    """
    step_ms = freq_ms(freq)
    if not isinstance(ticks, pd.DataFrame):
        raise DataError(f"ticks: expected a DataFrame from TickStore.ticks(), "
                        f"got {type(ticks).__name__}")
    missing = [c for c in ("price", "qty", "is_buyer_maker") if c not in ticks.columns]
    if missing:
        raise DataError(f"ticks: missing column(s) {', '.join(missing)}; pass a "
                        "TickStore.ticks() frame (price, qty, is_buyer_maker, first_id, last_id)")
    t, per_ms = _index_units(ticks.index, "ticks")
    if len(t) == 0:
        return _empty_bars(ticks.index.unit)
    price = ticks["price"].to_numpy(np.float64)
    qty = ticks["qty"].to_numpy(np.float64)
    maker = ticks["is_buyer_maker"].to_numpy(bool)
    has_ids = "first_id" in ticks.columns and "last_id" in ticks.columns
    if not ticks.index.is_monotonic_increasing:
        tie = ticks["id"].to_numpy(np.int64) if "id" in ticks.columns else np.arange(len(t))
        order = np.lexsort((tie, t))
        t, price, qty, maker = t[order], price[order], qty[order], maker[order]
    else:
        order = None
    b = _bucket(t, step_ms * per_ms)
    starts = b.starts
    # One scratch buffer for the products: fresh 10M-row temporaries cost more in page
    # faults than the arithmetic itself.
    scratch = np.multiply(price, qty)
    data = {
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[b.ends - 1],
        "volume": np.add.reduceat(qty, starts),
        "quote_volume": np.add.reduceat(scratch, starts),
    }
    counts = b.ends - b.starts
    if has_ids:
        first_id = ticks["first_id"].to_numpy(np.int64)
        last_id = ticks["last_id"].to_numpy(np.int64)
        if order is not None:
            first_id, last_id = first_id[order], last_id[order]
        # sum(last - first + 1) without a 10M-row difference array.
        data["trades"] = (np.add.reduceat(last_id, starts) - np.add.reduceat(first_id, starts)
                          + counts)
    else:
        data["trades"] = counts.astype(np.int64)
    np.multiply(qty, ~maker, out=scratch)
    data["taker_buy_volume"] = np.add.reduceat(scratch, starts)
    idx = pd.DatetimeIndex(b.labels.astype(f"datetime64[{ticks.index.unit}]"), name="time")
    return pd.DataFrame(data, index=idx.tz_localize("UTC"))


def align_bars(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series
               ) -> tuple[pd.DataFrame | pd.Series, pd.DataFrame | pd.Series]:
    """Keep only the bar times both symbols traded in.

    Parameters
    ----------
    a, b
        Bars frames (or close series) of two symbols, e.g. from :func:`resample_ohlcv`.

    Returns
    -------
    tuple
        ``(a, b)`` restricted to the common bar open times, in time order, on identical
        indexes. An interval where either symbol had no trade is dropped rather than
        forward-filled, so every pair statistic is computed on real prices of both legs.

    Raises
    ------
    DataError
        If an index is not a ``DatetimeIndex`` or the two have no bar time in common.
    """
    for name, obj in (("a", a), ("b", b)):
        if not isinstance(obj.index, pd.DatetimeIndex):
            raise DataError(f"{name}: bars must be indexed by bar open time (DatetimeIndex)")
    common = a.index.intersection(b.index, sort=True)
    if len(common) == 0 and (len(a) or len(b)):
        raise DataError("align_bars: the two bar sets share no bar time; check that both "
                        "were resampled with the same freq over overlapping periods")
    return a.loc[common], b.loc[common]
