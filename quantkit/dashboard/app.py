"""The live pair dashboard: ipywidgets controls, one Plotly figure, a status bar.

:class:`Dashboard` builds its widgets once, reacts to every control through one change
handler, and redraws through one refresh path (:meth:`Dashboard.refresh`) that an asyncio task
on the kernel's event loop calls a few times per second. It only reads the tick store: new rows
come from :meth:`TickStore.read_new` and feed :class:`quantkit.analytics.LivePair`, which
keeps a bounded window of bars, so a refresh costs the same after an hour or a week.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import ConfigError, DataError, StorageError
from ..storage import TickStore
from . import figures

__all__ = ["FREQ_OPTIONS", "HEDGE_OPTIONS", "Dashboard"]

log = logging.getLogger(__name__)

#: Timeframe choices: label -> ``freq`` understood by :func:`quantkit.analytics.resample_ohlcv`.
FREQ_OPTIONS: tuple[tuple[str, str], ...] = (
    ("1 s", "1s"), ("5 s", "5s"), ("15 s", "15s"), ("1 min", "1min"), ("5 min", "5min"),
    ("15 min", "15min"), ("1 h", "1h"),
)
HEDGE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("Rolling OLS", "rolling_ols"), ("OLS", "ols"), ("Kalman", "kalman"),
)
_FREQ_MS = {"1s": 1_000, "5s": 5_000, "15s": 15_000, "1min": 60_000, "5min": 300_000,
            "15min": 900_000, "1h": 3_600_000}
#: Controls whose change needs the bars recomputed from the store (the rest only redraw).
_RELOAD = {"y", "x", "freq", "window", "hedge", "mode", "start", "end"}
#: A summary (with its cointegration test) is recomputed at most this often, in seconds.
_SUMMARY_EVERY = 2.0
_STATE_COLOURS = {"live": "#2e8b57", "connecting": "#c99a2e", "reconnecting": "#c0504d",
                  "stopped": "#7f7f7f"}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    value = float(value)
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    return f"{value:.{digits}g}"


def _utc(ms: float | None) -> str:
    if not ms:
        return "–"
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%H:%M:%S.%f")[:-3] + " UTC"


def _parse_utc(text: str, name: str) -> pd.Timestamp | None:
    """A time typed by the user; naive times are UTC, like every time on the page."""
    if not text.strip():
        return None
    try:
        ts = pd.Timestamp(text.strip())
    except ValueError:
        raise ConfigError(f"{name}: cannot read {text!r} as a time; "
                          "write e.g. 2024-08-08 23:55") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class Dashboard:
    """Live view of a pair of symbols from a tick store.

    Parameters
    ----------
    store
        A :class:`~quantkit.TickStore` or the path of one. A path that does not exist yet is
        opened as soon as ingestion creates it (the page says it is waiting).
    symbols
        Symbols offered in the pair pickers; by default those in the store.
    pair
        The two legs ``(y, x)``: ``y`` is regressed on ``x``; by default the first two symbols.
    freq, window, entry, exit, hedge, overlays, candles
        Initial control values: bar length, rolling window in bars, z-score entry and exit
        thresholds, hedge-ratio method, indicator names from the registry, candles or lines.
    max_bars
        Bars kept and drawn per leg: every update re-sends whole arrays, so this bounds the
        cost of an update and the kernel's memory.
    interval
        Seconds between refreshes of the live loop (a few per second at most).
    status
        Callable returning the ingestion stats dict (see :meth:`TickStore.ingest_status`);
        by default the store's published status.
    autostart
        Start the live loop on the running event loop (the kernel's) right away.

    Examples
    --------
    >>> app = Dashboard("~/.quantkit/demo.db")                        # doctest: +SKIP
    >>> app.container                                                 # doctest: +SKIP
    """

    def __init__(self, store: TickStore | str | Path, *, symbols: Sequence[str] | None = None,
                 pair: tuple[str, str] | None = None, freq: str = "1s", window: int = 60,
                 entry: float = 2.0, exit: float = 0.5, hedge: str = "rolling_ols",
                 overlays: Sequence[str] = ("bollinger", "rsi"), candles: bool = True,
                 max_bars: int = 600, interval: float = 0.5,
                 status: Callable[[], Mapping[str, Any] | None] | None = None,
                 autostart: bool = True) -> None:
        if freq not in _FREQ_MS:
            raise ConfigError(f"freq: {freq!r} is not offered; use one of {', '.join(_FREQ_MS)}")
        if not 0 <= exit < entry:
            raise ConfigError(f"exit/entry: need 0 <= exit < entry, got exit={exit}, "
                              f"entry={entry}")
        if not 2 <= window <= max_bars // 2:
            raise ConfigError(f"window: must be between 2 and max_bars / 2 = {max_bars // 2} "
                              f"(the z-score needs two windows of bars), got {window}")
        if hedge not in {v for _, v in HEDGE_OPTIONS}:
            raise ConfigError(f"hedge: {hedge!r} is not offered; use one of "
                              f"{', '.join(v for _, v in HEDGE_OPTIONS)}")
        if pair is not None and (len(pair) != 2 or pair[0] == pair[1]):
            raise ConfigError(f"pair: give two different symbols, e.g. ('BTCUSDT', 'ETHUSDT'), "
                              f"got {pair!r}")
        if interval < 0.1:
            raise ConfigError(f"interval: {interval} s would flood the browser; use >= 0.1")
        self._path = store.path if isinstance(store, TickStore) else Path(store).expanduser()
        self._store: TickStore | None = store if isinstance(store, TickStore) else None
        self._status_fn = status
        self.max_bars = int(max_bars)
        self.interval = float(interval)
        self._open_store()
        symbols = list(symbols or (self._store.symbols() if self._store else []))
        if pair:
            symbols += [s for s in pair if s not in symbols]
        if len(symbols) < 2:
            symbols += [s for s in Settings.load().symbols if s not in symbols]
        pair = pair or (symbols[0], symbols[1])

        # Live state: where the read cursor is, what the engine holds, and what went wrong.
        self.cursor = 0
        self.rows_read = 0
        self.refreshes = 0
        self.draws = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_trade_ms: float | None = None
        self._engine: Any = None
        self._dedupe: dict[str, np.ndarray] = {}
        self._reload_needed = True
        self._draw_needed = True
        self._overlay_specs: list[tuple[str, str, str, bool]] = []
        self._summary: dict[str, Any] = {}
        self._levels = (entry, exit)
        self._columns: dict[str, list[str | None]] = {}
        self._summary_at = 0.0
        self._note = ""
        self._task: asyncio.Task | None = None

        self.controls = self._build_controls(symbols, pair, freq, window, entry, exit, hedge,
                                             overlays, candles)
        self.figure = figures.build_figure(y=pair[0], x=pair[1], entry=entry, exit=exit)
        self.summary = w.HTML(layout=w.Layout(width="100%"))
        self.status_bar = w.HTML(layout=w.Layout(width="100%"))
        self.container = self._build_container()
        for ctl in self.controls.values():
            ctl.observe(self._on_change, names="value")
        self._watch_registry()
        self._render_status()
        if autostart:
            self.start()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Dashboard:
        """The dashboard the notebook shows, configured from ``QUANTKIT_*`` variables.

        ``QUANTKIT_DB`` and ``QUANTKIT_SYMBOLS`` say what to read; ``QUANTKIT_INDICATORS``
        (files separated by ``os.pathsep``) are run first to register their indicators. Under ``quantkit dashboard``
        ``QUANTKIT_DASHBOARD_READONLY=1`` is set: the command ingests, every kernel only reads.
        Otherwise (e.g. in JupyterLab) :func:`quantkit.start` ingests in this kernel, or
        attaches as a reader when another process already ingests into the database.
        """
        env = os.environ if env is None else env
        if env.get("QUANTKIT_INDICATORS"):  # indicator files, e.g. saved from a notebook cell
            from ..analytics import load_indicators

            load_indicators(env["QUANTKIT_INDICATORS"].split(os.pathsep))
        settings = Settings.load(env)
        kwargs.setdefault("symbols", None)
        if env.get("QUANTKIT_DASHBOARD_READONLY") == "1":
            return cls(settings.db, **kwargs)
        from ..ingest import start

        feed = start(settings)
        app = cls(feed.store, status=feed.status, **kwargs)
        app.feed = feed
        return app

    def _build_controls(self, symbols: list[str], pair: tuple[str, str], freq: str,
                        window: int, entry: float, exit: float, hedge: str,
                        overlays: Sequence[str], candles: bool) -> dict[str, w.ValueWidget]:
        style = {"description_width": "88px"}
        box = w.Layout(width="250px")
        names = self._indicator_names()
        return {
            "y": w.Dropdown(options=symbols, value=pair[0], description="leg y",
                            style=style, layout=box),
            "x": w.Dropdown(options=symbols, value=pair[1], description="leg x",
                            style=style, layout=box),
            "freq": w.Dropdown(options=FREQ_OPTIONS, value=freq, description="timeframe",
                               style=style, layout=box),
            "window": w.BoundedIntText(value=window, min=2, max=self.max_bars // 2, step=10,
                                       description="window", style=style, layout=box),
            "entry": w.FloatSlider(value=entry, min=0.5, max=4.0, step=0.1,
                                   description="z entry", style=style, layout=box,
                                   continuous_update=False, readout_format=".1f"),
            "exit": w.FloatSlider(value=exit, min=0.0, max=2.0, step=0.1,
                                  description="z exit", style=style, layout=box,
                                  continuous_update=False, readout_format=".1f"),
            "hedge": w.Dropdown(options=HEDGE_OPTIONS, value=hedge, description="hedge ratio",
                                style=style, layout=box),
            "overlays": w.SelectMultiple(options=names,
                                         value=tuple(o for o in overlays if o in names),
                                         rows=3, description="indicators", style=style,
                                         layout=box),
            "candles": w.ToggleButtons(options=[("candles", True), ("lines", False)],
                                       value=candles, style={"button_width": "80px"},
                                       layout=w.Layout(margin="2px 0 2px 92px")),
            "mode": w.ToggleButtons(options=[("live tail", "live"), ("history", "history")],
                                    value="live", style={"button_width": "80px"},
                                    layout=w.Layout(margin="2px 0 2px 92px")),
            "start": w.Text(value="", placeholder="e.g. 2024-08-08 23:55", description="from (UTC)",
                            style=style, layout=box, continuous_update=False),
            "end": w.Text(value="", placeholder="empty: up to the last trade",
                          description="to (UTC)", style=style, layout=box,
                          continuous_update=False),
        }

    def _build_container(self) -> w.Box:
        c = self.controls
        history = w.VBox([c["start"], c["end"]])
        self._history_box = history
        history.layout.display = "none"
        side = w.VBox([
            w.HTML("<b>Pair</b>"), c["y"], c["x"],
            w.HTML("<b>Bars</b>"), c["freq"], c["window"], c["candles"],
            w.HTML("<b>Signal</b>"), c["entry"], c["exit"], c["hedge"],
            w.HTML("<b>Overlays</b>"), c["overlays"],
            w.HTML("<b>Time</b>"), c["mode"], history,
        ], layout=w.Layout(width="270px", min_width="270px", padding="4px 8px 0 0"))
        title = w.HTML("<div style='font-size:17px;font-weight:600;color:#333;"
                       "padding:2px 0 4px 2px'>quantkit · live pair dashboard "
                       "<span style='font-weight:400;color:#888;font-size:13px'>"
                       "(all times UTC)</span></div>")
        main = w.VBox([self.summary, self.figure], layout=w.Layout(flex="1 1 auto",
                                                                  min_width="0"))
        return w.VBox([title, self.status_bar, w.HBox([side, main])],
                      layout=w.Layout(width="100%"))

    # -- the one change handler ----------------------------------------------------------------
    def _on_change(self, change: Mapping[str, Any]) -> None:
        try:
            name = next(k for k, v in self.controls.items() if v is change["owner"])
            c = self.controls
            self._note = ""
            if name in _RELOAD:  # remembered even if refused below, for when it is fixed
                self._reload_needed = True
            if name == "mode":
                self._history_box.layout.display = "" if change["new"] == "history" else "none"
            if c["y"].value == c["x"].value:
                self._note = "pick two different symbols for the pair"
            elif not c["exit"].value < c["entry"].value:
                self._note = "the exit threshold must be below the entry threshold"
            elif c["mode"].value == "history" and not c["start"].value.strip():
                self._note = "type the start of the history window (UTC), e.g. 2024-08-08 23:55"
            self._draw_needed = True
            if not self._note:
                self.refresh()
            self._render_status()
        except Exception as exc:  # noqa: BLE001 - callbacks must not die silently
            self._record_error(exc)

    # -- the one refresh path ------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read new rows, update the bars, and redraw if anything changed.

        Returns
        -------
        bool
            True when the figure was redrawn.
        """
        self.refreshes += 1
        if not self._open_store() or self._note:
            self._render_status()
            return False
        if self._reload_needed:
            self._reload()
        if self.controls["mode"].value == "live":
            self._read_new()
        drawn = False
        if self._draw_needed:
            self._draw()
            drawn = True
        self._render_status()
        return drawn

    def _open_store(self) -> bool:
        if self._store is None and self._path.exists():
            try:
                self._store = TickStore(self._path)
            except StorageError as exc:
                self._note = str(exc)
                return False
        return self._store is not None

    @property
    def pair(self) -> tuple[str, str]:
        """The chosen legs ``(y, x)``."""
        return self.controls["y"].value, self.controls["x"].value

    def _reload(self) -> None:
        """Rebuild the engine from stored history: the live tail or the chosen window."""
        from ..analytics import LivePair

        c = self.controls
        y, x = self.pair
        freq = c["freq"].value
        self._engine = LivePair(y, x, freq=freq, window=int(c["window"].value),
                                max_bars=self.max_bars, hedge=c["hedge"].value)
        store = self._store
        assert store is not None
        self.cursor = store.last_cursor()
        start, end = self._time_window(freq)
        frames = []
        for sym in (y, x):
            try:
                ticks = store.ticks(sym, start=start, end=end)
            except StorageError:  # no trades yet for this symbol
                continue
            frames.append(ticks.assign(symbol=sym))
        history = pd.concat(frames).sort_index(kind="stable") if frames else None
        # Rows stored while the history was read come back from read_new: drop them once.
        self._dedupe = ({sym: history.loc[history["symbol"] == sym, "id"].to_numpy()
                         for sym in (y, x)} if history is not None else {})
        if history is not None and len(history):
            self._engine.update(history)
            self.last_trade_ms = float(history.index.max().value // 1_000_000)
        self._reload_needed = False
        self._draw_needed = True
        self._summary_at = 0.0
        revision = f"{y}/{x}/{freq}/{c['mode'].value}"
        if self.figure.layout.uirevision != revision:
            self.figure.layout.uirevision = revision
            self.figure.reset_zoom()  # a new pair or timeframe starts unzoomed

    def _time_window(self, freq: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        c = self.controls
        if c["mode"].value == "history":
            if not c["start"].value.strip():
                raise ConfigError("from (UTC): give the start of the history window, e.g. "
                                  "2024-08-08 23:55")
            return _parse_utc(c["start"].value, "from (UTC)"), _parse_utc(c["end"].value,
                                                                          "to (UTC)")
        # The live tail is the last max_bars bars before the newest stored trade (not "now":
        # a store of recorded or archived trades must show something too).
        newest = self._newest_trade()
        if newest is None:
            return None, None
        return newest - pd.Timedelta(milliseconds=_FREQ_MS[freq] * self.max_bars), None

    def _newest_trade(self) -> pd.Timestamp | None:
        store = self._store
        assert store is not None
        newest = None
        for sym in self.pair:
            with contextlib.suppress(StorageError):
                hi = store.time_range(sym)[1]
                newest = hi if newest is None else max(newest, hi)
        return newest

    def _read_new(self) -> None:
        store = self._store
        assert store is not None
        batch = store.read_new(self.cursor, symbols=self.pair, limit=200_000)
        self.cursor = batch.cursor
        frame = batch.frame
        if not len(frame):
            return
        self.rows_read += len(frame)
        if self._dedupe:
            seen = np.zeros(len(frame), dtype=bool)
            for sym, ids in self._dedupe.items():
                mask = (frame["symbol"] == sym).to_numpy()
                seen |= mask & np.isin(frame["id"].to_numpy(), ids)
            self._dedupe = {}
            frame = frame[~seen]
        if len(frame):
            self._engine.update(frame)
            self.last_trade_ms = max(self.last_trade_ms or 0.0,
                                     float(frame.index.max().value // 1_000_000))
            self._draw_needed = True

    def _draw(self) -> None:
        engine = self._engine
        c = self.controls
        y, x = self.pair
        legs = {"y": engine.bars(y).iloc[-self.max_bars:],
                "x": engine.bars(x).iloc[-self.max_bars:]}
        stats = engine.stats().iloc[-self.max_bars:]
        overlays = self._compute_overlays(legs, {"y": y, "x": x})
        specs = [(uid, leg, label, overlay) for uid, (leg, label, overlay, _) in overlays.items()]
        if specs != self._overlay_specs:
            figures.set_overlays(self.figure, specs)  # trace list changes: outside the batch
            self._overlay_specs = specs
        now = time.monotonic()
        if now - self._summary_at >= _SUMMARY_EVERY:
            self._summary = dict(engine.summary())
            self._summary_at = now
        fig = self.figure
        with fig.batch_update():
            figures.draw(fig, legs=legs, stats=stats, entry=c["entry"].value,
                         exit=c["exit"].value, candles=c["candles"].value,
                         overlays={uid: v for uid, (*_, v) in overlays.items()})
            levels = (c["entry"].value, c["exit"].value)
            if levels != self._levels:
                fig.layout.shapes = figures.threshold_shapes(*levels)
                self._levels = levels
            for key, title in figures.panel_titles(y, x).items():
                row = figures.PANELS[key][0]
                axis = fig.layout[f"yaxis{'' if row == 1 else row}"]
                if axis.title.text != title:
                    axis.title.text = title
        self._render_summary(legs, stats)
        self._draw_needed = False
        self.draws += 1

    # -- indicators -----------------------------------------------------------------------------
    @staticmethod
    def _registry() -> Any:
        try:
            from ..analytics import registry
        except ImportError:
            return None
        return registry

    def _indicator_names(self) -> list[str]:
        reg = self._registry()
        return list(reg.names()) if reg is not None else []

    def _watch_registry(self) -> None:
        reg = self._registry()
        if reg is not None:
            reg.on_change(self._on_registry_change)

    def _on_registry_change(self, *args: Any, **kwargs: Any) -> None:
        """A notebook cell registered an indicator: offer it (keeping the current choice)."""
        try:
            ctl = self.controls["overlays"]
            chosen = ctl.value
            names = self._indicator_names()
            ctl.options = names
            ctl.value = tuple(n for n in chosen if n in names)
        except Exception as exc:  # noqa: BLE001 - shown on the page instead
            self._record_error(exc)

    def _compute_overlays(self, legs: Mapping[str, pd.DataFrame], symbols: Mapping[str, str]
                          ) -> dict[str, tuple[str, str, bool, pd.Series]]:
        """Trace uid -> (leg, label, overlay, values) for every chosen indicator and leg.

        The set of traces depends only on the choice, never on the data: an indicator still
        warming up gets empty traces, so no trace is added mid-stream (adding traces makes
        plotly.js redraw from scratch and drop the user's zoom).
        """
        reg = self._registry()
        out: dict[str, tuple[str, str, bool, pd.Series]] = {}
        if reg is None:
            return out
        empty = pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))
        for name in self.controls["overlays"].value:
            if name not in reg:
                continue
            ind = reg.get(name)
            columns = self._indicator_columns(name)
            for leg, bars in legs.items():
                values: Any = None
                if len(bars):
                    try:
                        values = reg.compute(name, bars.drop(columns=["is_open"]))
                    except DataError:  # too few bars yet for its window
                        values = None
                for col in columns:
                    label = f"{name} {symbols[leg]}" + (f" {col}" if col is not None else "")
                    uid = f"ind-{name}-{leg}" + (f"-{col}" if col is not None else "")
                    if values is None:
                        series = empty
                    elif isinstance(values, pd.DataFrame):
                        series = values[col] if col in values.columns else empty
                    else:
                        series = values
                    out[uid] = (leg, label, bool(ind.overlay), series)
        return out

    def _indicator_columns(self, name: str) -> list[str | None]:
        """An indicator's output columns (``[None]`` for a Series), learnt once on probe bars."""
        if name not in self._columns:
            reg = self._registry()
            rng = np.random.default_rng(0)
            close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 500)))
            probe = pd.DataFrame(
                {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
                 "volume": 1.0, "quote_volume": close, "trades": 1.0, "taker_buy_volume": 0.5},
                index=pd.date_range("2024-01-01", periods=500, freq="1s", tz="UTC"))
            values = reg.compute(name, probe)
            self._columns[name] = (list(values.columns) if isinstance(values, pd.DataFrame)
                                   else [None])
        return self._columns[name]

    # -- the live loop --------------------------------------------------------------------------
    def start(self) -> None:
        """Run :meth:`refresh` every ``interval`` seconds on the running event loop."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.info("no running event loop: call refresh() yourself or start() from a kernel")
            return
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        """Stop the live loop (and this kernel's ingestion, if it started one)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        feed = getattr(self, "feed", None)
        if feed is not None:
            feed.stop()

    async def _run(self) -> None:
        while True:
            began = time.perf_counter()
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one error
                self._record_error(exc)
            # Sleep what is left of the interval, but always yield a little to the widgets.
            await asyncio.sleep(max(self.interval - (time.perf_counter() - began), 0.05))

    def _record_error(self, exc: BaseException) -> None:
        self.errors += 1
        at = pd.Timestamp.now(tz="UTC").strftime("%H:%M:%S UTC")
        self.last_error = f"{type(exc).__name__}: {exc} (at {at})"
        log.error("dashboard update failed:\n%s", "".join(traceback.format_exception(exc)))
        with contextlib.suppress(Exception):
            self._render_status()

    # -- status and summary ----------------------------------------------------------------------
    def _ingest_status(self) -> Mapping[str, Any] | None:
        if self._status_fn is not None:
            return self._status_fn()
        if self._store is not None:
            return self._store.ingest_status()
        return None

    def _render_status(self) -> None:
        parts: list[str] = []
        st = None
        try:
            st = self._ingest_status()
        except Exception as exc:  # noqa: BLE001 - a status we cannot read is itself worth showing
            parts.append(f"status unreadable: {html.escape(str(exc))}")
        if self._store is None:
            state, colour = f"waiting for {self._path}", "#c99a2e"
        elif st is None:
            state, colour = "no ingester has written to this store", "#7f7f7f"
        elif (st.get("heartbeat_age_s") or 0) > 5:
            state, colour = f"stale: no heartbeat for {st['heartbeat_age_s']:.0f} s", "#c0504d"
        else:
            state = str(st.get("state", "?"))
            colour = _STATE_COLOURS.get(state, "#7f7f7f")
        parts.insert(0, f"<span style='color:{colour};font-weight:600'>● {html.escape(state)}"
                        "</span>")
        if st:
            lag = st.get("lag_ms")
            parts += [f"{float(st.get('msgs_per_s') or 0):,.0f} msgs/s",
                      f"lag {'–' if lag is None else f'{float(lag):,.0f} ms'}",
                      f"reconnects {st.get('reconnects', 0)}"]
            gap = st.get("last_gap")
            if gap:
                parts.append("last gap " + html.escape(
                    f"{gap.get('symbol', '')} {gap.get('from_id', '')}..{gap.get('to_id', '')} "
                    f"{gap.get('status', '')}".strip()))
            else:
                parts.append("no gaps")
        mode = self.controls["mode"].value
        parts.append("history (paused)" if mode == "history" else
                     f"last trade {_utc(self.last_trade_ms)}")
        if self._note:
            parts.append(f"<span style='color:#c99a2e'>{html.escape(self._note)}</span>")
        if self.last_error:
            parts.append(f"<span class='qk-error' style='color:#c0504d;font-weight:600'>"
                         f"update errors {self.errors}, last: {html.escape(self.last_error)}"
                         "</span>")
        self.status_bar.value = (
            f"<div class='qk-status' data-last-trade-ms='{int(self.last_trade_ms or 0)}' "
            f"data-rows-read='{self.rows_read}' data-draws='{self.draws}' "
            "style='font-size:12px;color:#555;background:#f3f4f6;border-radius:4px;"
            "padding:4px 10px;margin:0 0 6px 0'>" + " &nbsp;·&nbsp; ".join(parts) + "</div>")

    def _render_summary(self, legs: Mapping[str, pd.DataFrame], stats: pd.DataFrame) -> None:
        y, x = self.pair
        s = self._summary

        def last(frame: pd.DataFrame, col: str) -> float | None:
            return float(frame[col].iloc[-1]) if len(frame) else None

        hl = s.get("half_life")
        hl_text = _fmt(hl, 3) + (" bars" if hl is not None and np.isfinite(hl) else "")
        cards = [(y, _fmt(last(legs["y"], "close"), 6)), (x, _fmt(last(legs["x"], "close"), 6)),
                 ("β", _fmt(s.get("beta"))), ("z", _fmt(s.get("zscore"), 3)),
                 ("corr", _fmt(s.get("corr"), 3)), ("coint p", _fmt(s.get("pvalue"), 3)),
                 ("half-life", hl_text)]
        items = "".join(
            f"<div style='padding:4px 14px;border-right:1px solid #e5e5e5'>"
            f"<div style='font-size:11px;color:#888'>{html.escape(k)}</div>"
            f"<div style='font-size:16px;color:#222;font-variant-numeric:tabular-nums'>"
            f"{html.escape(v)}</div></div>" for k, v in cards)
        self.summary.value = (f"<div class='qk-summary' style='display:flex;flex-wrap:wrap;"
                              f"background:#fff;border:1px solid #e5e5e5;border-radius:4px;"
                              f"margin:0 0 4px 0'>{items}</div>")
