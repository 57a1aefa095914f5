"""RSI and Bollinger against TA-Lib; the indicator registry as a notebook uses it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

import quantkit
from quantkit.analytics import IndicatorRegistry, bollinger, indicator, registry, rsi
from quantkit.errors import DataError

RTOL = 1e-9


def closes(n: int, level: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-08-08", periods=n, freq="1min", tz="UTC", name="time")
    return pd.Series(level + np.cumsum(rng.normal(0, level / 1000, n)), index=idx, name="close")


def assert_same(ours, ref) -> None:
    ours, ref = np.asarray(ours, float), np.asarray(ref, float)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=RTOL, atol=0)


@pytest.mark.parametrize(("window", "level"), [(14, 60000.0), (2, 100.0), (30, 2600.0)])
def test_rsi_equals_talib(window, level):
    c = closes(3000, level, window)
    ours = rsi(c, window)
    assert ours.index.equals(c.index)
    assert ours.isna().sum() == window
    assert_same(ours, talib.RSI(c.to_numpy(), timeperiod=window))


def test_rsi_of_flat_and_monotone_prices():
    idx = pd.date_range("2024", periods=30, freq="1s", tz="UTC")
    assert rsi(pd.Series(5.0, index=idx), 14).iloc[14:].eq(0.0).all()  # TA-Lib's convention
    assert rsi(pd.Series(np.arange(30.0), index=idx), 14).iloc[14:].eq(100.0).all()


@pytest.mark.parametrize(("window", "k", "level"), [(20, 2.0, 60000.0), (5, 1.5, 100.0),
                                                    (50, 3.0, 2600.0)])
def test_bollinger_equals_talib_bbands(window, k, level):
    c = closes(3000, level, window)
    ours = bollinger(c, window, k)
    upper, middle, lower = talib.BBANDS(c.to_numpy(), timeperiod=window, nbdevup=k, nbdevdn=k,
                                        matype=0)
    assert list(ours.columns) == ["middle", "upper", "lower"]
    assert_same(ours["middle"], middle)
    assert_same(ours["upper"], upper)
    assert_same(ours["lower"], lower)


def test_bollinger_width_uses_population_std():
    c = pd.Series([1.0, 2.0, 3.0, 4.0], index=pd.date_range("2024", periods=4, freq="1s"))
    b = bollinger(c, 4, 1.0)
    assert b["upper"].iloc[-1] - b["middle"].iloc[-1] == pytest.approx(np.std([1, 2, 3, 4]))


def test_indicator_errors():
    c = closes(10, 100.0, 1)
    with pytest.raises(DataError, match="longer than the data"):
        rsi(c, 10)
    with pytest.raises(DataError, match="at least 2"):
        bollinger(c, 1)
    with pytest.raises(DataError, match="Series"):
        rsi(c.to_numpy())


@pytest.fixture
def bars() -> pd.DataFrame:
    c = closes(200, 100.0, 3)
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c})


def test_builtins_are_registered_and_compute(bars):
    assert {"rsi", "bollinger"} <= set(registry.names())
    assert registry.names() == sorted(registry.names())
    r = registry.get("rsi")
    assert r.overlay is False and dict(r.params) == {"window": 14} and "Wilder" in r.doc
    assert registry.get("bollinger").overlay is True
    pd.testing.assert_series_equal(registry.compute("rsi", bars), rsi(bars["close"], 14))
    pd.testing.assert_frame_equal(registry.compute("bollinger", bars, k=3.0),
                                  bollinger(bars["close"], 20, 3.0))


def test_decorator_registers_at_once_and_rerunning_a_cell_replaces(bars):
    events: list[tuple[str, str]] = []
    unsubscribe = registry.on_change(lambda event, name: events.append((event, name)))
    try:
        @quantkit.indicator(overlay=True, span=5)
        def ema(bars, span=20):
            """Exponential moving average of the close."""
            return bars["close"].ewm(span=span).mean()

        assert ema(bars).equals(bars["close"].ewm(span=20).mean())  # function unchanged
        assert "ema" in registry and registry.get("ema").params["span"] == 5
        pd.testing.assert_series_equal(registry.compute("ema", bars),
                                       bars["close"].ewm(span=5).mean())
        assert registry.compute("ema", bars, span=9).equals(bars["close"].ewm(span=9).mean())

        @indicator("ema")  # the cell is edited and re-run
        def ema2(bars, span=3):
            return bars["close"].rolling(span).mean()

        assert registry.get("ema").overlay is False
        assert registry.compute("ema", bars).equals(bars["close"].rolling(3).mean())

        @indicator
        def spread_hl(bars):
            return bars["high"] - bars["low"]

        assert registry.compute("spread_hl", bars).eq(2.0).all()
        assert events == [("registered", "ema"), ("replaced", "ema"),
                          ("registered", "spread_hl")]
    finally:
        for name in ("ema", "spread_hl"):
            if name in registry:
                registry.unregister(name)
        unsubscribe()
    assert events[-2:] == [("removed", "ema"), ("removed", "spread_hl")]
    n = len(events)
    registry.register(lambda b: b["close"], "after_unsubscribe")
    registry.unregister("after_unsubscribe")
    assert len(events) == n


def test_registry_errors_and_failing_callbacks():
    reg = IndicatorRegistry()
    reg.register(lambda bars, window=3: bars["close"], "x")
    with pytest.raises(DataError, match="registered: x"):
        reg.get("nope")
    with pytest.raises(DataError, match="no parameter"):
        reg.register(lambda bars, window=3: bars, "y", windw=4)
    with pytest.raises(DataError, match="identifier"):
        reg.register(lambda bars: bars, "my indicator")
    with pytest.raises(DataError, match="first argument"):
        reg.register(lambda: 1, "z")

    def broken(event, name):
        raise RuntimeError("dashboard gone")

    reg.on_change(broken)
    with pytest.warns(RuntimeWarning, match="dashboard gone"):
        reg.register(lambda bars: bars, "w")
    assert reg.names() == ["w", "x"] and len(reg) == 2 and list(reg) == ["w", "x"]
