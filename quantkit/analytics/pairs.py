"""Pair statistics: hedge ratios (OLS, rolling OLS, Kalman), spread, z-score, correlation,
cointegration and half-life of mean reversion.

Pure functions: pandas in, pandas out on the same index, NaN during warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DataError
from ._window import check_window, window_moments

__all__ = [
    "CointegrationResult",
    "HedgeResult",
    "cointegration",
    "half_life",
    "hedge_ratio",
    "kalman_hedge_ratio",
    "log_returns",
    "rolling_corr",
    "rolling_hedge_ratio",
    "spread",
    "zscore",
]


def _series(s: object, name: str) -> pd.Series:
    if isinstance(s, pd.DataFrame) and s.shape[1] == 1:
        s = s.iloc[:, 0]
    if not isinstance(s, pd.Series):
        raise DataError(f"{name}: expected a pandas Series (e.g. bars['close']), "
                        f"got {type(s).__name__}")
    if len(s) == 0:
        raise DataError(f"{name} is empty: pass at least a few bars")
    return s.astype(np.float64) if s.dtype != np.float64 else s


def _pair(y: object, x: object, yname: str = "y", xname: str = "x") -> tuple[pd.Series, pd.Series]:
    y, x = _series(y, yname), _series(x, xname)
    if len(y) != len(x) or not y.index.equals(x.index):
        raise DataError(f"{yname} and {xname} are misaligned ({len(y)} vs {len(x)} rows or "
                        "different index): align them first with quantkit.analytics.align_bars "
                        f"or {yname}.align({xname}, join='inner')")
    return y, x


def _no_nan(s: pd.Series, name: str) -> None:
    if s.isna().any():
        raise DataError(f"{name} holds {int(s.isna().sum())} NaN value(s): drop them first "
                        "(e.g. .dropna() on the aligned pair)")


@dataclass(frozen=True)
class HedgeResult:
    """An OLS fit of ``y = alpha + beta * x + resid``."""

    beta: float
    alpha: float
    rsquared: float
    nobs: int
    resid: pd.Series = field(repr=False, compare=False)


def log_returns(close: pd.Series) -> pd.Series:
    """Log returns :math:`r_t = \\ln(p_t / p_{t-1})`; the first row is NaN.

    Raises
    ------
    DataError
        If ``close`` is empty or holds a non-positive price.
    """
    close = _series(close, "close")
    if (close <= 0).any():
        raise DataError("close: log returns need positive prices; drop or fix rows <= 0")
    out = np.log(close).diff()
    out.name = close.name
    return out


def hedge_ratio(y: pd.Series, x: pd.Series) -> HedgeResult:
    """Ordinary least squares of ``y`` on ``x`` with an intercept.

    Parameters
    ----------
    y, x
        Aligned price series (same index), no NaN.

    Returns
    -------
    HedgeResult
        ``beta``, ``alpha``, ``rsquared``, ``nobs`` and the residual series ``resid``
        (the spread at the fitted ratio), as statsmodels ``OLS(y, add_constant(x))`` gives.

    Raises
    ------
    DataError
        Empty, misaligned or NaN input; fewer than 3 rows; a constant ``x``.

    Notes
    -----
    :math:`\\beta = \\sum (x-\\bar x)(y-\\bar y) / \\sum (x-\\bar x)^2`,
    :math:`\\alpha = \\bar y - \\beta \\bar x`,
    :math:`R^2 = 1 - \\sum e^2 / \\sum (y-\\bar y)^2`.
    """
    y, x = _pair(y, x)
    _no_nan(y, "y")
    _no_nan(x, "x")
    if len(y) < 3:
        raise DataError(f"hedge_ratio needs at least 3 rows, got {len(y)}")
    yv, xv = y.to_numpy(), x.to_numpy()
    xc, yc = xv - xv.mean(), yv - yv.mean()
    sxx = float(xc @ xc)
    if sxx <= 1e-24 * max(1.0, float(xv @ xv)):
        raise DataError("x is constant: a hedge ratio needs a regressor that moves; "
                        "check the symbol or use a longer period")
    beta = float(xc @ yc) / sxx
    alpha = float(yv.mean() - beta * xv.mean())
    resid = y - alpha - beta * x
    syy = float(yc @ yc)
    rsq = 1.0 - float(resid.to_numpy() @ resid.to_numpy()) / syy if syy > 0 else float("nan")
    return HedgeResult(beta=beta, alpha=alpha, rsquared=rsq, nobs=len(y), resid=resid)


def rolling_hedge_ratio(y: pd.Series, x: pd.Series, window: int) -> pd.DataFrame:
    """OLS of ``y`` on ``x`` with an intercept over each trailing window of ``window`` rows.

    Parameters
    ----------
    y, x
        Aligned series (same index).
    window
        Rows per regression, ``2 <= window <= len(y)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``alpha`` and ``beta`` on ``y``'s index; NaN for the first ``window - 1``
        rows, for windows holding a NaN, and where ``x`` is constant over the window.
        Equal to statsmodels ``RollingOLS(y, add_constant(x), window)`` to ~1e-12.

    Raises
    ------
    DataError
        Empty or misaligned series; ``window`` below 2 or longer than the data.

    Notes
    -----
    With window sums :math:`S` of the centred data,
    :math:`\\beta_t = S_{xy} / S_{xx}` and :math:`\\alpha_t = \\bar y_t - \\beta_t \\bar x_t`.
    The sums come from cumulative sums re-centred on each chunk of a few windows (see
    ``_window.py``), so the whole thing is O(n) and ~1000x faster than RollingOLS.
    """
    y, x = _pair(y, x)
    window = check_window(window, len(y))
    alpha, beta = _rolling_ols(y.to_numpy(), x.to_numpy(), window)
    return pd.DataFrame({"alpha": alpha, "beta": beta}, index=y.index)


def _rolling_ols(y: np.ndarray, x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    (my, mx), co, floor = window_moments(y, x, window=window)
    sxx, sxy = co[(1, 1)], co[(0, 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        # A window where x does not move has no slope: NaN, not a huge noisy number.
        beta = np.where(sxx <= floor[1], np.nan, sxy / sxx)
    alpha = my - beta * mx
    return alpha, beta


def spread(y: pd.Series, x: pd.Series, beta: float | pd.Series,
           alpha: float | pd.Series = 0.0) -> pd.Series:
    """The spread :math:`s_t = y_t - \\beta_t x_t - \\alpha_t`.

    ``beta`` and ``alpha`` are numbers or series on the same index (e.g. the columns of
    :func:`rolling_hedge_ratio`).
    """
    y, x = _pair(y, x)
    for name, v in (("beta", beta), ("alpha", alpha)):
        if isinstance(v, pd.Series) and not v.index.equals(y.index):
            raise DataError(f"{name} is a series on another index than y: compute it on the "
                            "same aligned bars")
    out = y - beta * x - alpha
    out.name = "spread"
    return out


def zscore(series: pd.Series, window: int) -> pd.Series:
    """Rolling z-score :math:`z_t = (s_t - \\bar s_t) / \\sigma_t` over ``window`` rows.

    :math:`\\bar s_t` and :math:`\\sigma_t` are the trailing mean and sample standard
    deviation (``ddof=1``, pandas' default). NaN during warm-up and where the window is
    constant (:math:`\\sigma_t = 0`).

    Raises
    ------
    DataError
        Empty series or ``window`` below 2 or longer than the data.
    """
    series = _series(series, "series")
    window = check_window(window, len(series))
    z = _zscore(series.to_numpy(), window)[2]
    return pd.Series(z, index=series.index, name=series.name)


def _zscore(s: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (mean,), co, floor = window_moments(s, window=window)
    ss = co[(0, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.where(ss > floor[0], ss, 0.0) / (window - 1))
        std = np.where(np.isnan(ss), np.nan, std)
        z = np.where(std > 0, (s - mean) / std, np.nan)
    return mean, std, z


def rolling_corr(a: pd.Series, b: pd.Series, window: int) -> pd.Series:
    """Rolling Pearson correlation of ``a`` and ``b`` (pass returns, not prices).

    :math:`\\rho_t = S_{ab} / \\sqrt{S_{aa} S_{bb}}` over the trailing ``window`` rows, as
    pandas' ``a.rolling(window).corr(b)``; NaN where either side is constant.
    """
    a, b = _pair(a, b, "a", "b")
    window = check_window(window, len(a))
    return pd.Series(_corr(a.to_numpy(), b.to_numpy(), window), index=a.index, name="corr")


def _corr(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    _, co, floor = window_moments(a, b, window=window)
    saa, sbb, sab = co[(0, 0)], co[(1, 1)], co[(0, 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = (saa <= floor[0]) | (sbb <= floor[1])
        return np.where(flat, np.nan, np.clip(sab / np.sqrt(saa * sbb), -1.0, 1.0))


def kalman_hedge_ratio(y: pd.Series, x: pd.Series, *, delta: float = 1e-4,
                       obs_var: float = 1e-3, init_var: float = 1e6) -> pd.DataFrame:
    """Time-varying hedge ratio from a Kalman filter (state = ``[beta, alpha]``).

    Parameters
    ----------
    y, x
        Aligned series, no NaN.
    delta
        How fast the state may drift, ``0 < delta < 1``: the random-walk state noise is
        :math:`Q = \\delta / (1 - \\delta) I` (E. Chan's parametrisation). Larger tracks faster
        and noisier; ``delta -> 0`` tends to a full-sample OLS.
    obs_var
        Variance :math:`R` of the observation noise (same units as ``y`` squared).
    init_var
        Prior variance :math:`v` of beta and alpha at the start (:math:`P_0 = v I`): large
        (diffuse) so that the first observations set the state, not the prior 0.

    Returns
    -------
    pandas.DataFrame
        Columns ``alpha`` and ``beta``: the filtered estimate at each row given rows up to
        and including it (no look-ahead). No NaN warm-up, but the first rows are unreliable.

    Notes
    -----
    State :math:`\\theta_t = \\theta_{t-1} + w_t`, :math:`w_t \\sim N(0, Q)`;
    observation :math:`y_t = [x_t, 1] \\theta_t + v_t`, :math:`v_t \\sim N(0, R)`.
    Start :math:`\\theta_0 = 0`, :math:`P_0 = v I`; each step predicts
    :math:`P \\leftarrow P + Q`, then updates with the gain :math:`K = P H^T / (H P H^T + R)`.
    """
    y, x = _pair(y, x)
    _no_nan(y, "y")
    _no_nan(x, "x")
    if not 0 < delta < 1:
        raise DataError(f"delta must be in (0, 1), got {delta!r}; 1e-4 is a usual start")
    if not obs_var > 0 or not init_var >= 0:
        raise DataError(f"obs_var must be positive and init_var not negative, got "
                        f"{obs_var!r} and {init_var!r}")
    states = kalman_states(y.to_numpy(), x.to_numpy(), delta=delta, obs_var=obs_var,
                           start=kalman_start(init_var))
    return pd.DataFrame({"alpha": states[:, 1], "beta": states[:, 0]}, index=y.index)


def kalman_start(init_var: float) -> tuple[float, float, float, float, float]:
    """Filter state before the first row: beta, alpha, P00, P01, P11."""
    return (0.0, 0.0, float(init_var), 0.0, float(init_var))


def kalman_states(y: np.ndarray, x: np.ndarray, *, delta: float, obs_var: float,
                  start: tuple[float, ...]) -> np.ndarray:
    """Run the filter from ``start``; rows of (beta, alpha, P00, P01, P11). Plain floats:
    a 2x2 filter is faster unrolled than through numpy's per-call overhead."""
    q = delta / (1.0 - delta)
    b, a, p00, p01, p11 = start
    out = np.empty((len(y), 5))
    for i, (yi, xi) in enumerate(zip(y.tolist(), x.tolist())):
        p00 += q
        p11 += q
        # H = [x, 1]; S = H P H' + R; K = P H' / S
        ph0 = p00 * xi + p01
        ph1 = p01 * xi + p11
        s = xi * ph0 + ph1 + obs_var
        k0, k1 = ph0 / s, ph1 / s
        e = yi - (b * xi + a)
        b += k0 * e
        a += k1 * e
        p00, p01, p11 = p00 - k0 * ph0, p01 - k0 * ph1, p11 - k1 * ph1
        out[i] = (b, a, p00, p01, p11)
    return out


@dataclass(frozen=True)
class CointegrationResult:
    """An Engle-Granger cointegration test of ``y`` on ``x``."""

    statistic: float
    pvalue: float
    crit_values: tuple[float, float, float]  # 1 %, 5 %, 10 %
    nobs: int

    @property
    def cointegrated(self) -> bool:
        """True when the unit root of the residual is rejected at 5 %."""
        return self.pvalue < 0.05


def cointegration(y: pd.Series, x: pd.Series) -> CointegrationResult:
    """Engle-Granger two-step cointegration test (statsmodels ``coint``, constant trend).

    Regress ``y`` on ``x`` with an intercept, then run an augmented Dickey-Fuller test (lags
    chosen by AIC) on the residual, with MacKinnon's p-values for a cointegrating residual.
    A small ``pvalue`` (say < 0.05) means the spread is stationary: the pair mean-reverts.

    Raises
    ------
    DataError
        Empty, misaligned or NaN input, fewer than 20 rows, or a constant series.
    """
    from statsmodels.tsa.stattools import coint

    y, x = _pair(y, x)
    _no_nan(y, "y")
    _no_nan(x, "x")
    if len(y) < 20:
        raise DataError(f"cointegration needs at least 20 rows, got {len(y)}")
    for name, s in (("y", y), ("x", x)):
        if s.nunique() < 2:
            raise DataError(f"{name} is constant: nothing to test")
    stat, pvalue, crit = coint(y.to_numpy(), x.to_numpy(), trend="c", autolag="aic")
    return CointegrationResult(statistic=float(stat), pvalue=float(pvalue),
                               crit_values=tuple(float(c) for c in crit), nobs=len(y))


def half_life(spread: pd.Series) -> float:
    """Half-life of mean reversion of a spread, in rows (bars).

    Fits the discrete Ornstein-Uhlenbeck / AR(1) regression
    :math:`\\Delta s_t = a + b\\, s_{t-1} + \\varepsilon_t` by OLS and returns
    :math:`h = -\\ln 2 / \\ln(1 + b)`: the number of bars for a deviation to halve, since
    :math:`E[s_t - \\mu] = (1 + b)^t (s_0 - \\mu)`. Returns ``inf`` when :math:`b \\ge 0`
    (no mean reversion). Multiply by the bar length for a duration.

    Raises
    ------
    DataError
        Empty spread, NaN values, fewer than 3 rows, or a constant spread.
    """
    s = _series(spread, "spread")
    _no_nan(s, "spread")
    if len(s) < 3:
        raise DataError(f"half_life needs at least 3 rows, got {len(s)}")
    v = s.to_numpy()
    lag, diff = v[:-1], np.diff(v)
    lc = lag - lag.mean()
    sxx = float(lc @ lc)
    if sxx <= 1e-24 * max(1.0, float(lag @ lag)):
        raise DataError("spread is constant: no mean reversion to measure")
    b = float(lc @ (diff - diff.mean())) / sxx
    if b >= 0:
        return math.inf
    if b <= -1:
        return 0.0
    return -math.log(2.0) / math.log1p(b)
