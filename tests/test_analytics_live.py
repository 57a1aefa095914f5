"""LivePair: incremental bars and statistics equal the batch functions, bar by bar."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import read_recorded_trades
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantkit.analytics import (
    BAR_COLUMNS,
    LivePair,
    align_bars,
    cointegration,
    half_life,
    pair_stats,
    resample_ohlcv,
)
from quantkit.errors import DataError
from quantkit.storage import TickStore, TickWriter
from quantkit.wire import Trade

SYMS = ("AAA", "BBB", "ZZZ")  # ZZZ is in the feed but not in the pair


def frame(rows: list[tuple]) -> pd.DataFrame:
    """A read_new()-shaped frame from (symbol, time_ms, id, price, qty, maker, n_trades)."""
    if not rows:
        rows_ = np.empty((0, 7), dtype=object)
    else:
        rows_ = np.array(rows, dtype=object)
    ids = rows_[:, 2].astype(np.int64)
    return pd.DataFrame({
        "price": rows_[:, 3].astype(float), "qty": rows_[:, 4].astype(float),
        "is_buyer_maker": rows_[:, 5].astype(bool), "id": ids, "first_id": ids * 10,
        "last_id": ids * 10 + rows_[:, 6].astype(np.int64) - 1,
        "symbol": rows_[:, 0].astype(str),
    }, index=pd.DatetimeIndex(pd.to_datetime(rows_[:, 1].astype(np.int64), unit="ms", utc=True),
                              name="time"))


def batch_bars(rows: list[tuple], symbol: str, freq: str) -> pd.DataFrame:
    # In (time, id) order, as TickStore.ticks() returns trades.
    mine = sorted((r for r in rows if r[0] == symbol), key=lambda r: (r[1], r[2]))
    return resample_ohlcv(frame(mine).drop(columns="symbol"), freq)


def assert_bars_equal(live: pd.DataFrame, batch: pd.DataFrame, *, exact: bool) -> None:
    assert live.index.equals(batch.index)
    for col in ("open", "high", "low", "close", "trades"):
        assert live[col].tolist() == batch[col].tolist(), col
    for col in ("volume", "quote_volume", "taker_buy_volume"):
        if exact:
            assert live[col].tolist() == batch[col].tolist(), col
        else:
            np.testing.assert_allclose(live[col], batch[col], rtol=1e-12, err_msg=col)


def assert_stats_equal(live: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Equal up to float rounding, which the incremental engine may order differently.

    Closes are compared exactly. The spread is a difference of terms of the size of ``y``, so
    its tolerance is scaled by ``|y| + |beta x| + |alpha|``; the z-score divides by the
    spread's std, so it is compared where that std is above rounding noise (an exact fit,
    e.g. collinear bars, has a spread made of rounding noise only).
    """
    assert live.index.equals(batch.index)
    assert list(live.columns) == list(batch.columns)
    for col in ("y", "x"):
        assert live[col].tolist() == batch[col].tolist(), col
    scale = (batch["y"].abs() + (batch["beta"] * batch["x"]).abs() + batch["alpha"].abs()
             ).to_numpy()
    noisy = ~(batch["spread_std"].to_numpy() > 1e-7 * scale)
    for col in ("alpha", "beta", "spread", "spread_mean", "spread_std", "zscore", "corr"):
        a, b = live[col].to_numpy(), batch[col].to_numpy()
        rtol, atol = 1e-9, np.zeros(len(a))
        if col.startswith("spread"):
            atol = 1e-9 * np.nan_to_num(scale)
        if col in ("zscore", "spread_std"):
            keep = ~noisy
            a, b, atol = a[keep], b[keep], atol[keep]
            rtol = 1e-6 if col == "zscore" else rtol
            atol = atol + (1e-6 if col == "zscore" else 0.0)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        ok = ~np.isnan(a)
        assert np.all(np.abs(a[ok] - b[ok]) <= atol[ok] + rtol * np.abs(b[ok])), (
            col, a[ok], b[ok])


def check_against_batch(lp: LivePair, delivered: list[tuple], *, exact: bool) -> None:
    bars = {}
    for sym in ("AAA", "BBB"):
        live = lp.bars(sym)
        batch = batch_bars(delivered, sym, lp.freq)
        assert_bars_equal(live[BAR_COLUMNS], batch, exact=exact)
        if len(live):
            newest = max(r[1] for r in delivered if r[0] in ("AAA", "BBB"))
            last_end = live.index[-1].value // 1_000_000 + lp.step
            assert live["is_open"].tolist() == [False] * (len(live) - 1) + [newest < last_end]
        bars[sym] = batch
    if len(bars["AAA"]) and len(bars["BBB"]):
        common = bars["AAA"].index.intersection(bars["BBB"].index)
        if len(common) >= lp.window:
            ya, xa = align_bars(bars["AAA"], bars["BBB"])
            ref = pair_stats(ya["close"], xa["close"], window=lp.window, hedge=lp.hedge,
                             delta=lp.delta, obs_var=lp.obs_var, init_var=lp.init_var)
            assert_stats_equal(lp.stats(), ref)
        else:
            assert len(lp.stats()) == len(common)


