"""Benchmark of quantkit.analytics against the naive baselines, in one run.

1. Resample 10M ticks to 1 s OHLCV bars: ``resample_ohlcv`` vs pandas' own ``resample`` of the
   same ticks into the same eight columns.
2. Rolling hedge ratio over 100k bars, window 300: ``rolling_hedge_ratio`` vs statsmodels
   ``RollingOLS``.
3. One live refresh with 10M ticks stored in a real SQLite tick store: ``read_new`` of the
   newest rows + ``LivePair.update`` vs the naive refresh that re-reads every tick, resamples
   and recomputes the pair statistics.

Usage::

    python benchmarks/bench_analytics.py            # full sizes (~2 min, ~2 GB peak)
    python benchmarks/bench_analytics.py --quick    # 1M ticks, 20k bars (~15 s)
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quantkit.analytics import (  # noqa: E402
    LivePair,
    align_bars,
    pair_stats,
    resample_ohlcv,
    rolling_hedge_ratio,
)
from quantkit.storage import TickStore, TickWriter  # noqa: E402

T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC, ms


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def timeit(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeat`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def synthetic_ticks(n: int, *, rate: float, seed: int) -> pd.DataFrame:
    """A TickStore.ticks()-shaped frame of ``n`` trades at ``rate`` trades/s on average."""
    rng = np.random.default_rng(seed)
    t = T0 + np.cumsum(rng.exponential(1000.0 / rate, n)).astype(np.int64)
    ids = np.arange(n, dtype=np.int64) + 5_000_000_000
    return pd.DataFrame({
        "price": np.round(60000 * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 1),
        "qty": np.round(rng.exponential(0.05, n), 3) + 0.001,
        "is_buyer_maker": rng.random(n) < 0.5,
        "id": ids, "first_id": ids, "last_id": ids,
    }, index=pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True), name="time"))


def pandas_resample(ticks: pd.DataFrame, freq: str) -> pd.DataFrame:
    """The naive baseline: pandas' resample into the same eight columns."""
    extra = pd.DataFrame({
        "qty": ticks["qty"],
        "quote": ticks["price"] * ticks["qty"],
        "n": ticks["last_id"] - ticks["first_id"] + 1,
        "taker": ticks["qty"].where(~ticks["is_buyer_maker"], 0.0),
    })
    out = ticks["price"].resample(freq).ohlc()
    sums = extra.resample(freq).sum()
    out["volume"], out["quote_volume"] = sums["qty"], sums["quote"]
    out["trades"], out["taker_buy_volume"] = sums["n"], sums["taker"]
    return out[out["trades"] > 0]


def bench_resample(n: int) -> None:
    print(f"\n[1] resample {n:,} ticks to 1 s bars")
    ticks = synthetic_ticks(n, rate=100.0, seed=1)
    print(f"    ticks frame built; RSS {rss_mb():,.0f} MB")
    ours_s, ours = timeit(lambda: resample_ohlcv(ticks, "1s"), 5)
    pandas_s, ref = timeit(lambda: pandas_resample(ticks, "1s"), 3)
    same = (ours.index.equals(ref.index)
            and all((ours[c].to_numpy() == ref[c].to_numpy()).all()
                    for c in ("open", "high", "low", "close", "trades"))
            and np.allclose(ours["volume"], ref["volume"], rtol=1e-12))
    print(f"    quantkit resample_ohlcv     {fmt(ours_s)}  ({len(ours):,} bars)")
    print(f"    pandas resample (baseline)  {fmt(pandas_s)}")
    print(f"    speed-up x{pandas_s / ours_s:,.1f}; same bars: {same}")


