"""Pair statistics against their oracles: statsmodels OLS/RollingOLS/coint and plain pandas."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS
from statsmodels.tsa.stattools import coint

from quantkit.analytics import (
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
from quantkit.errors import DataError

RTOL = 1e-9


def rel_err(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in different places"
    ok = ~np.isnan(a)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)))


def index(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-08-08", periods=n, freq="1s", tz="UTC", name="time")


@pytest.fixture(scope="module")
def calm_pair() -> tuple[pd.Series, pd.Series]:
    """A well-conditioned pair (stationary, level ~10): every oracle is itself exact here."""
    rng = np.random.default_rng(11)
    n = 3000
    x = pd.Series(10 + np.sin(np.arange(n) / 50) + rng.normal(0, 0.5, n), index=index(n))
    y = pd.Series(2 + 1.7 * x + rng.normal(0, 0.3, n), index=x.index)
    return y, x


@pytest.fixture(scope="module")
def price_pair() -> tuple[pd.Series, pd.Series]:
    """Prices like BTC and ETH: random walks at 60000 and 2600 (badly conditioned sums)."""
    rng = np.random.default_rng(5)
    n = 3000
    x = pd.Series(60000 + np.cumsum(rng.normal(0, 8, n)), index=index(n))
    y = pd.Series(150 + 0.041 * x + np.cumsum(rng.normal(0, 0.4, n)), index=x.index)
    return y, x


def test_hedge_ratio_equals_statsmodels_ols(price_pair):
    y, x = price_pair
    fit = hedge_ratio(y, x)
    ref = sm.OLS(y, sm.add_constant(x)).fit()
    assert fit.beta == pytest.approx(ref.params.iloc[1], rel=RTOL)
    assert fit.alpha == pytest.approx(ref.params.iloc[0], rel=RTOL)
    assert fit.rsquared == pytest.approx(ref.rsquared, rel=RTOL)
    assert fit.nobs == len(y)
    assert fit.resid.index.equals(y.index)
    np.testing.assert_allclose(fit.resid, ref.resid, rtol=1e-7, atol=1e-9 * y.abs().max())


@pytest.mark.parametrize("window", [100, 300])
def test_rolling_hedge_ratio_equals_rolling_ols(calm_pair, window):
    y, x = calm_pair
    ours = rolling_hedge_ratio(y, x, window)
    ref = RollingOLS(y, sm.add_constant(x), window=window).fit().params
    assert ours.index.equals(y.index) and list(ours.columns) == ["alpha", "beta"]
    assert ours["beta"].isna().sum() == window - 1
    assert rel_err(ours["beta"], ref.iloc[:, 1]) < RTOL
    assert rel_err(ours["alpha"], ref.iloc[:, 0]) < RTOL


@pytest.mark.parametrize(("pair", "window"), [("price_pair", 300), ("price_pair", 20),
                                              ("calm_pair", 2), ("calm_pair", 3),
                                              ("calm_pair", 30)])
def test_rolling_hedge_ratio_equals_ols_per_window(request, pair, window):
    """Where RollingOLS's own uncentred running sums lose digits (drifting price levels, short
    windows: it is off by up to 1e-5 there), the oracle is a plain OLS fit of every 37th
    window, statsmodels' own test style."""
    y, x = request.getfixturevalue(pair)
    ours = rolling_hedge_ratio(y, x, window)
    for end in range(window - 1, len(y), 37):
        ref = sm.OLS(y.iloc[end - window + 1:end + 1],
                     sm.add_constant(x.iloc[end - window + 1:end + 1])).fit().params
        assert ours["beta"].iloc[end] == pytest.approx(ref.iloc[1], rel=RTOL)
        assert ours["alpha"].iloc[end] == pytest.approx(ref.iloc[0], rel=RTOL)


def test_rolling_hedge_ratio_nan_windows_and_flat_regressor():
    x = pd.Series([1.0, 2, 3, 4, 5, 5, 5, 5, 6, 7], index=index(10))
    y = 2 * x + 1
    y.iloc[1] = np.nan
    out = rolling_hedge_ratio(y, x, 3)
    # warm-up, warm-up, NaN y in window (x2), fine, fine, x flat at 5 (x2), fine, fine
    assert out["beta"].isna().tolist() == [True, True, True, True, False, False, True, True,
                                           False, False]
    assert out["beta"].iloc[4] == pytest.approx(2.0, rel=1e-12)
    assert out["alpha"].iloc[9] == pytest.approx(1.0, rel=1e-12)


def test_spread_is_y_minus_beta_x_minus_alpha(calm_pair):
    y, x = calm_pair
    rb = rolling_hedge_ratio(y, x, 50)
    s = spread(y, x, rb["beta"], rb["alpha"])
    np.testing.assert_array_equal(s.to_numpy(), (y - rb["beta"] * x - rb["alpha"]).to_numpy())
    assert spread(y, x, 2.0).iloc[5] == y.iloc[5] - 2.0 * x.iloc[5]
    with pytest.raises(DataError, match="same aligned bars"):
        spread(y, x, rb["beta"].iloc[1:])


@pytest.mark.parametrize("window", [2, 20, 300])
def test_zscore_equals_pandas(calm_pair, window):
    s = calm_pair[0]
    ref = (s - s.rolling(window).mean()) / s.rolling(window).std()
    ours = zscore(s, window)
    assert ours.index.equals(s.index)
    assert rel_err(ours, ref) < RTOL


def test_zscore_is_nan_on_a_constant_window():
    s = pd.Series([5.0] * 6 + [6.0, 7.0], index=index(8))
    z = zscore(s, 3)
    assert z.isna().tolist() == [True] * 6 + [False, False]
    assert z.iloc[6] == pytest.approx((6 - 16 / 3) / np.std([5, 5, 6], ddof=1), rel=1e-12)


