"""The dashboard's one Plotly figure: eight stacked panels sharing a UTC time axis.

:func:`build_figure` creates the :class:`~plotly.graph_objects.FigureWidget` and its fixed
traces once (each named by its ``meta``); :func:`draw` pushes new arrays into those traces.
Pure helpers (:func:`epoch_ms`, :func:`crossings`) turn pandas objects into what Plotly needs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from traitlets import observe

__all__ = [
    "PANELS",
    "TRACE_UIDS",
    "build_figure",
    "crossings",
    "draw",
    "epoch_ms",
    "set_overlays",
]

#: Panel row (1-based) -> (key, relative height). One figure rather than one per panel: each
#: FigureWidget carries Plotly's ~5 MB bundle in its widget state, and a shared x axis keeps
#: the user's zoom identical across panels.
PANELS: dict[str, tuple[int, float]] = {
    "y": (1, 0.20), "x": (2, 0.20), "volume": (3, 0.07), "spread": (4, 0.13),
    "zscore": (5, 0.13), "corr": (6, 0.08), "beta": (7, 0.08), "osc": (8, 0.11),
}

# Calm palette: one muted colour per leg, grey for derived lines, soft red/green for signals.
LEG_COLOURS = {"y": "#1f5f8b", "x": "#b5651d"}
UP, DOWN = "#2e8b57", "#c0504d"
GREY = "#7f7f7f"
OPEN_BAR = "rgba(127,127,127,0.45)"

#: Fixed traces, in order, with the panel each lives in. Overlay traces follow them.
TRACE_UIDS: tuple[tuple[str, str], ...] = (
    ("y-candles", "y"), ("y-open-candle", "y"), ("y-line", "y"), ("y-open-line", "y"),
    ("x-candles", "x"), ("x-open-candle", "x"), ("x-line", "x"), ("x-open-line", "x"),
    ("y-volume", "volume"), ("x-volume", "volume"),
    ("band-upper", "spread"), ("band-lower", "spread"), ("spread-mean", "spread"),
    ("spread", "spread"),
    ("zscore", "zscore"), ("z-entries", "zscore"), ("z-exits", "zscore"),
    ("corr", "corr"), ("beta", "beta"), ("osc-axis", "osc"),
)
N_FIXED = len(TRACE_UIDS)


class LiveFigureWidget(go.FigureWidget):
    """A FigureWidget whose traces are current when a browser view connects late.

    Plotly syncs the full figure (``_widget_data``/``_widget_layout``) only when the widget
    is created; later changes travel as one-off messages. Voila's preheated kernel runs the
    notebook, and so the first refreshes, before anyone visits: the view would start from the
    creation-time traces (no data, no indicator traces). The traces are therefore rebuilt
    whenever a view asks for the state, at no cost to live updates.

    The layout is deliberately left alone: refreshing ``_widget_layout`` after creation makes
    plotly.py's default-tracking drop explicit axis settings in the browser (date axes turned
    linear, checked in Voila 0.5.13 / plotly 7.1). Whatever the layout needs at first view
    (axis titles, threshold lines) is therefore set before the widget is created.
    """

    #: Date axes (``"xaxis"``, ``"xaxis2"`` ...) whose type must survive data updates.
    date_axes: tuple[str, ...] = ()

    def _send_update_msg(self, restyle_data: dict, relayout_data: dict,
                         trace_indexes: Any = None, source_view_id: Any = None) -> None:
        # plotly.js resets the type of every axis whose traces get new x data and autotypes
        # numbers as linear: our epoch-ms x values would read "1.7954T". Only an update that
        # names the type keeps it, and naming the type also resets the range, so the user's
        # zoom (which the views report back to us) goes along with it.
        if restyle_data and self.date_axes:
            keep: dict[str, Any] = {}
            for ax in self.date_axes:
                keep[f"{ax}.type"] = "date"
                if ax in self._zoomed and self.layout[ax].range is not None:
                    keep[f"{ax}.range"] = list(self.layout[ax].range)
            relayout_data = {**keep, **(relayout_data or {})}
        super()._send_update_msg(restyle_data, relayout_data, trace_indexes, source_view_id)

    def _send_restyle_msg(self, restyle_data: dict, trace_indexes: Any = None,
                          source_view_id: Any = None) -> None:
        # A bare restyle would reset the axis types (see above): send it as an update.
        self._send_update_msg(restyle_data, {}, trace_indexes, source_view_id)

    @observe("_js2py_relayout")  # replaces plotly's handler (traitlets registers by name)
    def _handler_js2py_relayout(self, change: dict[str, Any]) -> None:
        # The user zoomed (ranges) or reset (autorange) in the browser: remember which.
        msg = change.get("new") or {}
        for key, value in (msg.get("relayout_data") or {}).items():
            ax = key.split(".", 1)[0]
            if ax in self.date_axes and ".range" in key:
                self._zoomed.add(ax)
            elif ax in self.date_axes and key.endswith(".autorange") and value:
                self._zoomed.discard(ax)
        super()._handler_js2py_relayout(change)

    def reset_zoom(self) -> None:
        """Back to autorange on every time axis (after the pair or timeframe changed)."""
        if self._zoomed:
            self._zoomed.clear()
            self._send_relayout_msg({f"{ax}.autorange": True for ax in self.date_axes})

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        if key is None and hasattr(self, "_data"):  # (not while still constructing)
            # Straight into the trait store: assigning the trait would broadcast it.
            self._trait_values["_widget_data"] = deepcopy(self._data)
        return super().get_state(key, drop_defaults=drop_defaults)


def epoch_ms(index: pd.Index) -> np.ndarray:
    """Milliseconds since the epoch as float64: Plotly reads numbers on a date axis as UTC ms.

    float64 travels to the browser as a binary buffer; datetimes and int64 go as JSON lists,
    about 25 times slower for large windows.
    """
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return (idx.as_unit("ns").asi8 // 1_000_000).astype(np.float64)


def _f64(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def crossings(z: pd.Series, entry: float, exit: float) -> tuple[pd.Series, pd.Series]:
    """Where the z-score crosses out through ``±entry`` and back in through ``±exit``.

    Parameters
    ----------
    z
        The z-score series (NaN during warm-up).
    entry, exit
        Thresholds with ``0 <= exit < entry``.

    Returns
    -------
    (entries, exits)
        The z values at the bars where ``|z|`` first reaches ``entry`` (previous bar below it),
        and where ``|z|`` falls to ``exit`` or below (previous bar above it).

    Notes
    -----
    An entry is :math:`|z_t| \\ge e \\wedge |z_{t-1}| < e`; an exit is
    :math:`|z_t| \\le x \\wedge |z_{t-1}| > x`. Bars after a NaN never count as crossings.
    """
    a = z.abs()
    prev = a.shift(1)
    valid = a.notna() & prev.notna()
    entries = z[valid & (a >= entry) & (prev < entry)]
    exits = z[valid & (a <= exit) & (prev > exit)]
    return entries, exits


def build_figure(*, y: str, x: str, entry: float, exit: float,
                 height: int = 980) -> LiveFigureWidget:
    """The dashboard figure with its fixed traces (empty), axes in UTC and a calm layout.

    ``y``/``x`` name the price panels and ``entry``/``exit`` place the z-score threshold lines.
    """
    rows = len(PANELS)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.018,
                        row_heights=[h for _, h in PANELS.values()])
    for uid, panel in TRACE_UIDS:
        fig.add_trace(_empty_trace(uid), row=PANELS[panel][0], col=1)
    fig.update_layout(
        height=height, margin=dict(l=70, r=20, t=10, b=40), template="plotly_white",
        showlegend=True, legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom",
                                     font=dict(size=11)),
        hovermode="x unified", font=dict(family="Inter, Segoe UI, Helvetica, Arial", size=12),
        # Kept constant while the data streams in, so zoom and pan survive every update;
        # changed on purpose when the pair or timeframe changes.
        uirevision="start", bargap=0.1, barmode="group",
    )
    for r in range(1, rows + 1):
        fig.update_xaxes(row=r, col=1, type="date", rangeslider_visible=False, showgrid=True,
                         gridcolor="#eeeeee", hoverformat="%Y-%m-%d %H:%M:%S UTC")
        fig.update_yaxes(row=r, col=1, gridcolor="#eeeeee", zeroline=False,
                         title_font=dict(size=11), automargin=True)
    fig.update_xaxes(row=rows, col=1, title_text="time (UTC)")
    for key, title in panel_titles(y, x).items():
        fig.update_yaxes(row=PANELS[key][0], col=1, title_text=title)
    fig.update_layout(shapes=threshold_shapes(entry, exit))
    widget = LiveFigureWidget(fig)
    widget._zoomed = set()
    widget.date_axes = tuple(f"xaxis{'' if r == 1 else r}" for r in range(1, rows + 1))
    return widget


def panel_titles(y: str, x: str) -> dict[str, str]:
    """The y-axis title of each panel."""
    return {"y": y, "x": x, "volume": "volume (USDT)", "spread": "spread", "zscore": "z-score",
            "corr": "corr", "beta": "β", "osc": "oscillators"}


def _empty_trace(uid: str) -> go.BaseTraceType:
    leg = uid[0]
    if uid.endswith("candles"):
        return go.Candlestick(meta=uid, name="closed bars", showlegend=False,
                              increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
                              decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN))
    if uid.endswith("open-candle"):
        return go.Candlestick(meta=uid, name="open bar", showlegend=False,
                              increasing=dict(line=dict(color=GREY, width=1), fillcolor=OPEN_BAR),
                              decreasing=dict(line=dict(color=GREY, width=1), fillcolor=OPEN_BAR))
    if uid.endswith("open-line"):
        return go.Scatter(meta=uid, mode="lines", name="open bar", showlegend=False,
                          line=dict(color=LEG_COLOURS[leg], width=1.5, dash="dot"))
    if uid.endswith("-line"):
        return go.Scatter(meta=uid, mode="lines", name="close", showlegend=False,
                          line=dict(color=LEG_COLOURS[leg], width=1.5))
    if uid.endswith("volume"):
        return go.Bar(meta=uid, name="volume", showlegend=False,
                      marker=dict(color=LEG_COLOURS[leg], line=dict(width=0)))
    if uid.startswith("band"):
        fill = "tonexty" if uid == "band-lower" else None
        return go.Scatter(meta=uid, mode="lines", name="mean ± entry·σ", showlegend=False,
                          line=dict(color="rgba(31,95,139,0.35)", width=1),
                          fill=fill, fillcolor="rgba(31,95,139,0.07)")
    if uid == "spread-mean":
        return go.Scatter(meta=uid, mode="lines", name="rolling mean", showlegend=False,
                          line=dict(color=GREY, width=1, dash="dash"))
    if uid == "spread":
        return go.Scatter(meta=uid, mode="lines", name="spread", showlegend=False,
                          line=dict(color="#4b4b8f", width=1.5))
    if uid == "zscore":
        return go.Scatter(meta=uid, mode="lines", name="z-score", showlegend=False,
                          line=dict(color="#4b4b8f", width=1.5))
    if uid == "z-entries":
        return go.Scatter(meta=uid, mode="markers", name="entry crossing", showlegend=False,
                          marker=dict(symbol="triangle-up", size=9, color=DOWN))
    if uid == "z-exits":
        return go.Scatter(meta=uid, mode="markers", name="exit crossing", showlegend=False,
                          marker=dict(symbol="circle-open", size=8, color=UP, line=dict(width=2)))
    if uid == "corr":
        return go.Scatter(meta=uid, mode="lines", name="rolling corr", showlegend=False,
                          line=dict(color="#2a7f62", width=1.5))
    if uid == "beta":
        return go.Scatter(meta=uid, mode="lines", name="hedge ratio β", showlegend=False,
                          line=dict(color="#8f4b7f", width=1.5))
    if uid == "osc-axis":
        # Plotly draws no axes for a panel without traces; this empty one keeps the bottom
        # panel, and the shared time axis under it, visible when no oscillator is chosen.
        return go.Scatter(meta=uid, x=[], y=[], mode="lines", showlegend=False,
                          hoverinfo="skip")
    raise ValueError(f"unknown trace uid {uid!r}")


def _trace(fig: go.FigureWidget, uid: str) -> go.BaseTraceType:
    # Traces are named by ``meta``: FigureWidget replaces any ``uid`` with its own.
    return fig.data[[t.meta for t in fig.data].index(uid)]


def set_overlays(fig: go.FigureWidget, specs: Sequence[tuple[str, str, str, bool]]) -> None:
    """Replace the indicator traces: one line per ``(uid, leg, label, overlay)``.

    Overlays go on their leg's price panel; other indicators (RSI ...) on the oscillator panel.
    """
    fig.data = fig.data[:N_FIXED]
    palette = ["#8c6bb1", "#41ab5d", "#e6550d", "#3182bd", "#c51b8a", "#636363"]
    names: list[str] = []
    for uid, leg, label, overlay in specs:
        name = uid.split("-")[1]  # "ind-<name>-<leg>[-<column>]"
        if name not in names:
            names.append(name)
        # One colour per indicator; in the shared oscillator panel leg x is dotted; a band's
        # middle line is dashed.
        dash = ("dot" if leg == "x" and not overlay else
                "dash" if uid.endswith("-middle") else None)
        row = PANELS[leg][0] if overlay else PANELS["osc"][0]
        fig.add_trace(go.Scatter(meta=uid, name=label, mode="lines", showlegend=False,
                                 opacity=0.75,
                                 line=dict(color=palette[names.index(name) % len(palette)],
                                           width=1, dash=dash)),
                      row=row, col=1)


def draw(fig: go.FigureWidget, *, legs: Mapping[str, pd.DataFrame], stats: pd.DataFrame,
         entry: float, exit: float, candles: bool,
         overlays: Mapping[str, pd.Series]) -> None:
    """Push bars, stats and indicator values into the figure's traces (call in batch_update).

    Parameters
    ----------
    legs
        ``{"y": bars, "x": bars}``: resample_ohlcv columns plus bool ``is_open``.
    stats
        LivePair.stats() columns: ``spread, spread_mean, spread_std, zscore, corr, beta``.
    overlays
        Indicator trace uid -> values on its leg's bar index.
    """
    for leg, bars in legs.items():
        is_open = bars["is_open"].to_numpy(bool)
        closed, opened = bars[~is_open], bars[is_open]
        for uid, part in ((f"{leg}-candles", closed), (f"{leg}-open-candle", opened)):
            t = _trace(fig, uid)
            t.x = epoch_ms(part.index)
            t.open, t.high = _f64(part["open"]), _f64(part["high"])
            t.low, t.close = _f64(part["low"]), _f64(part["close"])
            t.visible = candles
        line = _trace(fig, f"{leg}-line")
        line.x, line.y = epoch_ms(closed.index), _f64(closed["close"])
        line.visible = not candles
        # The still-open bar hangs off the last closed close as a dotted segment.
        tail = bars.iloc[-2:] if len(opened) else bars.iloc[:0]
        open_line = _trace(fig, f"{leg}-open-line")
        open_line.x, open_line.y = epoch_ms(tail.index), _f64(tail["close"])
        open_line.visible = not candles
        vol = _trace(fig, f"{leg}-volume")
        vol.x, vol.y = epoch_ms(bars.index), _f64(bars["quote_volume"])
        vol.marker.opacity = np.where(is_open, 0.35, 0.8).astype(np.float64)

    t = epoch_ms(stats.index)
    mean, std = stats["spread_mean"], stats["spread_std"]
    for uid, values in (("spread", stats["spread"]), ("spread-mean", mean),
                        ("band-upper", mean + entry * std), ("band-lower", mean - entry * std),
                        ("zscore", stats["zscore"]), ("corr", stats["corr"]),
                        ("beta", stats["beta"])):
        tr = _trace(fig, uid)
        tr.x, tr.y = t, _f64(values)
    entries, exits = crossings(stats["zscore"], entry, exit)
    for uid, points in (("z-entries", entries), ("z-exits", exits)):
        tr = _trace(fig, uid)
        tr.x, tr.y = epoch_ms(points.index), _f64(points)
    for uid, values in overlays.items():
        tr = _trace(fig, uid)
        tr.x, tr.y = epoch_ms(values.index), _f64(values)


def threshold_shapes(entry: float, exit: float) -> list[dict[str, Any]]:
    """Horizontal lines at ±entry (solid) and ±exit (dotted) across the z-score panel."""
    row = PANELS["zscore"][0]
    yref = f"y{row}"
    shapes = []
    for level, dash, colour in ((entry, "solid", "rgba(192,80,77,0.6)"),
                                (-entry, "solid", "rgba(192,80,77,0.6)"),
                                (exit, "dot", "rgba(46,139,87,0.7)"),
                                (-exit, "dot", "rgba(46,139,87,0.7)"),
                                (0.0, "solid", "rgba(0,0,0,0.15)")):
        shapes.append(dict(type="line", xref=f"x{row} domain", x0=0, x1=1, yref=yref, y0=level,
                           y1=level, line=dict(color=colour, width=1, dash=dash)))
    return shapes
