"""Technical indicators (RSI, Bollinger bands) and the registry dashboards list and plot.

``@indicator`` registers a function of a bars frame under a name with its parameters; it is
usable at once, and re-running the cell that defines it replaces the old version.
"""
from __future__ import annotations

import inspect
import runpy
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ._window import check_window, window_moments

__all__ = ["Indicator", "IndicatorRegistry", "bollinger", "indicator", "load_indicators",
           "registry", "rsi"]


def _close(close: pd.Series) -> pd.Series:
    if not isinstance(close, pd.Series):
        raise DataError(f"close: expected a pandas Series (e.g. bars['close']), "
                        f"got {type(close).__name__}")
    if len(close) == 0:
        raise DataError("close is empty: pass at least a few bars")
    return close.astype(np.float64)


def rsi(close: pd.Series, window: int = 14) -> pd.Series:
    """Relative strength index with Wilder's smoothing, as TA-Lib's ``RSI``.

    Parameters
    ----------
    close
        Close prices.
    window
        Smoothing length, ``2 <= window < len(close)``.

    Returns
    -------
    pandas.Series
        Values in [0, 100] on ``close``'s index; NaN for the first ``window`` rows.

    Notes
    -----
    With :math:`g_t = \\max(\\Delta p_t, 0)`, :math:`l_t = \\max(-\\Delta p_t, 0)`:
    :math:`G_w = \\frac{1}{w}\\sum_{t=1}^{w} g_t`, then
    :math:`G_t = G_{t-1} (w-1)/w + g_t / w` (same for :math:`L`), and
    :math:`RSI_t = 100\\, G_t / (G_t + L_t)` (0 when the price did not move at all).
    """
    from scipy.signal import lfilter  # deferred: scipy.signal is slow to import

    close = _close(close)
    window = check_window(window, len(close) - 1)
    d = np.diff(close.to_numpy())
    gain, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    out = np.full(len(close), np.nan)
    keep = (window - 1) / window
    avg = []
    for v in (gain, loss):
        first = v[:window].sum() / window
        rest = lfilter([1.0 / window], [1.0, -keep], v[window:], zi=[first * keep])[0]
        avg.append(np.concatenate(([first], rest)))
    g, l_ = avg
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = g + l_
        out[window:] = np.where(tot > 0, 100.0 * g / tot, 0.0)
    return pd.Series(out, index=close.index, name="rsi")


