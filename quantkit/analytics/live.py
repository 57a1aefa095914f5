"""The live pair engine: bars and pair statistics kept up to date from the store's new ticks.

:class:`LivePair` consumes :meth:`quantkit.TickStore.read_new` frames. Each update costs time
proportional to the new ticks plus O(window) for the statistics it must recompute, whatever
the size of the history; it agrees with :func:`resample_ohlcv` and :func:`pair_stats` on the
same data.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._window import check_window
from .bars import BAR_COLUMNS, _bucket, freq_ms
from .pairs import (
    _corr,
    _pair,
    _rolling_ols,
    _zscore,
    cointegration,
    half_life,
    hedge_ratio,
    kalman_start,
    kalman_states,
)

__all__ = ["HEDGES", "STATS_COLUMNS", "LivePair", "pair_stats"]

HEDGES = ("rolling_ols", "ols", "kalman")
STATS_COLUMNS = ["y", "x", "alpha", "beta", "spread", "spread_mean", "spread_std", "zscore",
                 "corr"]
_SUMS = ("volume", "quote_volume", "trades", "taker_buy_volume")
_UNIT_PER_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}


def _check_hedge(hedge: str) -> str:
    if hedge not in HEDGES:
        raise DataError(f"hedge: unknown method {hedge!r}; use one of {', '.join(HEDGES)}")
    return hedge


def _stats_tail(y: np.ndarray, x: np.ndarray, p: int, old: dict[str, np.ndarray], *,
                window: int, hedge: str, delta: float, obs_var: float,
                init_var: float) -> dict[str, np.ndarray]:
    """Statistics for rows ``p..n-1``, given those of rows ``< p`` in ``old`` (aligned arrays).

    Only the ``window`` rows before ``p`` are read (``2 * window`` bars in all), so a live
    update that touched the last bar costs O(window).
    """
    n = len(y)
    m = n - p
    nan = np.full(m, np.nan)
    if hedge == "rolling_ols":
        a = max(0, p - window + 1)
        if n - a >= window:
            alpha, beta = (v[p - a:] for v in _rolling_ols(y[a:], x[a:], window))
        else:
            alpha, beta = nan, nan.copy()
        kal = None
    elif hedge == "kalman":
        start = tuple(old["kalman"][p - 1]) if p > 0 else kalman_start(init_var)
        kal = kalman_states(y[p:], x[p:], delta=delta, obs_var=obs_var, start=start)
        alpha, beta = kal[:, 1], kal[:, 0]
    else:  # ols over every row held: p is always 0
        try:
            fit = hedge_ratio(pd.Series(y), pd.Series(x))
            alpha, beta = np.full(m, fit.alpha), np.full(m, fit.beta)
        except DataError:
            alpha, beta = nan, nan.copy()
        kal = None
    spread = y[p:] - beta * x[p:] - alpha
    a = max(0, p - window + 1)
    seg = np.concatenate((old["spread"][a:p], spread))
    if len(seg) >= window:
        mean, std, z = (v[p - a:] for v in _zscore(seg, window))
    else:
        mean, std, z = nan, nan, nan
    a = max(0, p - window)
    if n - a > window:
        with np.errstate(divide="ignore", invalid="ignore"):
            ry, rx = np.diff(np.log(y[a:]), prepend=np.nan), np.diff(np.log(x[a:]), prepend=np.nan)
        corr = _corr(ry, rx, window)[p - a:]
    else:
        corr = nan
    out = {"y": y[p:], "x": x[p:], "alpha": alpha, "beta": beta, "spread": spread,
           "spread_mean": mean, "spread_std": std, "zscore": z, "corr": corr}
    if kal is not None:
        out["kalman"] = kal
    return out


def pair_stats(y: pd.Series, x: pd.Series, *, window: int, hedge: str = "rolling_ols",
               delta: float = 1e-4, obs_var: float = 1e-3, init_var: float = 1e6
               ) -> pd.DataFrame:
    """All pair statistics of two aligned close series, as :meth:`LivePair.stats` shows them.

    Parameters
    ----------
    y, x
        Aligned closes (e.g. from :func:`align_bars`).
    window
        Rows of the rolling regression, of the spread's z-score and of the correlation.
    hedge
        ``"rolling_ols"`` (:func:`rolling_hedge_ratio`), ``"ols"`` (one :func:`hedge_ratio`
        over all rows) or ``"kalman"`` (:func:`kalman_hedge_ratio` with ``delta``, ``obs_var``,
        ``init_var``).

    Returns
    -------
    pandas.DataFrame
        Columns ``y, x, alpha, beta, spread, spread_mean, spread_std, zscore, corr`` where
        ``spread = y - beta x - alpha`` (row by row), ``spread_mean``/``spread_std`` its
        rolling mean and sample std over ``window``, ``zscore`` = :func:`zscore` of the spread,
        and ``corr`` = :func:`rolling_corr` of the log returns.
    """
    y, x = _pair(y, x)
    window = check_window(window, len(y))
    hedge = _check_hedge(hedge)
    empty = {"spread": np.empty(0), "kalman": np.empty((0, 5))}
    out = _stats_tail(y.to_numpy(), x.to_numpy(), 0, empty, window=window, hedge=hedge,
                      delta=delta, obs_var=obs_var, init_var=init_var)
    out.pop("kalman", None)
    return pd.DataFrame(out, index=y.index)[STATS_COLUMNS]


class _Book:
    """Bounded bars of one symbol in numpy arrays, sorted by open time (ms).

    Besides the bar columns it keeps the (time, id) of the opening and closing trade, so
    that a late tick can take over the open or close of a bar exactly as a batch resample
    over all ticks would.
    """

    def __init__(self) -> None:
        self.t = np.empty(0, np.int64)
        self.cols: dict[str, np.ndarray] = {c: np.empty(0, np.int64 if c == "trades" else
                                                        np.float64) for c in BAR_COLUMNS}
        for k in ("open_t", "open_id", "close_t", "close_id"):
            self.cols[k] = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.t)

    def merge(self, chunk: dict[str, np.ndarray], labels: np.ndarray, max_bars: int) -> int | None:
        """Fold a chunk's bars in; return the earliest bar time changed (None: nothing)."""
        if len(self.t) >= max_bars:
            keep = labels >= self.t[0]  # older than everything held: too late to matter
            if not keep.all():
                labels, chunk = labels[keep], {k: v[keep] for k, v in chunk.items()}
        if len(labels) == 0:
            return None
        pos = np.searchsorted(self.t, labels)
        hit = pos < len(self.t)
        hit[hit] = self.t[pos[hit]] == labels[hit]
        if hit.any():
            i, c = pos[hit], {k: v[hit] for k, v in chunk.items()}
            cols = self.cols
            earlier = (c["open_t"] < cols["open_t"][i]) | (
                (c["open_t"] == cols["open_t"][i]) & (c["open_id"] < cols["open_id"][i]))
            for k in ("open", "open_t", "open_id"):
                cols[k][i] = np.where(earlier, c[k], cols[k][i])
            later = (c["close_t"] > cols["close_t"][i]) | (
                (c["close_t"] == cols["close_t"][i]) & (c["close_id"] > cols["close_id"][i]))
            for k in ("close", "close_t", "close_id"):
                cols[k][i] = np.where(later, c[k], cols[k][i])
            cols["high"][i] = np.maximum(cols["high"][i], c["high"])
            cols["low"][i] = np.minimum(cols["low"][i], c["low"])
            for k in _SUMS:
                cols[k][i] += c[k]
        new = ~hit
        if new.any():
            at = pos[new]
            # Appending the newest bars is the common case: concatenate, cheaper than insert.
            put = ((lambda a, v: np.concatenate((a, v))) if at[0] == len(self.t)
                   else (lambda a, v: np.insert(a, at, v)))
            self.t = put(self.t, labels[new])
            for k, v in self.cols.items():
                self.cols[k] = put(v, chunk[k][new])
        extra = len(self.t) - max_bars
        if extra > 0:
            self.t = self.t[extra:]
            self.cols = {k: v[extra:] for k, v in self.cols.items()}
        return int(labels[0])


