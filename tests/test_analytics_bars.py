"""Bars: the golden test against Binance's own klines, and resampling edge cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantkit.analytics import BAR_COLUMNS, FREQS, align_bars, resample_ohlcv
from quantkit.errors import DataError

from conftest import read_recorded_trades

KLINES = "BTCUSDT-um-1m-klines-2024-08-08T2330_2024-08-09T0030.csv"
TRADES = "hftbacktest_usdm_btcusdt_20240808_trade.txt.gz"


def ticks_frame(payloads: list[dict]) -> pd.DataFrame:
    """A TickStore.ticks()-shaped frame from @trade payloads (one trade per row)."""
    ids = np.array([p["t"] for p in payloads], dtype=np.int64)
    frame = pd.DataFrame({
        "price": np.array([float(p["p"]) for p in payloads]),
        "qty": np.array([float(p["q"]) for p in payloads]),
        "is_buyer_maker": np.array([p["m"] for p in payloads], dtype=bool),
        "id": ids, "first_id": ids, "last_id": ids,
    }, index=pd.DatetimeIndex(pd.to_datetime([p["T"] for p in payloads], unit="ms", utc=True),
                              name="time"))
    return frame.sort_index(kind="stable")


@pytest.fixture(scope="module")
def recorded(binance_data) -> pd.DataFrame:
    return ticks_frame(read_recorded_trades(binance_data / TRADES))


@pytest.fixture(scope="module")
def klines(binance_data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Binance's klines as floats, and as the strings Binance printed."""
    raw = pd.read_csv(binance_data / KLINES, dtype=str)
    raw.index = pd.to_datetime(raw["open_time"].astype(np.int64), unit="ms", utc=True)
    return raw.drop(columns="open_time").astype({"count": np.int64}), raw


def decimals(strings: pd.Series) -> int:
    """How many decimals Binance prints in a column (the same on every row)."""
    counts = {len(s.partition(".")[2]) for s in strings}
    assert len(counts) == 1, counts
    return counts.pop()


def as_decimal_units(values, places: int) -> np.ndarray:
    """Values as integers of 10**-places: equal arrays mean equal printed decimals."""
    return np.rint(np.asarray(values, dtype=np.float64) * 10.0 ** places).astype(np.int64)


def complete_minutes(recorded: pd.DataFrame) -> pd.DatetimeIndex:
    """Minutes the recording covers whole: 23:55..23:59.

    The recording starts at 23:54:16.322 (so 23:54 is partial) and stops after the trade at
    23:59:59.643 with no further BTC trade before midnight (SOURCES.md), so 23:59 is whole.
    """
    first = recorded.index[0].ceil("1min")
    assert first == pd.Timestamp("2024-08-08 23:55", tz="UTC")
    return pd.date_range(first, recorded.index[-1].floor("1min"), freq="1min")


def compare_with_klines(bars: pd.DataFrame, raw: pd.DataFrame, minutes) -> list[str]:
    """Names of the kline fields where ``bars`` differ from Binance on ``minutes``.

    "Exact" means: prices equal as floats (both parse the same decimal), the trade count
    equal as an integer, and the volumes equal as decimals at the precision Binance prints
    in that column (read from the CSV strings: 3 for BTC volume, 5 for quote volume). One
    trade more or less changes a volume by at least its qty (>= 0.001 BTC = 1 unit) and the
    quote volume by ~60 USDT (6e6 units), so rounding cannot hide it.
    """
    fields = {"open": "open", "high": "high", "low": "low", "close": "close",
              "volume": "volume", "quote_volume": "quote_volume",
              "taker_buy_volume": "taker_buy_volume"}
    ours, theirs = bars.loc[minutes], raw.loc[minutes]
    bad = []
    for col, kcol in fields.items():
        places = decimals(theirs[kcol])
        if not np.array_equal(as_decimal_units(ours[col], places),
                              as_decimal_units(theirs[kcol].astype(float), places)):
            bad.append(col)
    if not np.array_equal(ours["trades"].to_numpy(), theirs["count"].astype(np.int64).to_numpy()):
        bad.append("trades")
    return bad