def bollinger(close: pd.Series, window: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Bollinger bands, as TA-Lib's ``BBANDS`` with a simple moving average.

    Returns
    -------
    pandas.DataFrame
        Columns ``middle, upper, lower`` on ``close``'s index, NaN for the first
        ``window - 1`` rows.

    Notes
    -----
    :math:`m_t` = mean of the last ``window`` closes, :math:`\\sigma_t` = their *population*
    standard deviation (``ddof=0``, as TA-Lib), upper/lower = :math:`m_t \\pm k \\sigma_t`.
    """
    close = _close(close)
    window = check_window(window, len(close))
    (mean,), co, floor = window_moments(close.to_numpy(), window=window)
    ss = co[(0, 0)]
    std = np.sqrt(np.where(ss > floor[0], ss, 0.0) / window)
    return pd.DataFrame({"middle": mean, "upper": mean + k * std, "lower": mean - k * std},
                        index=close.index)


@dataclass(frozen=True)
class Indicator:
    """A registered indicator: ``func(bars, **params)`` -> Series or DataFrame."""

    name: str
    func: Callable[..., pd.Series | pd.DataFrame] = field(repr=False)
    params: Mapping[str, Any]
    #: True to draw on the price chart (bands); False for a panel of its own (RSI).
    overlay: bool
    doc: str = ""

    def __call__(self, bars: pd.DataFrame, **params: Any) -> pd.Series | pd.DataFrame:
        return self.func(bars, **{**self.params, **params})


Callback = Callable[[str, str], None]


class IndicatorRegistry:
    """Named indicators that dashboards can list and compute.

    ``on_change`` callbacks are called as ``callback(event, name)`` with ``event`` one of
    ``"registered"``, ``"replaced"``, ``"removed"``; a failing callback is reported as a
    warning and never stops the registration.
    """

    def __init__(self) -> None:
        self._items: dict[str, Indicator] = {}
        self._callbacks: list[Callback] = []

    def register(self, func: Callable[..., Any], name: str | None = None, *,
                 overlay: bool = False, **params: Any) -> Indicator:
        """Register ``func`` under ``name`` (default: its ``__name__``); replaces any same name.

        Parameters default to ``func``'s keyword defaults, overridden by ``params``.
        """
        if not callable(func):
            raise DataError(f"indicator: expected a function of bars, got {type(func).__name__}")
        name = name or func.__name__
        if not isinstance(name, str) or not name.isidentifier():
            raise DataError(f"indicator name {name!r} must be an identifier like 'my_rsi'")
        sig = inspect.signature(func)
        positional = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not positional:
            raise DataError(f"indicator {name!r}: the function must take the bars frame as "
                            "its first argument")
        defaults = {p.name: p.default for p in sig.parameters.values()
                    if p.default is not p.empty and p is not positional[0]}
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = set(params) - set(sig.parameters) if not has_var_kw else set()
        if unknown:
            raise DataError(f"indicator {name!r}: {func.__name__} has no parameter(s) "
                            f"{', '.join(sorted(unknown))}")
        item = Indicator(name=name, func=func,
                         params=MappingProxyType({**defaults, **params}),
                         overlay=bool(overlay), doc=inspect.getdoc(func) or "")
        event = "replaced" if name in self._items else "registered"
        self._items[name] = item
        self._notify(event, name)
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown name raises, listing the known ones)."""
        self.get(name)
        del self._items[name]
        self._notify("removed", name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def get(self, name: str) -> Indicator:
        try:
            return self._items[name]
        except KeyError:
            raise DataError(f"unknown indicator {name!r}; registered: "
                            f"{', '.join(self.names()) or 'none'}") from None

    def compute(self, name: str, bars: pd.DataFrame, **params: Any) -> pd.Series | pd.DataFrame:
        """``get(name)(bars, **params)``: the registered defaults, overridden by ``params``."""
        return self.get(name)(bars, **params)

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event, name)`` on every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return unsubscribe

    def _notify(self, event: str, name: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event, name)
            except Exception as exc:  # a broken dashboard hook must not break the notebook
                warnings.warn(f"indicator on_change callback {cb!r} failed: {exc!r}",
                              RuntimeWarning, stacklevel=3)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self.names())


#: The registry dashboards read.
registry = IndicatorRegistry()


def indicator(name: str | Callable[..., Any] | None = None, *, overlay: bool = False,
              **params: Any) -> Any:
    """Decorator registering a function of bars in :data:`registry`.

    Usable bare (``@indicator``) or with options (``@indicator("fast_rsi", window=7)``).
    The function is returned unchanged, so it stays callable as before.

    Examples
    --------
    >>> @indicator(overlay=True, span=50)
    ... def ema(bars, span=20):
    ...     return bars["close"].ewm(span=span).mean()
    >>> registry.get("ema").params["span"]
    50
    >>> registry.unregister("ema")
    """
    if callable(name):  # bare @indicator
        registry.register(name)
        return name

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        registry.register(func, name, overlay=overlay, **params)
        return func
    return decorate


def load_indicators(paths: Iterable[str | Path]) -> list[str]:
    """Run Python files that define indicators, registering them; return the new names.

    This is how an indicator prototyped in a notebook reaches dashboards in other kernels
    (``quantkit dashboard --indicators my_indicators.py``): save the cell to a file.

    Raises
    ------
    ConfigError
        If a file is missing or fails to run (the message names the file and the error).
    """
    before = set(registry.names())
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"indicators: no file {path}")
        try:
            runpy.run_path(str(path), run_name=f"quantkit_indicators_{path.stem}")
        except Exception as exc:  # noqa: BLE001 - user code: report it, whatever it raised
            raise ConfigError(f"indicators: {path} failed: {type(exc).__name__}: {exc}") from exc
    return sorted(set(registry.names()) - before)


def _rsi_indicator(bars: pd.DataFrame, window: int = 14) -> pd.Series:
    """RSI of the close (Wilder, as TA-Lib)."""
    return rsi(bars["close"], window)


def _bollinger_indicator(bars: pd.DataFrame, window: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Bollinger bands of the close (SMA +- k population std, as TA-Lib BBANDS)."""
    return bollinger(bars["close"], window, k)


registry.register(_rsi_indicator, "rsi", overlay=False)
registry.register(_bollinger_indicator, "bollinger", overlay=True)
