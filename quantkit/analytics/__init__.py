"""Pure analytics: bars from trades, pair statistics, indicators, and a live incremental engine.

Everything takes pandas objects and returns pandas objects on the same index, with NaN during
warm-up; bad input raises :class:`quantkit.errors.DataError` (a ``ValueError``) saying what to
change. Modules: ``bars`` (trades to OHLCV, alignment), ``pairs`` (hedge ratios, spread,
z-score, correlation, cointegration, half-life), ``indicators`` (RSI, Bollinger, the registry),
``live`` (:class:`LivePair`, the incremental engine).
"""
from __future__ import annotations

from .bars import BAR_COLUMNS, FREQS, align_bars, freq_ms, resample_ohlcv
from .indicators import (
    Indicator,
    IndicatorRegistry,
    bollinger,
    indicator,
    load_indicators,
    registry,
    rsi,
)
from .live import HEDGES, STATS_COLUMNS, LivePair, pair_stats
from .pairs import (
    CointegrationResult,
    HedgeResult,
    cointegration,
    half_life,
    hedge_ratio,
    kalman_hedge_ratio,
    log_returns,
    rolling_corr,
    rolling_hedge_ratio,
    spread,
    zscore,
)

__all__ = [
    "BAR_COLUMNS",
    "CointegrationResult",
    "FREQS",
    "HEDGES",
    "HedgeResult",
    "Indicator",
    "IndicatorRegistry",
    "LivePair",
    "STATS_COLUMNS",
    "align_bars",
    "bollinger",
    "cointegration",
    "freq_ms",
    "half_life",
    "hedge_ratio",
    "indicator",
    "kalman_hedge_ratio",
    "load_indicators",
    "log_returns",
    "pair_stats",
    "registry",
    "resample_ohlcv",
    "rolling_corr",
    "rolling_hedge_ratio",
    "rsi",
    "spread",
    "zscore",
]
