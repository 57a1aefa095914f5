"""Pure analytics: bars from trades, pair statistics, indicators, and a live incremental engine."""
from __future__ import annotations

from .bars import BAR_COLUMNS, FREQS, align_bars, freq_ms, resample_ohlcv

__all__ = ["BAR_COLUMNS", "FREQS", "align_bars", "freq_ms", "resample_ohlcv"]
