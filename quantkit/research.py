"""What the research notebooks call: load bars from a store, diagnose a pair, draw it with Plotly.

:func:`load_pair` + :func:`diagnose` + :func:`pair_figure` are the explore notebook;
:class:`Explorer` wraps them in widgets. :func:`compare_indicators` and :class:`LiveChart`
(a FigureWidget refreshed from the store on the kernel's event loop) are the indicator lab.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analytics import (
    CointegrationResult,
    HedgeResult,
    align_bars,
    cointegration,
    freq_ms,
    half_life,
    hedge_ratio,
    pair_stats,
    registry,
    resample_ohlcv,
)
from .errors import DataError, QuantkitError
from .storage import TickStore

__all__ = [
    "Explorer",
    "LiveChart",
    "PairData",
    "PairDiagnostics",
    "compare_indicators",
    "diagnose",
    "indicator_figure",
    "load_bars",
    "load_pair",
    "pair_figure",
    "rolling_cointegration",
]

#: Timeframes offered by the explorer's dropdown.
TIMEFRAMES = ("1s", "5s", "15s", "1min", "5min", "15min", "1h")
#: statsmodels' Engle-Granger test needs this many rows at least.
_MIN_COINT_ROWS = 20
#: Most cointegration tests run for the p-value line (each is an ADF regression).
_MAX_COINT_POINTS = 100


def _open(store: TickStore | str | Path) -> TickStore:
    return store if isinstance(store, TickStore) else TickStore(store)


def _x(index: pd.Index) -> np.ndarray:
    # Epoch ms as float64: Plotly reads them as UTC dates and ships them as a binary buffer.
    return (pd.DatetimeIndex(index).as_unit("ms").asi8).astype(np.float64)


def load_bars(store: TickStore | str | Path, symbol: str, *, freq: str = "1min",
              start: Any = None, end: Any = None) -> pd.DataFrame:
    """OHLCV bars of ``symbol`` from the trades in ``[start, end)`` (see ``resample_ohlcv``)."""
    freq_ms(freq)
    return resample_ohlcv(_open(store).ticks(symbol, start, end), freq)


@dataclass(frozen=True)
class PairData:
    """Bars of two symbols on the bar times both traded in (``y`` is regressed on ``x``)."""

    y: str
    x: str
    freq: str
    y_bars: pd.DataFrame = field(repr=False)
    x_bars: pd.DataFrame = field(repr=False)

    def __len__(self) -> int:
        return len(self.y_bars)


def pair_bars(y: str, x: str, y_ticks: pd.DataFrame, x_ticks: pd.DataFrame,
              freq: str) -> PairData:
    """Resample both legs' ticks and keep the common bar times."""
    yb, xb = align_bars(resample_ohlcv(y_ticks, freq), resample_ohlcv(x_ticks, freq))
    return PairData(y.upper(), x.upper(), freq, yb, xb)


def load_pair(store: TickStore | str | Path, y: str, x: str, *, freq: str = "1min",
              start: Any = None, end: Any = None) -> PairData:
    """Aligned bars of ``y`` and ``x`` over ``[start, end)`` from a tick store.

    Parameters
    ----------
    store
        A :class:`~quantkit.TickStore` or its path.
    y, x
        The legs: ``y`` is regressed on ``x`` (spread ``y - beta x - alpha``).
    freq
        Bar length (see :data:`quantkit.analytics.FREQS`).
    start, end
        Optional UTC bounds (string, datetime or ms).

    Raises
    ------
    DataError, StorageError
        Unknown bar length, a symbol missing from the store, or no common bar times.
    """
    freq_ms(freq)
    st = _open(store)
    pair = pair_bars(y, x, st.ticks(y, start, end), st.ticks(x, start, end), freq)
    if len(pair) == 0:
        raise DataError(f"{y} and {x} have no {freq} bar in common between {start} and {end}")
    return pair