def bench_rolling(n: int, window: int) -> None:
    import statsmodels.api as sm
    from statsmodels.regression.rolling import RollingOLS

    print(f"\n[2] rolling hedge ratio, {n:,} bars, window {window}")
    rng = np.random.default_rng(2)
    x = pd.Series(60000 + np.cumsum(rng.normal(0, 8, n)))
    y = 150 + 0.041 * x + pd.Series(np.cumsum(rng.normal(0, 0.4, n)))
    ours_s, ours = timeit(lambda: rolling_hedge_ratio(y, x, window), 7)
    ref_s, ref = timeit(lambda: RollingOLS(y, sm.add_constant(x), window=window).fit().params, 1)
    # Exact oracle on a sample of windows: a plain OLS fit of each.
    worst = 0.0
    for end in range(window - 1, n, max(1, n // 50)):
        p = sm.OLS(y.iloc[end - window + 1:end + 1],
                   sm.add_constant(x.iloc[end - window + 1:end + 1])).fit().params
        worst = max(worst, abs(ours["beta"].iloc[end] / p.iloc[1] - 1))
    vs_rolling = float(np.nanmax(np.abs(ours["beta"] / ref.iloc[:, 1] - 1)))
    print(f"    quantkit rolling_hedge_ratio {fmt(ours_s)}")
    print(f"    statsmodels RollingOLS       {fmt(ref_s)}")
    print(f"    speed-up x{ref_s / ours_s:,.0f}; max rel. diff of beta vs OLS per window "
          f"{worst:.1e}, vs RollingOLS {vs_rolling:.1e} (RollingOLS's uncentred sums drift)")


def fill_store(path: Path, n: int, *, rate: float, batch: int = 250_000) -> int:
    """Write ``n`` trades of BTCUSDT and ETHUSDT (alternating) through TickWriter.insert."""
    rng = np.random.default_rng(3)
    written, t_last = 0, T0
    with TickWriter(path) as writer:
        writer.claim(origin="binance", stream="trade", symbols=["BTCUSDT", "ETHUSDT"])
        while written < n:
            m = min(batch, n - written)
            t = t_last + np.cumsum(rng.exponential(1000.0 / rate, m)).astype(np.int64)
            t_last = int(t[-1])
            k = np.arange(written, written + m)
            eth = k % 2 == 1
            ids = (k // 2 + 1).tolist()
            price = np.where(eth, 2600.0, 60000.0) * np.exp(rng.normal(0, 1e-4, m))
            rows = list(zip(np.where(eth, "ETHUSDT", "BTCUSDT").tolist(), ids, t.tolist(),
                            np.round(price, 2).tolist(), np.round(rng.exponential(0.05, m) +
                                                                  0.001, 3).tolist(),
                            ids, ids, (rng.random(m) < 0.5).tolist(), t.tolist()))
            writer.insert(rows)
            written += m
    return t_last


def bench_live(n: int, *, updates: int, ticks_per_update: int, naive: bool) -> None:
    print(f"\n[3] live refresh with {n:,} ticks stored (SQLite WAL, real TickWriter/TickStore)")
    rate = 200.0
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ticks.db"
        start = time.perf_counter()
        t_last = fill_store(db, n, rate=rate)
        build = time.perf_counter() - start
        size = db.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("ticks.db-*"))
        print(f"    store built in {build:.1f} s ({n / build:,.0f} rows/s), "
              f"{size / 2**20:,.0f} MB on disk; RSS {rss_mb():,.0f} MB")
        store = TickStore(db)
        lp = LivePair("ETHUSDT", "BTCUSDT", freq="1s", window=300, max_bars=2000)
        # Prime the engine with the newest ~2000 s of trades, as a dashboard does on start.
        cursor = store.last_cursor()
        lp.update(store.read_new(max(0, cursor - int(2100 * rate))).frame)
        rss_before = rss_mb()
        rng = np.random.default_rng(4)
        next_id = n // 2 + 10
        times, upd_times = [], []
        with TickWriter(db) as writer:
            for _ in range(updates):
                m = ticks_per_update
                t = t_last + np.cumsum(rng.exponential(1000.0 / rate, m)).astype(np.int64)
                t_last = int(t[-1])
                syms = ["ETHUSDT", "BTCUSDT"] * (m // 2)
                rows = [(s, next_id + i, int(tt), 2600.0 if s == "ETHUSDT" else 60000.0,
                         0.01, next_id + i, next_id + i, bool(i % 3), int(tt))
                        for i, (s, tt) in enumerate(zip(syms, t))]
                next_id += m
                writer.insert(rows)
                s0 = time.perf_counter()
                batch = store.read_new(cursor)
                s1 = time.perf_counter()
                lp.update(batch.frame)
                s2 = time.perf_counter()
                cursor = batch.cursor
                times.append(s2 - s0)
                upd_times.append(s2 - s1)
        stats_s, frame = timeit(lp.stats, 20)
        held = sum(v.nbytes for b in lp._books.values() for v in (b.t, *b.cols.values()))
        held += sum(v.nbytes for v in lp._stats.values())
        print(f"    one refresh (read_new of {ticks_per_update} new ticks + LivePair.update): "
              f"median {fmt(statistics.median(times))}, p95 "
              f"{fmt(sorted(times)[int(0.95 * len(times)) - 1])} over {updates} refreshes")
        print(f"      of which LivePair.update median {fmt(statistics.median(upd_times))}; "
              f"stats() frame for plotting {fmt(stats_s)}")
        print(f"    engine state {held / 2**10:,.0f} KiB ({len(lp.bars('BTCUSDT'))} bars per "
              f"symbol held, {len(frame)} aligned rows); RSS {rss_mb():,.0f} MB "
              f"(+{rss_mb() - rss_before:,.1f} MB during the refreshes)")
        if naive:
            def naive_refresh() -> pd.DataFrame:
                eth = resample_ohlcv(store.ticks("ETHUSDT"), "1s")
                btc = resample_ohlcv(store.ticks("BTCUSDT"), "1s")
                ya, xa = align_bars(eth, btc)
                return pair_stats(ya["close"], xa["close"], window=300)
            naive_s, full = timeit(naive_refresh, 1)
            last_ok = np.isclose(full["zscore"].iloc[-1], lp.stats()["zscore"].iloc[-1],
                                 rtol=1e-6)
            print(f"    naive refresh (re-read all {n:,} ticks, resample, stats) "
                  f"{fmt(naive_s)}; RSS {rss_mb():,.0f} MB")
            print(f"    speed-up x{naive_s / statistics.median(times):,.0f}; "
                  f"same last z-score: {bool(last_ok)}")
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-naive", action="store_true",
                        help="skip the naive full re-read (the slowest step)")
    args = parser.parse_args(argv)
    big = 1_000_000 if args.quick else 10_000_000
    print(f"quantkit analytics benchmark ({'quick' if args.quick else 'full'}); "
          f"numpy {np.__version__}, pandas {pd.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    bench_resample(big)
    bench_rolling(20_000 if args.quick else 100_000, 300)
    bench_live(big, updates=30 if args.quick else 100, ticks_per_update=100,
               naive=not args.no_naive)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\npeak RSS of the whole run {peak:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
