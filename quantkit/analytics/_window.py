"""Rolling window moments from cumulative sums, re-centred per chunk so they stay precise.

Plain cumulative sums of prices lose digits: a window's variance is a small difference of
two huge running totals. Here the series is cut into chunks of a few windows; each chunk
(plus the ``window - 1`` points before it) is centred on its own mean before summing, so the
running totals stay of the order of the local spread. The cost stays O(n).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError


def check_window(window: int, n: int, name: str = "window") -> int:
    """Validate a rolling window length against the data length."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise DataError(f"{name} must be an integer number of bars, got {window!r}")
    window = int(window)
    if window < 2:
        raise DataError(f"{name}={window} is too short: use at least 2 bars")
    if window > n:
        raise DataError(f"{name}={window} is longer than the data ({n} rows): pass more data "
                        f"or a window of at most {n}")
    return window


def _chunks(a: np.ndarray, window: int, chunk: int) -> np.ndarray:
    """Rows ``[k*chunk, k*chunk + chunk + window - 1)`` of ``a`` (NaN past the end)."""
    n = len(a)
    k = -(-(n - window + 1) // chunk)
    width = chunk + window - 1
    padded = np.full(k * chunk + window - 1, np.nan)
    padded[:n] = a
    idx = np.arange(k)[:, None] * chunk + np.arange(width)[None, :]
    return padded[idx]


#: Up to this window length each window is centred on its own mean (O(n * window)): for a
#: few points the cross-moments are tiny differences that any shared reference would swamp.
_SMALL = 32


def _direct(series: tuple[np.ndarray, ...], window: int, out_means: list[np.ndarray],
            out_co: dict, out_floor: list[np.ndarray]) -> tuple[list, dict, list]:
    views, bad = [], None
    for a in series:
        v = np.lib.stride_tricks.sliding_window_view(np.asarray(a, dtype=np.float64), window)
        nan = np.isnan(v).any(axis=1)
        bad = nan if bad is None else (bad | nan)
        views.append(v)
    devs = []
    for i, v in enumerate(views):
        mean = v.mean(axis=1)
        devs.append(v - mean[:, None])
        out_means[i][window - 1:] = np.where(bad, np.nan, mean)
    for (i, j), dest in out_co.items():
        dest[window - 1:] = np.where(bad, np.nan, np.einsum("ij,ij->i", devs[i], devs[j]))
    for i, d in enumerate(devs):
        # Exactly centred: a constant window gives 0 up to a few ulps of the values.
        out_floor[i][window - 1:] = (window * 16 * np.finfo(np.float64).eps) ** 2 * \
            np.max(np.abs(views[i]), axis=1) ** 2
    return out_means, out_co, out_floor


def window_moments(*series: np.ndarray, window: int
                   ) -> tuple[list[np.ndarray], dict, list[np.ndarray]]:
    """Rolling means and centred cross-moments of one or more aligned float arrays.

    Returns
    -------
    means
        ``means[i][t]`` is the mean of ``series[i]`` over rows ``t-window+1 .. t``.
    co
        ``co[(i, j)][t]`` is :math:`\\sum (a_i - \\bar a_i)(a_j - \\bar a_j)` over that window
        (not divided by anything), for ``i <= j``.

    floor
        ``floor[i][t]``: rounding noise of ``co[(i, i)][t]``; a variance at or below it is zero
        (a constant window), so callers return NaN there rather than noise.

    Rows ``t < window - 1`` and windows holding a NaN are NaN (pandas' ``min_periods=window``).
    """
    n = len(series[0])
    out_means = [np.full(n, np.nan) for _ in series]
    out_co = {(i, j): np.full(n, np.nan) for i in range(len(series)) for j in range(i, len(series))}
    out_floor = [np.full(n, np.nan) for _ in series]
    if n < window:
        return out_means, out_co, out_floor
    if window <= _SMALL:
        return _direct(series, window, out_means, out_co, out_floor)
    chunk = max(4 * window, 256)
    sums, bad = [], None
    for a in series:
        c = _chunks(np.asarray(a, dtype=np.float64), window, chunk)
        nan = np.isnan(c)
        with np.errstate(invalid="ignore"):
            ref = np.nanmean(np.where(nan, np.nan, c), axis=1, keepdims=True) \
                if nan.any() else c.mean(axis=1, keepdims=True)
        ref = np.where(np.isnan(ref), 0.0, ref)
        c = np.where(nan, 0.0, c - ref)
        sums.append((c, ref))
        bad = nan if bad is None else (bad | nan)

    def wsum(v: np.ndarray) -> np.ndarray:
        cs = np.zeros((v.shape[0], v.shape[1] + 1))
        np.cumsum(v, axis=1, out=cs[:, 1:])
        return cs[:, window:] - cs[:, :-window]

    valid = wsum(bad.astype(np.float64)) == 0
    first = [wsum(c) for c, _ in sums]
    m = n - window + 1
    for i, (c, ref) in enumerate(sums):
        mean = first[i] / window + ref
        out_means[i][window - 1:] = np.where(valid, mean, np.nan).ravel()[:m]
        out_floor[i][window - 1:] = (256 * np.finfo(np.float64).eps * wsum(c * c)).ravel()[:m]
    for (i, j), dest in out_co.items():
        raw = wsum(sums[i][0] * sums[j][0]) - first[i] * first[j] / window
        dest[window - 1:] = np.where(valid, raw, np.nan).ravel()[:m]
    return out_means, out_co, out_floor
