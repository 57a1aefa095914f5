"""The Dashboard class against a real tick store of real recorded Binance trades (no browser)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, read_recorded_trades

from quantkit.analytics import indicator, registry, resample_ohlcv
from quantkit.dashboard import Dashboard
from quantkit.dashboard.figures import crossings, epoch_ms
from quantkit.errors import ConfigError, StorageError
from quantkit.storage import TickStore, TickWriter
from quantkit.wire import Trade, parse_message

RECORDINGS = ("hftbacktest_usdm_btcusdt_20240808_trade.txt.gz",
              "hftbacktest_usdm_ethusdt_20240808_trade.txt.gz")


def recorded_rows() -> list[Trade]:
    """BTCUSDT and ETHUSDT trades of 2024-08-08 23:54-00:00 UTC, in trade-time order."""
    import orjson

    rows = []
    for name in RECORDINGS:
        rows += [parse_message(orjson.dumps(d)) for d in read_recorded_trades(SHARED_DATA / name)]
    rows.sort(key=lambda t: (t.trade_time, t.id))
    return rows


def write_store(path: Path, rows: list[Trade]) -> Path:
    with TickWriter(path) as w:
        w.claim(origin="binance", stream="trade", symbols=("BTCUSDT", "ETHUSDT"))
        w.insert(rows)
    return path


class SpyStore(TickStore):
    """A real TickStore that remembers every read_new cursor and row count."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[tuple[int, int]] = []

    def read_new(self, cursor=0, *, symbols=None, limit=None):
        batch = super().read_new(cursor, symbols=symbols, limit=limit)
        self.reads.append((cursor, len(batch.frame)))
        return batch


@pytest.fixture(scope="module")
def rows() -> list[Trade]:
    return recorded_rows()


def trace(app: Dashboard, meta: str):
    return next(t for t in app.figure.data if t.meta == meta)