@pytest.mark.parametrize("window", [30, 300])
def test_rolling_corr_of_returns_equals_pandas(price_pair, window):
    ry, rx = log_returns(price_pair[0]), log_returns(price_pair[1])
    ours = rolling_corr(ry, rx, window)
    assert rel_err(ours, ry.rolling(window).corr(rx)) < RTOL
    assert ours.isna().sum() == window


def test_rolling_corr_short_window_equals_corrcoef_per_window(price_pair):
    """pandas' online rolling corr drifts by ~5e-9 at window 3; np.corrcoef is exact."""
    ry, rx = log_returns(price_pair[0]), log_returns(price_pair[1])
    ours = rolling_corr(ry, rx, 3)
    for end in range(3, len(ry), 11):
        ref = np.corrcoef(ry.iloc[end - 2:end + 1], rx.iloc[end - 2:end + 1])[0, 1]
        assert ours.iloc[end] == pytest.approx(ref, rel=RTOL)


def test_log_returns():
    c = pd.Series([100.0, 110.0, 99.0], index=index(3))
    r = log_returns(c)
    assert math.isnan(r.iloc[0]) and r.iloc[1] == pytest.approx(math.log(1.1), rel=1e-15)
    with pytest.raises(DataError, match="positive"):
        log_returns(pd.Series([1.0, 0.0], index=index(2)))


def test_cointegration_wraps_engle_granger(price_pair):
    rng = np.random.default_rng(2)
    y, x = price_pair
    tight = pd.Series(10 + 0.041 * x.to_numpy() + rng.normal(0, 1, len(x)), index=x.index)
    res = cointegration(tight, x)
    stat, pvalue, crit = coint(tight.to_numpy(), x.to_numpy(), trend="c", autolag="aic")
    assert (res.statistic, res.pvalue) == (pytest.approx(stat, rel=1e-12),
                                           pytest.approx(pvalue, rel=1e-12))
    assert res.crit_values == pytest.approx(tuple(crit))
    assert res.pvalue < 0.01 and res.cointegrated and res.nobs == len(x)
    walk = pd.Series(2600 + np.cumsum(rng.normal(0, 2, len(x))), index=x.index)
    assert cointegration(walk, x).pvalue > 0.05
    with pytest.raises(Exception):
        res.pvalue = 0.5  # frozen result


def test_half_life_of_an_exact_decay_and_of_an_ar1():
    phi = 0.5 ** (1 / 10)  # halves every 10 bars exactly
    s = pd.Series(3.0 * phi ** np.arange(200), index=index(200))
    assert half_life(s) == pytest.approx(10.0, rel=1e-9)
    rng = np.random.default_rng(8)
    v = np.zeros(20000)
    for i in range(1, len(v)):
        v[i] = 0.9 * v[i - 1] + rng.normal()
    assert half_life(pd.Series(v)) == pytest.approx(math.log(0.5) / math.log(0.9), rel=0.1)
    assert half_life(pd.Series(np.arange(50.0) ** 2)) == math.inf
    with pytest.raises(DataError, match="constant"):
        half_life(pd.Series([1.0] * 10))


def test_kalman_tracks_a_time_varying_beta():
    rng = np.random.default_rng(4)
    n = 4000
    x = 100 + np.cumsum(rng.normal(0, 1, n))
    beta = 1.5 + 0.5 * np.sin(np.arange(n) / 400)  # drifts between 1 and 2
    y = beta * x + 3.0 + rng.normal(0, 0.05, n)
    idx = index(n)
    out = kalman_hedge_ratio(pd.Series(y, idx), pd.Series(x, idx), delta=1e-4, obs_var=0.05 ** 2)
    assert list(out.columns) == ["alpha", "beta"] and not out.isna().any().any()
    err = np.abs(out["beta"].to_numpy()[500:] - beta[500:])
    assert err.mean() < 0.005 and err.max() < 0.02
    assert np.abs(out["alpha"].to_numpy()[500:] - 3.0).mean() < 0.5
    # A static OLS cannot follow it: its beta is off by ~0.3 on average.
    static = hedge_ratio(pd.Series(y, idx), pd.Series(x, idx)).beta
    assert np.abs(static - beta[500:]).mean() > 10 * err.mean()
    with pytest.raises(DataError, match="delta"):
        kalman_hedge_ratio(pd.Series(y, idx), pd.Series(x, idx), delta=0)


def test_errors_say_what_to_change(calm_pair):
    y, x = calm_pair
    with pytest.raises(DataError, match="at least 2"):
        rolling_hedge_ratio(y, x, 1)
    with pytest.raises(DataError, match="longer than the data"):
        zscore(y.iloc[:10], 11)
    with pytest.raises(DataError, match="align_bars"):
        hedge_ratio(y, x.iloc[1:])
    with pytest.raises(DataError, match="align_bars"):
        rolling_corr(y, x.shift(1, freq="1s"), 5)
    with pytest.raises(DataError, match="empty"):
        zscore(pd.Series([], dtype=float), 2)
    with pytest.raises(DataError, match="constant"):
        hedge_ratio(y.iloc[:5], pd.Series(3.0, index=y.index[:5]))
    with pytest.raises(DataError, match="NaN"):
        hedge_ratio(y.where(y > y.iloc[0]), x)
    with pytest.raises(DataError, match="Series"):
        zscore(list(y), 5)
    with pytest.raises(ValueError):  # DataError is a ValueError
        rolling_hedge_ratio(y, x, 10**6)