def test_golden_recorded_trades_equal_binance_1m_klines(recorded, klines):
    _, raw = klines
    minutes = complete_minutes(recorded)
    assert [m.strftime("%H:%M") for m in minutes] == ["23:55", "23:56", "23:57", "23:58", "23:59"]
    bars = resample_ohlcv(recorded, "1min")
    assert compare_with_klines(bars, raw, minutes) == []
    # Prices must be bit-equal, not merely equal after rounding.
    for col in ("open", "high", "low", "close"):
        assert bars.loc[minutes, col].tolist() == raw.loc[minutes, col].astype(float).tolist()
    assert bars.loc[minutes, "trades"].sum() == raw.loc[minutes, "count"].astype(int).sum()


def test_golden_comparison_catches_one_trade_off(recorded, klines):
    """The comparison is sharp: moving one trade across a bar edge, or dropping one, fails it."""
    _, raw = klines
    minutes = complete_minutes(recorded)
    # Drop the smallest trade of 23:57 (smallest volume change possible).
    in_minute = recorded.loc["2024-08-08 23:57":"2024-08-08 23:57:59.999"]
    smallest = in_minute["qty"].to_numpy().argmin()
    pos = int(recorded.index.searchsorted(in_minute.index[0])) + int(smallest)
    dropped = pd.concat([recorded.iloc[:pos], recorded.iloc[pos + 1:]])
    assert "volume" in compare_with_klines(resample_ohlcv(dropped, "1min"), raw, minutes)
    assert "trades" in compare_with_klines(resample_ohlcv(dropped, "1min"), raw, minutes)
    # Move the first trade of 23:58 to the last millisecond of 23:57.
    shifted = recorded.copy()
    k = int(shifted.index.searchsorted(pd.Timestamp("2024-08-08 23:58", tz="UTC")))
    times = shifted.index.to_series().reset_index(drop=True)
    times.iloc[k] = pd.Timestamp("2024-08-08 23:57:59.999", tz="UTC")
    shifted.index = pd.DatetimeIndex(times, name="time")
    bad = compare_with_klines(resample_ohlcv(shifted, "1min"), raw, minutes)
    assert "trades" in bad and "volume" in bad