def rolling_cointegration(y: pd.Series, x: pd.Series, window: int, *,
                          max_points: int = _MAX_COINT_POINTS) -> pd.Series:
    """Engle-Granger p-value over trailing windows of ``window`` bars (at most ``max_points``).

    Returns
    -------
    pandas.Series
        On the index of ``y``: the p-value at the last bar of each window tested, NaN between
        (plot with ``connectgaps``). Windows under 20 bars are widened to 20.
    """
    window = max(int(window), _MIN_COINT_ROWS)
    out = pd.Series(np.nan, index=y.index, name="coint_pvalue")
    n = len(y)
    if n < window:
        return out
    step = max(1, window // 5, -(-(n - window + 1) // max_points))
    for end in range(n, window - 1, -step):  # from the newest back, so the last bar is tested
        with contextlib.suppress(DataError):  # a flat window has no test; leave it NaN
            out.iloc[end - 1] = cointegration(y.iloc[end - window:end],
                                              x.iloc[end - window:end]).pvalue
    return out


@dataclass(frozen=True)
class PairDiagnostics:
    """Everything the explore notebook shows about a pair."""

    pair: PairData
    window: int
    hedge: str
    #: ``pair_stats`` columns: y, x, alpha, beta, spread, spread_mean, spread_std, zscore, corr.
    stats: pd.DataFrame = field(repr=False)
    #: One OLS fit over the whole range (the Engle-Granger first step).
    ols: HedgeResult
    coint: CointegrationResult
    #: Half-life of the OLS spread, in bars (``inf``: no mean reversion).
    half_life_bars: float
    #: Rolling cointegration p-value (see :func:`rolling_cointegration`).
    coint_pvalues: pd.Series = field(repr=False)

    @property
    def half_life(self) -> pd.Timedelta | None:
        """Half-life as a duration (None when the spread does not mean-revert)."""
        if not math.isfinite(self.half_life_bars):
            return None
        return pd.Timedelta(milliseconds=self.half_life_bars * freq_ms(self.pair.freq))

    def summary(self) -> dict[str, Any]:
        """The headline numbers: last beta/z-score/correlation and full-range tests."""
        last = self.stats.iloc[-1]
        return {
            "pair": f"{self.pair.y}/{self.pair.x}", "freq": self.pair.freq, "bars": len(self.pair),
            "first": self.stats.index[0], "last": self.stats.index[-1],
            "beta_ols": self.ols.beta, "alpha_ols": self.ols.alpha, "rsquared": self.ols.rsquared,
            "beta_last": float(last["beta"]), "zscore_last": float(last["zscore"]),
            "corr_last": float(last["corr"]), "coint_pvalue": self.coint.pvalue,
            "cointegrated_5pct": self.coint.cointegrated,
            "half_life_bars": self.half_life_bars, "half_life": self.half_life,
        }


def diagnose(pair: PairData, *, window: int = 60, hedge: str = "rolling_ols") -> PairDiagnostics:
    """Hedge ratio, spread, z-score, correlation, cointegration and half-life of a pair.

    Parameters
    ----------
    pair
        From :func:`load_pair`.
    window
        Bars of the rolling regression, z-score, correlation and rolling cointegration test.
    hedge
        ``"rolling_ols"``, ``"ols"`` or ``"kalman"`` (see :func:`quantkit.analytics.pair_stats`).

    Notes
    -----
    ``stats`` uses the chosen hedge; the cointegration test and the half-life use one OLS fit
    over the whole range, :math:`s_t = y_t - \\beta x_t - \\alpha` (Engle-Granger), with
    :math:`h = -\\ln 2 / \\ln(1 + b)` from :math:`\\Delta s_t = a + b s_{t-1} + e_t`.

    Raises
    ------
    DataError
        Too few bars for ``window`` (or for the tests: 20 bars), or a constant leg.
    """
    y, x = pair.y_bars["close"], pair.x_bars["close"]
    stats = pair_stats(y, x, window=window, hedge=hedge)
    ols = hedge_ratio(y, x)
    return PairDiagnostics(pair, int(window), hedge, stats, ols, cointegration(y, x),
                           half_life(ols.resid), rolling_cointegration(y, x, window))


_PAIR_ROWS = ("prices", "beta", "spread", "zscore", "corr", "coint")


def pair_figure(diag: PairDiagnostics, fig: go.FigureWidget | None = None, *,
                entry: float = 2.0) -> go.FigureWidget:
    """Six panels on one UTC time axis: prices, hedge ratio, spread, z-score, correlation and
    rolling cointegration p-value. Pass ``fig`` to redraw an existing figure in place."""
    s, p = diag.stats, diag.pair
    t = _x(s.index)
    title = (f"{p.y} on {p.x}: {p.freq} bars, window {diag.window}, {diag.hedge} (times UTC)"
             f"<br><sup>whole range: OLS beta {diag.ols.beta:.4g}, Engle-Granger "
             f"p = {diag.coint.pvalue:.3f}, half-life {_fmt_half_life(diag)}</sup>")
    rebased = {p.y: s["y"] / s["y"].iloc[0] * 100, p.x: s["x"] / s["x"].iloc[0] * 100}
    traces = [
        ("prices", f"{p.y} (rebased to 100)", rebased[p.y]),
        ("prices", f"{p.x} (rebased to 100)", rebased[p.x]),
        ("beta", f"beta ({diag.hedge})", s["beta"]),
        ("beta", "beta (OLS, whole range)", pd.Series(diag.ols.beta, index=s.index)),
        ("spread", "spread", s["spread"]),
        ("spread", f"mean + {entry} std", s["spread_mean"] + entry * s["spread_std"]),
        ("spread", f"mean - {entry} std", s["spread_mean"] - entry * s["spread_std"]),
        ("zscore", "z-score", s["zscore"]),
        ("corr", "correlation of log returns", s["corr"]),
        ("coint", "cointegration p-value", diag.coint_pvalues),
    ]
    if fig is None:
        fig = go.FigureWidget(make_subplots(
            rows=len(_PAIR_ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.03,
            row_heights=[0.24, 0.13, 0.17, 0.17, 0.13, 0.16],
            subplot_titles=("prices (rebased)", "hedge ratio", "spread", "z-score",
                            "correlation", "cointegration p-value")))
        for row_key, name, _ in traces:
            dash = "dot" if ("OLS" in name or "std" in name) else None
            fig.add_scatter(x=[], y=[], name=name, mode="lines", line={"dash": dash, "width": 1},
                            connectgaps=row_key == "coint",
                            row=_PAIR_ROWS.index(row_key) + 1, col=1)
        for level in (entry, -entry):
            fig.add_hline(y=level, line={"dash": "dash", "color": "grey", "width": 1},
                          row=_PAIR_ROWS.index("zscore") + 1, col=1)
        fig.add_hline(y=0.05, line={"dash": "dash", "color": "grey", "width": 1},
                      row=_PAIR_ROWS.index("coint") + 1, col=1)
        fig.update_xaxes(type="date")
        fig.update_layout(height=900, margin={"l": 60, "r": 20, "t": 80, "b": 30},
                          legend={"orientation": "h", "y": -0.06}, uirevision="explore")
    with fig.batch_update():
        for trace, (_, name, values) in zip(fig.data, traces):
            trace.x, trace.y, trace.name = t, values.to_numpy(np.float64), name
        fig.layout.title.text = title
    return fig


def _fmt_half_life(diag: PairDiagnostics) -> str:
    if diag.half_life is None:
        return "none (no mean reversion)"
    seconds = diag.half_life.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{diag.half_life_bars:.1f} bars = {seconds / size:.1f} {unit}"
    return f"{diag.half_life_bars:.1f} bars = {seconds:.1f} s"


class Explorer:
    """Widgets over :func:`diagnose`: pick the timeframe, the window and the hedge method.

    The ticks of both legs are read once; every change re-resamples them and redraws
    :attr:`figure` in place. A choice that cannot be computed (say a window longer than the
    bars) is explained in :attr:`status` and leaves the last figure up.

    Examples
    --------
    >>> ex = Explorer("btc.db", "ETHUSDT", "BTCUSDT", freq="1min")        # doctest: +SKIP
    >>> ex.container                                                       # doctest: +SKIP
    """

    def __init__(self, store: TickStore | str | Path, y: str, x: str, *, start: Any = None,
                 end: Any = None, freq: str = "1min", window: int = 60,
                 hedge: str = "rolling_ols", timeframes: Sequence[str] = TIMEFRAMES) -> None:
        st = _open(store)
        self.y, self.x = y.upper(), x.upper()
        self._ticks = (st.ticks(self.y, start, end), st.ticks(self.x, start, end))
        options = list(dict.fromkeys([*timeframes, freq]))
        self.controls = {
            "freq": w.Dropdown(options=options, value=freq, description="timeframe"),
            "window": w.IntSlider(value=window, min=5, max=max(500, window), step=5,
                                  description="window", continuous_update=False),
            "hedge": w.Dropdown(options=["rolling_ols", "ols", "kalman"], value=hedge,
                                description="hedge"),
        }
        self.status = w.HTML()
        self.diagnostics: PairDiagnostics | None = None
        self.errors = 0
        self.figure = pair_figure(self._diagnose())  # the first choice must work: raise if not
        self.container = w.VBox([w.HBox(list(self.controls.values())), self.status, self.figure])
        for ctl in self.controls.values():
            ctl.observe(lambda _change: self.update(), names="value")
        self._say_ok()

    def _diagnose(self) -> PairDiagnostics:
        c = {k: ctl.value for k, ctl in self.controls.items()}
        pair = pair_bars(self.y, self.x, *self._ticks, c["freq"])
        self.diagnostics = diagnose(pair, window=c["window"], hedge=c["hedge"])
        return self.diagnostics

    def update(self) -> bool:
        """Recompute for the current controls and redraw; False (and a message) if impossible."""
        try:
            pair_figure(self._diagnose(), self.figure)
        except DataError as exc:
            self.errors += 1
            self.status.value = f"<span style='color:#c0504d'>cannot show this choice: {exc}</span>"
            return False
        self._say_ok()
        return True

    def _say_ok(self) -> None:
        d = self.diagnostics
        assert d is not None
        self.status.value = (f"{len(d.pair)} common {d.pair.freq} bars, "
                             f"{d.stats.index[0]} .. {d.stats.index[-1]} (UTC)")


def compare_indicators(a: pd.Series, b: pd.Series, *, upper: float = 70.0,
                       lower: float = 30.0) -> dict[str, float]:
    """How close two oscillators are on the rows where both are defined.

    Returns ``rows``, ``corr`` (Pearson), ``mean_abs_diff``, ``max_abs_diff`` and
    ``zone_agreement``: the share of rows where both are above ``upper``, both below
    ``lower``, or both in between (the signal an RSI-style indicator is read for).
    """
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    if len(both) < 2:
        raise DataError("compare_indicators: fewer than 2 rows where both are defined; "
                        "use more bars or shorter windows")

    def zone(s: pd.Series) -> np.ndarray:
        return np.where(s > upper, 1, np.where(s < lower, -1, 0))
    diff = (both["a"] - both["b"]).abs()
    return {"rows": len(both), "corr": float(both["a"].corr(both["b"])),
            "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "zone_agreement": float((zone(both["a"]) == zone(both["b"])).mean())}


def indicator_figure(bars: pd.DataFrame, series: Mapping[str, pd.Series], *,
                     title: str = "", levels: Sequence[float] = ()) -> go.Figure:
    """Close price above, the given indicator series below (with dashed lines at ``levels``,
    e.g. 30 and 70 for an RSI), on one UTC time axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45],
                        vertical_spacing=0.05)
    t = _x(bars.index)
    fig.add_scatter(x=t, y=bars["close"].to_numpy(np.float64), name="close", mode="lines",
                    row=1, col=1)
    for name, s in series.items():
        fig.add_scatter(x=_x(s.index), y=s.to_numpy(np.float64), name=name, mode="lines",
                        row=2, col=1)
    for level in levels:
        fig.add_hline(y=level, line={"dash": "dash", "color": "grey", "width": 1}, row=2, col=1)
    fig.update_xaxes(type="date")
    fig.update_layout(height=500, title=title, xaxis2_title="time (UTC)",
                      margin={"l": 60, "r": 20, "t": 50, "b": 30})
    return fig


class LiveChart:
    """Price and registered indicators of one symbol, refreshed from a tick store.

    Each :meth:`refresh` reads only the rows stored since the last one
    (:meth:`TickStore.read_new`), keeps the ticks of the newest ``max_bars`` bars, resamples
    them and recomputes the chosen indicators from :data:`quantkit.analytics.registry`:
    overlays (``overlay=True``) on the price panel, the others below. :meth:`start` runs it on
    the kernel's event loop, like widget callbacks, so no lock is needed.

    Parameters
    ----------
    store
        A :class:`~quantkit.TickStore` (e.g. ``quantkit.start(...).store``) or its path.
    symbol
        The symbol to draw.
    indicators
        Registry names, e.g. ``("bollinger", "rsi")``.
    freq, max_bars, interval
        Bar length, bars drawn, seconds between refreshes.
    """

    def __init__(self, store: TickStore | str | Path, symbol: str, *,
                 indicators: Sequence[str] = ("bollinger",), freq: str = "1s",
                 max_bars: int = 300, interval: float = 0.5) -> None:
        self.step_ms = freq_ms(freq)
        for name in indicators:
            registry.get(name)  # unknown names fail now, listing the registered ones
        if max_bars < 2:
            raise DataError(f"max_bars must be at least 2, got {max_bars}")
        self.store = _open(store)
        self.symbol = symbol.upper()
        self.freq = freq
        self.indicators = list(indicators)
        self.max_bars, self.interval = int(max_bars), float(interval)
        self.cursor = 0
        self.refreshes = 0
        self.last_error: str | None = None
        self.bars = resample_ohlcv(_empty_ticks(), freq)
        self.values: dict[str, pd.Series] = {}
        self._ticks = _empty_ticks()
        self._task: asyncio.Task | None = None
        self.figure = go.FigureWidget(make_subplots(
            rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.04))
        self.figure.add_scatter(x=[], y=[], name=f"{self.symbol} close", mode="lines",
                                row=1, col=1)
        self.figure.update_xaxes(type="date")
        self.figure.update_layout(height=520, uirevision="live", xaxis2_title="time (UTC)",
                                  title=f"{self.symbol} {freq} bars, live from "
                                        f"{self.store.path.name}",
                                  margin={"l": 60, "r": 20, "t": 50, "b": 30})
        self.status = w.HTML()
        self.container = w.VBox([self.status, self.figure])

    def refresh(self) -> bool:
        """Read new trades and redraw; False when nothing new arrived."""
        batch = self.store.read_new(self.cursor, symbols=[self.symbol])
        self.cursor = batch.cursor
        if batch.frame.empty and self.refreshes:
            return False
        if not batch.frame.empty:
            ticks = pd.concat([self._ticks, batch.frame.drop(columns="symbol")])
            newest = int(ticks.index.max().value // 1_000_000)
            keep_from = newest - newest % self.step_ms - (self.max_bars - 1) * self.step_ms
            self._ticks = ticks[ticks.index >= pd.Timestamp(keep_from, unit="ms", tz="UTC")]
        self.bars = resample_ohlcv(self._ticks, self.freq).tail(self.max_bars)
        self.values = self._compute()
        self._draw()
        self.refreshes += 1
        self.status.value = (f"{len(self.bars)} bars, last trade "
                             f"{self._ticks.index.max() if len(self._ticks) else '-'} (UTC), "
                             f"refresh {self.refreshes}")
        return True

    def _compute(self) -> dict[str, pd.Series]:
        out: dict[str, pd.Series] = {}
        for name in self.indicators:
            try:
                values = registry.compute(name, self.bars)
            except DataError:  # too few bars yet for its window
                continue
            cols = values.items() if isinstance(values, pd.DataFrame) else [(None, values)]
            for col, s in cols:
                out[name if col is None else f"{name} {col}"] = s
        return out

    def _draw(self) -> None:
        fig = self.figure
        for label in self.values:  # traces for new indicator columns, before the batch
            if label not in {tr.name for tr in fig.data}:
                row = 1 if registry.get(label.split(" ")[0]).overlay else 2
                fig.add_scatter(x=[], y=[], name=label, mode="lines", line={"width": 1},
                                row=row, col=1)
        by_name = {tr.name: tr for tr in fig.data}
        with fig.batch_update():
            fig.data[0].x = _x(self.bars.index)
            fig.data[0].y = self.bars["close"].to_numpy(np.float64)
            for label, s in self.values.items():
                by_name[label].x, by_name[label].y = _x(s.index), s.to_numpy(np.float64)

    def start(self) -> None:
        """Refresh every ``interval`` seconds on the running event loop until :meth:`stop`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise QuantkitError("LiveChart.start() needs a running event loop, as in a Jupyter "
                                "kernel; elsewhere call refresh() yourself") from None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # a task's exception would vanish: show it instead
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.status.value = f"<span style='color:#c0504d'>{self.last_error}</span>"
            await asyncio.sleep(self.interval)


def _empty_ticks() -> pd.DataFrame:
    idx = pd.DatetimeIndex([], dtype="datetime64[ms, UTC]", name="time")
    return pd.DataFrame({"price": np.array([], np.float64), "qty": np.array([], np.float64),
                         "is_buyer_maker": np.array([], bool), "id": np.array([], np.int64),
                         "first_id": np.array([], np.int64), "last_id": np.array([], np.int64)},
                        index=idx)