def test_refresh_reads_only_new_rows(tmp_path, rows):
    cut = int(len(rows) * 0.8)
    path = write_store(tmp_path / "ticks.db", rows[:cut])
    store = SpyStore(path)
    app = Dashboard(store, autostart=False)
    assert app.pair == ("BTCUSDT", "ETHUSDT")
    assert app.refresh() is True
    # The history came from ticks(); read_new starts at the cursor taken before it.
    assert store.reads == [(cut, 0)] and app.rows_read == 0 and app.cursor == cut

    with TickWriter(path) as w:
        w.insert(rows[cut:])
    assert app.refresh() is True
    assert store.reads[-1] == (cut, len(rows) - cut)
    assert app.rows_read == len(rows) - cut and app.cursor == len(rows)
    draws = app.draws
    assert app.refresh() is False  # nothing new: no read of old rows, no redraw
    assert store.reads[-1] == (len(rows), 0) and app.draws == draws

    # The drawn bars are exactly the batch resample of every stored tick.
    for leg, sym in (("y", "BTCUSDT"), ("x", "ETHUSDT")):
        bars = resample_ohlcv(store.ticks(sym), "1s").iloc[-app.max_bars:]
        closed = trace(app, f"{leg}-candles")
        opened = trace(app, f"{leg}-open-candle")
        x = np.concatenate([closed.x, opened.x])
        close = np.concatenate([closed.close, opened.close])
        np.testing.assert_array_equal(x, epoch_ms(bars.index))
        np.testing.assert_array_equal(close, bars["close"].to_numpy())
        assert closed.x.dtype == np.float64 and closed.close.dtype == np.float64
    # BTC's last trade (23:59:59.643) is followed by ETH's at 00:00:00.029: its bar is closed;
    # ETH's last bar can still change, so it is drawn apart as the open bar.
    assert len(trace(app, "y-open-candle").x) == 0
    assert list(trace(app, "x-open-candle").x) == [float(pd.Timestamp("2024-08-09", tz="UTC")
                                                         .value // 1_000_000)]
    assert "last trade 00:00:00.029 UTC" in app.status_bar.value


def test_windows_stay_bounded(tmp_path, rows):
    path = write_store(tmp_path / "ticks.db", rows[:1000])
    app = Dashboard(TickStore(path), max_bars=100, window=20, autostart=False)
    app.refresh()
    with TickWriter(path) as w:
        for i in range(1000, len(rows), 5000):  # live increments
            w.insert(rows[i:i + 5000])
            app.refresh()
    assert app.rows_read == len(rows) - 1000
    lengths = {t.meta: len(t.x) for t in app.figure.data if t.x is not None}
    assert max(lengths.values()) == 100
    assert lengths["y-candles"] + len(trace(app, "y-open-candle").x) == 100
    assert lengths["ind-bollinger-y-upper"] == 100
    assert 95 <= lengths["zscore"] <= 100  # stats live on the seconds where both legs traded
    # The newest bar drawn is the newest stored second.
    assert trace(app, "x-open-candle").x[-1] == pd.Timestamp("2024-08-09", tz="UTC").value / 1e6


def test_controls_update_figures(tmp_path, rows):
    app = Dashboard(TickStore(write_store(tmp_path / "ticks.db", rows)), window=30,
                    autostart=False)
    app.refresh()
    c = app.controls
    c["freq"].value = "15s"  # the change handler refreshes at once
    x = trace(app, "y-candles").x
    assert len(x) > 10 and set(np.diff(x)) == {15_000.0}
    bars = resample_ohlcv(app._store.ticks("BTCUSDT"), "15s")
    # ETH traded at 00:00:00.029, so every BTC bar is closed at 15 s too.
    np.testing.assert_array_equal(trace(app, "y-candles").close, bars["close"])

    c["y"].value, c["x"].value = "ETHUSDT", "BTCUSDT"
    assert app.pair == ("ETHUSDT", "BTCUSDT")
    assert 2000 < np.nanmean(trace(app, "y-candles").close) < 3000  # ETH now on top
    assert app.figure.layout.yaxis.title.text == "ETHUSDT"
    assert app.figure.layout.uirevision == "ETHUSDT/BTCUSDT/15s/live"

    c["freq"].value = "1s"
    beta = np.asarray(trace(app, "beta").y)
    c["window"].value = 10
    beta10 = np.asarray(trace(app, "beta").y)
    assert np.isnan(beta).sum() == 29 and np.isnan(beta10).sum() == 9  # warm-up = window - 1

    c["hedge"].value = "ols"
    assert np.unique(np.asarray(trace(app, "beta").y)).size == 1  # one fit over the window

    c["entry"].value, c["exit"].value = 1.5, 0.2
    levels = sorted(s.y0 for s in app.figure.layout.shapes)
    assert levels == [-1.5, -0.2, 0.0, 0.2, 1.5]
    z = pd.Series(np.asarray(trace(app, "zscore").y))
    entries, exits = crossings(z, 1.5, 0.2)
    assert len(trace(app, "z-entries").x) == len(entries)
    assert len(trace(app, "z-exits").x) == len(exits)

    c["candles"].value = False
    assert trace(app, "y-line").visible is True and trace(app, "y-candles").visible is False

    c["exit"].value = 1.9  # not below entry: refused, said on the page, figure untouched
    assert "exit threshold must be below" in app.status_bar.value
    assert sorted(s.y0 for s in app.figure.layout.shapes) == levels
    c["freq"].value = "5s"  # refused too while the thresholds are wrong ...
    assert np.diff(trace(app, "y-line").x).min() == 1000.0
    c["exit"].value = 0.3  # ... and applied once they are fixed
    assert np.diff(trace(app, "y-line").x).min() == 5000.0
    assert "exit threshold" not in app.status_bar.value


def test_history_window_reads_no_new_rows(tmp_path, rows):
    path = write_store(tmp_path / "ticks.db", rows)
    store = SpyStore(path)
    app = Dashboard(store, autostart=False)
    app.refresh()
    c = app.controls
    c["start"].value, c["end"].value = "2024-08-08 23:56", "2024-08-08 23:57:30"
    c["mode"].value = "history"
    x = np.concatenate([trace(app, "y-candles").x, trace(app, "y-open-candle").x])
    assert x[0] == pd.Timestamp("2024-08-08 23:56", tz="UTC").value / 1e6
    assert x[-1] == pd.Timestamp("2024-08-08 23:57:29", tz="UTC").value / 1e6
    reads = len(store.reads)
    app.refresh()
    assert len(store.reads) == reads and "history (paused)" in app.status_bar.value


def test_registry_change_offers_new_indicator(tmp_path, rows):
    app = Dashboard(TickStore(write_store(tmp_path / "ticks.db", rows)), autostart=False)
    app.refresh()

    @indicator(overlay=True, span=10)
    def qk_test_ema(bars, span=20):
        return bars["close"].ewm(span=span).mean()

    try:
        assert "qk_test_ema" in app.controls["overlays"].options
        app.controls["overlays"].value = ("qk_test_ema",)
        ema = trace(app, "ind-qk_test_ema-y")
        bars = resample_ohlcv(app._store.ticks("BTCUSDT"), "1s").iloc[-app.max_bars:]
        np.testing.assert_allclose(ema.y, bars["close"].ewm(span=10).mean(), rtol=1e-12)
        assert ema.yaxis == "y"  # an overlay: on the price panel
    finally:
        registry.unregister("qk_test_ema")
    assert "qk_test_ema" not in app.controls["overlays"].options


def test_errors_in_the_live_loop_are_shown(tmp_path, rows):
    store = TickStore(write_store(tmp_path / "ticks.db", rows))
    app = Dashboard(store, interval=0.1, autostart=False)

    def broken(*args, **kwargs):
        raise StorageError("disk went away")

    store.read_new = broken

    async def run_briefly():
        app.start()
        # wait for the condition, bounded, rather than a fixed time: CI machines are busy
        for _ in range(200):
            await asyncio.sleep(0.05)
            if app.errors >= 2:
                break
        app.stop()

    asyncio.run(run_briefly())
    assert app.errors >= 2  # the loop kept going after the first failure
    assert "StorageError: disk went away" in app.status_bar.value


def test_status_bar_tells_connection_state(tmp_path, rows):
    path = write_store(tmp_path / "ticks.db", rows[:100])
    status = {"state": "reconnecting", "msgs_per_s": 1234.0, "lag_ms": 87, "reconnects": 3,
              "last_gap": {"symbol": "BTCUSDT", "from_id": 10, "to_id": 12, "status": "filled"},
              "heartbeat_age_s": 0.4}
    app = Dashboard(TickStore(path), status=lambda: status, autostart=False)
    app.refresh()
    html = app.status_bar.value
    for text in ("● reconnecting", "1,234 msgs/s", "lag 87 ms", "reconnects 3",
                 "last gap BTCUSDT 10..12 filled"):
        assert text in html
    status["heartbeat_age_s"] = 42.0
    app.refresh()
    assert "stale: no heartbeat for 42 s" in app.status_bar.value


def test_waits_for_a_database_not_yet_created(tmp_path, rows):
    path = tmp_path / "later.db"
    app = Dashboard(path, symbols=["BTCUSDT", "ETHUSDT"], autostart=False)
    assert app.refresh() is False and "waiting for" in app.status_bar.value
    write_store(path, rows)
    assert app.refresh() is True and len(trace(app, "y-candles").x) > 300


def test_crossings():
    z = pd.Series([np.nan, 0.0, 1.0, 2.1, 2.5, 1.0, 0.4, -0.1, -2.0, -0.3, 0.1])
    entries, exits = crossings(z, 2.0, 0.5)
    assert entries.index.tolist() == [3, 8] and entries.tolist() == [2.1, -2.0]
    assert exits.index.tolist() == [6, 9]


@pytest.mark.parametrize("kwargs, match", [
    ({"entry": 1.0, "exit": 1.0}, "exit/entry"),
    ({"freq": "2s"}, "freq"),
    ({"window": 400}, "window"),
    ({"hedge": "tls"}, "hedge"),
    ({"pair": ("A1", "A1")}, "pair"),
])
def test_bad_settings_raise_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Dashboard(tmp_path / "x.db", symbols=["A1", "B1"], autostart=False, **kwargs)


def test_indicator_files_reach_dashboards_in_other_kernels(tmp_path, rows):
    """`quantkit dashboard --indicators F.py` sets QUANTKIT_INDICATORS for every kernel."""
    from quantkit.analytics import load_indicators, registry
    from quantkit.errors import ConfigError

    lab = tmp_path / "my_indicators.py"
    lab.write_text("import quantkit\n\n"
                   "@quantkit.indicator(window=5)\n"
                   "def close_sma(bars, window=5):\n"
                   "    return bars['close'].rolling(window).mean()\n")
    path = write_store(tmp_path / "ticks.db", rows)
    try:
        app = Dashboard.from_env({"QUANTKIT_DB": str(path), "QUANTKIT_DASHBOARD_READONLY": "1",
                                  "QUANTKIT_INDICATORS": str(lab)}, autostart=False)
        assert "close_sma" in app.controls["overlays"].options
        app.refresh()
        app.controls["overlays"].value = ("close_sma",)
        drawn = trace(app, "ind-close_sma-y")
        bars = resample_ohlcv(app._store.ticks("BTCUSDT"), "1s").iloc[-app.max_bars:]
        np.testing.assert_allclose(drawn.y, bars["close"].rolling(5).mean(), rtol=1e-12)
        broken = tmp_path / "broken.py"
        broken.write_text("raise RuntimeError('typo in my indicator')\n")
        with pytest.raises(ConfigError, match="broken.py failed: RuntimeError: typo"):
            load_indicators([broken])
        with pytest.raises(ConfigError, match="no file"):
            load_indicators([tmp_path / "missing.py"])
    finally:
        registry.unregister("close_sma")