def test_first_and_last_minutes_are_partial(recorded, klines):
    """The recording starts and ends mid-minute: those bars hold fewer trades than Binance's."""
    _, raw = klines
    bars = resample_ohlcv(recorded, "1min")
    assert bars.index[0] == pd.Timestamp("2024-08-08 23:54", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2024-08-08 23:59", tz="UTC")
    assert bars["trades"].iloc[0] < int(raw.loc[bars.index[0], "count"])
    assert compare_with_klines(bars, raw, bars.index[:1]) != []


def make_ticks(times_ms, prices, qtys, makers, first=None, last=None) -> pd.DataFrame:
    ids = np.arange(len(times_ms), dtype=np.int64) + 100
    return pd.DataFrame({
        "price": np.asarray(prices, float), "qty": np.asarray(qtys, float),
        "is_buyer_maker": np.asarray(makers, bool), "id": ids,
        "first_id": ids * 10 if first is None else np.asarray(first, np.int64),
        "last_id": ids * 10 if last is None else np.asarray(last, np.int64),
    }, index=pd.DatetimeIndex(pd.to_datetime(np.asarray(times_ms, np.int64), unit="ms", utc=True),
                              name="time"))


def test_bars_are_left_closed_labelled_by_open_time_and_skip_empty_intervals():
    t = [0, 999, 1000, 3500]
    ticks = make_ticks(t, [10, 11, 12, 13], [1, 2, 3, 4], [True, False, False, True],
                       first=[1, 2, 5, 9], last=[1, 4, 5, 12])
    bars = resample_ohlcv(ticks, "1s")
    assert list(bars.columns) == BAR_COLUMNS
    assert [ts.value // 1_000_000 for ts in bars.index] == [0, 1000, 3000]
    assert bars["open"].tolist() == [10, 12, 13]
    assert bars["close"].tolist() == [11, 12, 13]
    assert bars["high"].tolist() == [11, 12, 13]
    assert bars["volume"].tolist() == [3, 3, 4]
    assert bars["quote_volume"].tolist() == [10 + 22, 36, 52]
    assert bars["trades"].tolist() == [1 + 3, 1, 4]
    assert bars["taker_buy_volume"].tolist() == [2, 3, 0]
    assert bars.index.tz is not None and bars.index.name == "time"


def test_unsorted_ticks_are_sorted_by_time_then_id():
    ticks = make_ticks([5, 1, 1, 7], [1.0, 2.0, 3.0, 4.0], [1, 1, 1, 1], [False] * 4)
    ticks["id"] = [4, 3, 2, 5]  # at t=1, id 2 (price 3) came first
    bars = resample_ohlcv(ticks, "1s")
    assert bars["open"].tolist() == [3.0] and bars["close"].tolist() == [4.0]


def test_sparse_and_dense_paths_agree():
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 10**9, 500))  # sparse: far more 1s edges than ticks
    ticks = make_ticks(t, rng.uniform(1, 2, 500), rng.uniform(0, 1, 500), rng.random(500) < .5)
    sparse = resample_ohlcv(ticks, "1s")
    dense = resample_ohlcv(ticks, "1d")
    keys = (t // 1000) * 1000
    assert len(sparse) == len(np.unique(keys))
    g = ticks.groupby(keys)
    np.testing.assert_allclose(sparse["volume"].to_numpy(), g["qty"].sum().to_numpy(), rtol=1e-12)
    daily = ticks.groupby(t // 86_400_000)
    assert dense["trades"].tolist() == daily["qty"].count().tolist()
    assert dense["high"].tolist() == daily["price"].max().tolist()
    assert sparse["close"].tolist() == g["price"].last().tolist()


@pytest.mark.parametrize("freq", ["1s", "5s", "1min", "15min", "1h"])
def test_matches_pandas_resample(freq):
    rng = np.random.default_rng(7)
    n = 5000
    t = np.sort(rng.integers(0, 4 * 3_600_000, n))
    ticks = make_ticks(t, rng.uniform(100, 101, n), rng.uniform(0, 2, n), rng.random(n) < 0.5)
    ticks["first_id"] = ticks["last_id"] = ticks["id"]
    ours = resample_ohlcv(ticks, freq)
    r = ticks.resample(freq, label="left", closed="left")
    ref = pd.DataFrame({"open": r["price"].first(), "high": r["price"].max(),
                        "low": r["price"].min(), "close": r["price"].last(),
                        "volume": r["qty"].sum(), "trades": r["qty"].count()}).dropna()
    ref = ref[ref["trades"] > 0]
    assert ours.index.equals(ref.index)
    for col in ("open", "high", "low", "close", "trades"):
        assert ours[col].tolist() == ref[col].tolist()
    np.testing.assert_allclose(ours["volume"], ref["volume"], rtol=1e-12)


def test_empty_ticks_give_empty_bars_and_bad_input_says_what_to_do():
    empty = make_ticks([], [], [], [])
    bars = resample_ohlcv(empty, "1s")
    assert bars.empty and list(bars.columns) == BAR_COLUMNS
    with pytest.raises(DataError, match="1min") as exc:
        resample_ohlcv(empty, "1m")
    assert all(f in str(exc.value) for f in FREQS)
    with pytest.raises(DataError, match="missing column"):
        resample_ohlcv(empty.drop(columns="qty"), "1s")
    with pytest.raises(DataError, match="tz_localize"):
        resample_ohlcv(empty.tz_localize(None), "1s")
    assert issubclass(DataError, ValueError)


def test_align_bars_keeps_common_times_only():
    a = make_ticks([0, 1000, 2000], [1, 2, 3], [1, 1, 1], [False] * 3)
    b = make_ticks([1000, 2000, 3000], [5, 6, 7], [1, 1, 1], [False] * 3)
    ba, bb = align_bars(resample_ohlcv(a, "1s"), resample_ohlcv(b, "1s"))
    assert ba.index.equals(bb.index) and len(ba) == 2
    assert ba["close"].tolist() == [2, 3] and bb["close"].tolist() == [5, 6]
    c = make_ticks([9_000_000], [1], [1], [False])
    with pytest.raises(DataError, match="same freq"):
        align_bars(resample_ohlcv(a, "1s"), resample_ohlcv(c, "1s"))