@st.composite
def streams(draw):
    """Random trades of three symbols over ~40 s, delivered out of order in random chunks.

    Prices are multiples of 0.5 and quantities multiples of 1/8, so every float sum is exact
    in any order and the bars must match bit for bit.
    """
    n = draw(st.integers(1, 160))
    rows = []
    next_id = {s: 1 for s in SYMS}
    times = sorted(draw(st.lists(st.integers(0, 40_000), min_size=n, max_size=n)))
    for t in times:
        sym = draw(st.sampled_from(SYMS))
        rows.append((sym, t, next_id[sym], 100 + draw(st.integers(-20, 20)) / 2,
                     draw(st.integers(1, 64)) / 8, draw(st.booleans()), draw(st.integers(1, 3))))
        next_id[sym] += 1
    # Deliver mostly in order, with some trades held back and sent late (a backfill).
    late = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    order = [r for r, lt in zip(rows, late) if not lt] + [r for r, lt in zip(rows, late) if lt]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=12)))
    chunks = [order[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
    return chunks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=streams(), freq=st.sampled_from(["1s", "5s"]), window=st.integers(2, 5),
       hedge=st.sampled_from(["rolling_ols", "ols", "kalman"]))
def test_incremental_equals_batch_bar_by_bar(chunks, freq, window, hedge):
    lp = LivePair("AAA", "BBB", freq=freq, window=window, max_bars=1000, hedge=hedge,
                  obs_var=0.1)
    delivered: list[tuple] = []
    for chunk in chunks:
        used = lp.update(frame(chunk))
        assert used == sum(r[0] != "ZZZ" for r in chunk)
        delivered += chunk
        check_against_batch(lp, delivered, exact=True)


def random_walk_rows(n: int, seed: int, *, span_ms: int, symbols=("AAA", "BBB")) -> list[tuple]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_ms, n))
    sym = rng.choice(symbols, n)
    base = {"AAA": 2600.0, "BBB": 60000.0, "ZZZ": 1.0}
    steps = rng.normal(0, 1e-4, n)
    rows, ids, level = [], {s: 0 for s in symbols}, dict(base)
    for i in range(n):
        s = str(sym[i])
        level[s] *= 1 + steps[i] + (steps[i - 1] if s == "AAA" and i else 0)
        ids[s] += 1
        rows.append((s, int(t[i]), ids[s], round(level[s], 2), round(rng.uniform(0.001, 2), 3),
                     bool(rng.random() < 0.5), int(rng.integers(1, 4))))
    return rows


@pytest.mark.parametrize("hedge", ["rolling_ols", "kalman"])
def test_long_stream_with_real_float_sums_and_a_chunked_window(hedge):
    """Window 40 takes the chunked cumulative-sum path; volumes are real decimal floats."""
    rows = random_walk_rows(30_000, 1, span_ms=900_000)
    lp = LivePair("AAA", "BBB", freq="1s", window=40, max_bars=1000, hedge=hedge)
    rng = np.random.default_rng(2)
    cuts = np.sort(rng.integers(0, len(rows), 60))
    delivered: list[tuple] = []
    for a, b in zip([0, *cuts], [*cuts, len(rows)]):
        lp.update(frame(rows[a:b]))
        delivered += rows[a:b]
    check_against_batch(lp, delivered, exact=False)
    s = lp.summary()
    stats = lp.stats()
    assert s["beta"] == stats["beta"].iloc[-1] and s["zscore"] == stats["zscore"].iloc[-1]
    assert s["bars"] == len(stats) and s["time"] == stats.index[-1]
    assert s["pvalue"] == cointegration(stats["y"], stats["x"]).pvalue
    assert s["half_life"] == half_life(stats["spread"].dropna())
    # A tick that only moves the open bar keeps the cached test, but updates the last values.
    last = stats.index[-1].value // 1_000_000
    lp.update(frame([("AAA", last + 1, 10**7, 2700.0, 1.0, False, 1)]))
    s2 = lp.summary()
    assert s2["pvalue"] == s["pvalue"] and s2["zscore"] != s["zscore"]


def test_bars_stay_bounded_and_kept_rows_keep_their_values():
    rows = random_walk_rows(20_000, 3, span_ms=1_200_000)
    small = LivePair("AAA", "BBB", freq="1s", window=20, max_bars=100)
    big = LivePair("AAA", "BBB", freq="1s", window=20, max_bars=10_000)
    for a in range(0, len(rows), 500):
        small.update(frame(rows[a:a + 500]))
        big.update(frame(rows[a:a + 500]))
        assert len(small.bars("AAA")) <= 100 and len(small.bars("BBB")) <= 100
    assert len(big.bars("AAA")) > 1000
    # The bars held are the newest of the full history, unchanged.
    for sym in ("AAA", "BBB"):
        assert_bars_equal(small.bars(sym), big.bars(sym).iloc[-100:], exact=True)
    # Statistics of the rows held equal those computed with the full history.
    kept = small.stats()
    assert_stats_equal(kept, big.stats().loc[kept.index])
    # A tick older than every bar held is too late: counted and ignored.
    oldest = small.bars("AAA").index[0].value // 1_000_000
    before = small.bars("AAA")
    small.update(frame([("AAA", oldest - 5_000, 10**6, 1.0, 1.0, False, 1)]))
    assert small.late_dropped == 1 and small.bars("AAA").equals(before)