class LivePair:
    """Incremental bars and pair statistics of ``y`` against ``x`` for live dashboards.

    Parameters
    ----------
    y, x
        Symbols, e.g. ``"ETHUSDT"`` and ``"BTCUSDT"`` (the spread is ``y - beta x - alpha``).
    freq
        Bar length, one of :data:`~quantkit.analytics.FREQS`.
    window
        Rows of the rolling regression, z-score and correlation (2 or more).
    max_bars
        Bars kept per symbol (oldest dropped first); memory stays bounded.
    hedge
        ``"rolling_ols"`` (default), ``"ols"`` (one fit over the bars held: O(max_bars) per
        update) or ``"kalman"`` (``delta``, ``obs_var``, ``init_var`` as in
        :func:`kalman_hedge_ratio`).

    Notes
    -----
    **When a bar is closed.** A bar ``[t, t + freq)`` is *open* (``is_open`` True) while it is
    the newest bar of its symbol and no trade of either symbol at or after ``t + freq`` has
    been seen: both legs share the exchange's clock, so a later trade on either proves the
    interval is over. A closed bar still changes if a *late* tick arrives (a backfill after
    a reconnect): any tick whose bar is still held revises that bar exactly, and the
    statistics from that bar on are recomputed. Ticks older than the oldest bar held (when
    ``max_bars`` are held) are counted in ``late_dropped`` and ignored.

    **Agreement with batch.** ``bars(s)`` equals ``resample_ohlcv`` of the same ticks (OHLC
    and trade counts bit for bit; the volume sums up to float rounding, ~1e-15 relative,
    since they are added chunk by chunk), and ``stats()`` equals :func:`pair_stats` of the
    aligned closes, as long as no bar was dropped. After drops the retained rows keep the
    values computed when the dropped bars were still there (batch over the held bars only
    would show a warm-up instead); a late tick within ``window`` bars of the oldest bar held
    leaves NaN where dropped bars would be needed.

    Cost per :meth:`update`: O(new ticks) for the bars plus O(window) for the statistics from
    the earliest changed bar on (O(max_bars) for ``hedge="ols"``). :meth:`summary` adds a
    cointegration test over the bars held, recomputed when a bar is added.
    """

    def __init__(self, y: str, x: str, *, freq: str = "1s", window: int = 300,
                 max_bars: int = 2000, hedge: str = "rolling_ols", delta: float = 1e-4,
                 obs_var: float = 1e-3, init_var: float = 1e6) -> None:
        if not isinstance(y, str) or not isinstance(x, str) or not y or not x:
            raise DataError(f"y and x must be symbol names, got {y!r} and {x!r}")
        self.y, self.x = y.upper(), x.upper()
        if self.y == self.x:
            raise DataError(f"y and x are both {self.y}: a pair needs two different symbols")
        self.freq = freq
        self.step = freq_ms(freq)
        self.window = check_window(window, 10**12)
        if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 2 * window:
            raise DataError(f"max_bars={max_bars!r} must be an integer of at least 2 * window "
                            f"= {2 * window}, so the z-score of the spread has data")
        self.max_bars = max_bars
        self.hedge = _check_hedge(hedge)
        self.delta, self.obs_var, self.init_var = delta, obs_var, init_var
        self._books = {self.y: _Book(), self.x: _Book()}
        #: Newest trade time seen on either leg (ms): what closes bars.
        self.watermark: int | None = None
        #: Ticks ignored because their bar was older than every bar held.
        self.late_dropped = 0
        #: Ticks of y or x consumed so far.
        self.ticks_seen = 0
        self._t = np.empty(0, np.int64)
        self._stats: dict[str, np.ndarray] = {c: np.empty(0) for c in STATS_COLUMNS}
        self._stats["kalman"] = np.empty((0, 5))
        self._slow: tuple[tuple[int, int, int] | None, dict[str, float]] | None = None

    # -- feeding ------------------------------------------------------------------------------
    def update(self, frame: pd.DataFrame) -> int:
        """Consume a :meth:`TickStore.read_new` frame; return how many of its rows were used.

        Rows of other symbols are ignored. Rows may come in any order (late backfills too).
        """
        if not isinstance(frame, pd.DataFrame) or "symbol" not in frame.columns:
            raise DataError("update: pass TickStore.read_new(...).frame (a DataFrame with a "
                            "'symbol' column)")
        if len(frame) == 0:
            return 0
        missing = [c for c in ("price", "qty", "is_buyer_maker", "id") if c not in frame.columns]
        if missing:
            raise DataError(f"update: frame lacks column(s) {', '.join(missing)}")
        per_ms = _UNIT_PER_MS.get(frame.index.unit) if isinstance(frame.index,
                                                                   pd.DatetimeIndex) else None
        if per_ms is None:
            raise DataError("update: the frame must be indexed by trade time (DatetimeIndex "
                            "in ms, us or ns), as TickStore.read_new returns it")
        symbols = frame["symbol"].to_numpy()
        t_all = frame.index.asi8 // per_ms
        cols = {c: frame[c].to_numpy() for c in ("price", "qty", "is_buyer_maker", "id")}
        if "first_id" in frame.columns and "last_id" in frame.columns:
            cols["extra"] = frame["last_id"].to_numpy() - frame["first_id"].to_numpy()
        used, changed = 0, []
        for sym, book in self._books.items():
            rows = np.flatnonzero(symbols == sym)
            if len(rows) == 0:
                continue
            used += len(rows)
            t = t_all[rows]
            first = self._fold(book, t, {c: v[rows] for c, v in cols.items()})
            if first is not None:
                changed.append(first)
            wm = int(t.max())
            self.watermark = wm if self.watermark is None else max(self.watermark, wm)
        self.ticks_seen += used
        if used:
            self._refresh(min(changed) if changed else None)
        return used

    def _fold(self, book: _Book, t: np.ndarray, cols: dict[str, np.ndarray]) -> int | None:
        """Resample one symbol's new ticks and merge the bars into its book."""
        ids = cols["id"].astype(np.int64, copy=False)
        order = np.lexsort((ids, t))
        t, ids = t[order], ids[order]
        price = cols["price"].astype(np.float64, copy=False)[order]
        qty = cols["qty"].astype(np.float64, copy=False)[order]
        maker = cols["is_buyer_maker"].astype(bool, copy=False)[order]
        extra = (cols["extra"].astype(np.int64, copy=False)[order] if "extra" in cols
                 else np.zeros(len(t), np.int64))
        b = _bucket(t, self.step)
        s, last = b.starts, b.ends - 1
        chunk = {
            "open": price[s], "high": np.maximum.reduceat(price, s),
            "low": np.minimum.reduceat(price, s), "close": price[last],
            "volume": np.add.reduceat(qty, s), "quote_volume": np.add.reduceat(price * qty, s),
            "trades": np.add.reduceat(extra, s) + (b.ends - s),
            "taker_buy_volume": np.add.reduceat(np.where(maker, 0.0, qty), s),
            "open_t": t[s], "open_id": ids[s], "close_t": t[last], "close_id": ids[last],
        }
        if len(book) >= self.max_bars:
            self.late_dropped += int((t < book.t[0]).sum())
        return book.merge(chunk, b.labels, self.max_bars)

    def _refresh(self, changed_from: int | None) -> None:
        by, bx = self._books[self.y], self._books[self.x]
        t_new, iy, ix = np.intersect1d(by.t, bx.t, assume_unique=True, return_indices=True)
        y, x = by.cols["close"][iy], bx.cols["close"][ix]
        if self.hedge == "ols":
            p = 0
        else:
            p = len(t_new) if changed_from is None else int(np.searchsorted(t_new, changed_from))
        old = self._stats
        if p > 0:
            k = int(np.searchsorted(self._t, t_new[0]))
            kept = {c: v[k:k + p] for c, v in old.items()}
        else:
            kept = {c: v[:0] for c, v in old.items()}
        if p < len(t_new):
            tail = _stats_tail(y, x, p, kept, window=self.window, hedge=self.hedge,
                               delta=self.delta, obs_var=self.obs_var,
                               init_var=self.init_var)
            tail.setdefault("kalman", np.full((len(t_new) - p, 5), np.nan))
            self._stats = {c: np.concatenate((kept[c], tail[c])) for c in kept}
        else:
            self._stats = kept
        self._t = t_new

    # -- reading ------------------------------------------------------------------------------
    def _index(self, t: np.ndarray) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(t.astype("datetime64[ms]"), name="time").tz_localize("UTC")

    def bars(self, symbol: str) -> pd.DataFrame:
        """The bars held for ``symbol``: :func:`resample_ohlcv` columns plus ``is_open``."""
        sym = symbol.upper()
        if sym not in self._books:
            raise DataError(f"bars: {symbol!r} is not a leg of this pair; use {self.y!r} or "
                            f"{self.x!r}")
        book = self._books[sym]
        df = pd.DataFrame({c: book.cols[c].copy() for c in BAR_COLUMNS}, index=self._index(book.t))
        is_open = np.zeros(len(book), bool)
        if len(book) and self.watermark is not None:
            is_open[-1] = self.watermark < book.t[-1] + self.step
        df["is_open"] = is_open
        return df

    def stats(self) -> pd.DataFrame:
        """Pair statistics on the aligned bar index (times where both legs traded).

        Columns ``y, x, alpha, beta, spread, spread_mean, spread_std, zscore, corr``, as
        :func:`pair_stats`; the last row may belong to a still-open bar.
        """
        return pd.DataFrame({c: self._stats[c].copy() for c in STATS_COLUMNS},
                            index=self._index(self._t))

    def summary(self) -> dict[str, Any]:
        """Last values: time, beta, alpha, spread, zscore, corr, plus ``pvalue`` of an
        Engle-Granger test (:func:`cointegration`) and ``half_life`` (in bars) of the spread
        over the bars held.

        The test costs ~30 ms on 2000 bars, so ``pvalue`` and ``half_life`` are recomputed
        only when the set of aligned bars changes (a bar added or dropped), not on every tick
        that moves the open bar. NaN while there are too few bars.
        """
        n = len(self._t)
        out: dict[str, Any] = {"y": self.y, "x": self.x, "freq": self.freq, "bars": n,
                               "time": self._index(self._t[-1:])[0] if n else None}
        for c in ("beta", "alpha", "spread", "zscore", "corr"):
            out[c] = float(self._stats[c][-1]) if n else math.nan
        key = (n, int(self._t[0]), int(self._t[-1])) if n else None
        if self._slow is None or self._slow[0] != key:
            slow = {"pvalue": math.nan, "half_life": math.nan}
            try:
                slow["pvalue"] = cointegration(pd.Series(self._stats["y"]),
                                               pd.Series(self._stats["x"])).pvalue
            except (DataError, ValueError, np.linalg.LinAlgError):
                pass
            try:
                slow["half_life"] = half_life(pd.Series(self._stats["spread"]).dropna())
            except DataError:
                pass
            self._slow = (key, slow)
        out.update(self._slow[1])
        return out