def test_a_late_tick_revises_its_closed_bar():
    lp = LivePair("AAA", "BBB", freq="1s", window=2, max_bars=10)
    lp.update(frame([("AAA", 100, 2, 10.0, 1.0, False, 1), ("AAA", 1500, 3, 11.0, 1.0, True, 1),
                     ("BBB", 900, 1, 50.0, 2.0, False, 1)]))
    bars = lp.bars("AAA")
    assert bars["is_open"].tolist() == [False, True]
    # Backfill: an earlier trade (id 1) of the closed first bar arrives late.
    lp.update(frame([("AAA", 50, 1, 9.5, 0.5, True, 2)]))
    bars = lp.bars("AAA")
    assert bars["open"].tolist() == [9.5, 11.0] and bars["low"].iloc[0] == 9.5
    assert bars["close"].iloc[0] == 10.0 and bars["trades"].iloc[0] == 3
    assert bars["volume"].iloc[0] == 1.5 and bars["taker_buy_volume"].iloc[0] == 1.0
    # A BBB trade at 2.0 s closes AAA's 1 s bar too: both legs share the exchange clock.
    lp.update(frame([("BBB", 2000, 2, 51.0, 1.0, False, 1)]))
    assert lp.bars("AAA")["is_open"].tolist() == [False, False]
    assert lp.bars("BBB")["is_open"].tolist() == [False, True]


def test_errors_say_what_to_change():
    with pytest.raises(DataError, match="1min"):
        LivePair("AAA", "BBB", freq="1m")
    with pytest.raises(DataError, match="at least 2"):
        LivePair("AAA", "BBB", window=1)
    with pytest.raises(DataError, match="2 \\* window"):
        LivePair("AAA", "BBB", window=300, max_bars=100)
    with pytest.raises(DataError, match="rolling_ols"):
        LivePair("AAA", "BBB", hedge="ridge")
    with pytest.raises(DataError, match="two different"):
        LivePair("AAA", "aaa")
    lp = LivePair("AAA", "BBB", window=2, max_bars=4)
    with pytest.raises(DataError, match="read_new"):
        lp.update(pd.DataFrame({"price": [1.0]}))
    with pytest.raises(DataError, match="not a leg"):
        lp.bars("CCC")
    assert lp.update(frame([])) == 0 and lp.stats().empty and lp.bars("AAA").empty
    assert np.isnan(lp.summary()["beta"])


def test_live_pair_on_a_real_store_with_a_backfill(tmp_path, binance_data):
    """Real trades through a real SQLite store: read_new increments, then a late backfill."""
    trades = []
    for name in ("btcusdt", "ethusdt"):
        path = binance_data / f"hftbacktest_usdm_{name}_20240808_trade.txt.gz"
        for p in read_recorded_trades(path):
            trades.append(Trade(p["s"], p["t"], p["T"], float(p["p"]), float(p["q"]), p["t"],
                                p["t"], p["m"], None))
    trades.sort(key=lambda tr: tr.trade_time)
    held_back = trades[5000:5600]  # a gap, backfilled at the end
    live = trades[:5000] + trades[5600:]
    db = tmp_path / "ticks.db"
    lp = LivePair("ETHUSDT", "BTCUSDT", freq="1s", window=30, max_bars=2000)
    with TickWriter(db) as writer:
        writer.claim(origin="binance", stream="trade", symbols=["BTCUSDT", "ETHUSDT"])
        store = TickStore(db)
        cursor = 0
        for i in range(0, len(live), 1700):
            writer.insert(live[i:i + 1700])
            batch = store.read_new(cursor)
            cursor = batch.cursor
            lp.update(batch.frame)
        writer.insert(held_back)
        batch = store.read_new(cursor)
        assert len(batch.frame) == 600
        lp.update(batch.frame)
    bars = {s: resample_ohlcv(store.ticks(s), "1s") for s in ("ETHUSDT", "BTCUSDT")}
    for s, ref in bars.items():
        assert_bars_equal(lp.bars(s)[BAR_COLUMNS], ref, exact=False)
    ya, xa = align_bars(bars["ETHUSDT"], bars["BTCUSDT"])
    assert_stats_equal(lp.stats(), pair_stats(ya["close"], xa["close"], window=30))
    assert lp.ticks_seen == len(trades)
    assert abs(lp.summary()["corr"]) <= 1
    store.close()
