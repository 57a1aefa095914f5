"""Execute the research notebooks headless against a store of real recorded Binance trades.

Each notebook runs as committed (kernel ``python3``, cwd ``notebooks/``), plus one appended
cell that reports the kernel's state as JSON; the assertions compare it with values computed
here independently (pandas, statsmodels).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from statsmodels.tsa.stattools import coint

from quantkit.analytics import align_bars, resample_ohlcv, rsi
from quantkit.storage import TickStore
from research_data import build_fixture_db

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
RESEARCH_NOTEBOOKS = ["explore.ipynb", "indicator_lab.ipynb"]


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory) -> Path:
    return build_fixture_db(tmp_path_factory.mktemp("nb") / "fixture.db")


def run_notebook(name: str, check: str) -> tuple[nbformat.NotebookNode, dict]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(check))
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return nb, json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("name", RESEARCH_NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


EXPLORE_CHECK = """
import json
s = diag.summary()
fig = explorer.figure
state = {"bars": s["bars"], "beta_ols": s["beta_ols"], "coint_pvalue": s["coint_pvalue"],
         "half_life_bars": s["half_life_bars"],
         "traces": [t.name for t in fig.data],
         "zscore_sum": float(np.nansum(fig.data[7].y)), "points": len(fig.data[0].x),
         "title": fig.layout.title.text}
explorer.controls["freq"].value = "5s"
state["points_5s"] = len(fig.data[0].x)
explorer.controls["window"].value = 500
state["errors"], state["status"] = explorer.errors, explorer.status.value
state["points_after_error"] = len(fig.data[0].x)
print(json.dumps(state))
"""


def test_explore_notebook(fixture_db, monkeypatch):
    monkeypatch.setenv("QUANTKIT_DB", str(fixture_db))
    nb, state = run_notebook("explore.ipynb", "import numpy as np\n" + EXPLORE_CHECK)
    with TickStore(fixture_db) as store:
        eth, btc = align_bars(resample_ohlcv(store.ticks("ETHUSDT"), "1s"),
                              resample_ohlcv(store.ticks("BTCUSDT"), "1s"))
        eth5, _ = align_bars(resample_ohlcv(store.ticks("ETHUSDT"), "5s"),
                             resample_ohlcv(store.ticks("BTCUSDT"), "5s"))
    y, x = eth["close"], btc["close"]
    beta = np.polyfit(x.to_numpy(), y.to_numpy(), 1)[0]
    assert state["bars"] == len(y) == state["points"] == 343
    assert state["beta_ols"] == pytest.approx(beta, rel=1e-9)
    assert state["coint_pvalue"] == pytest.approx(coint(y, x, trend="c", autolag="aic")[1],
                                                  rel=1e-9)
    resid = y - beta * x
    b = np.polyfit(resid.shift(1).dropna(), resid.diff().dropna(), 1)[0]
    assert state["half_life_bars"] == pytest.approx(-np.log(2) / np.log(1 + b), rel=1e-6)
    assert state["traces"][:2] == ["ETHUSDT (rebased to 100)", "BTCUSDT (rebased to 100)"]
    assert "z-score" in state["traces"] and "cointegration p-value" in state["traces"]
    assert np.isfinite(state["zscore_sum"]) and state["zscore_sum"] != 0
    assert "Engle-Granger p = " in state["title"]
    assert state["points_5s"] == len(eth5)
    assert state["errors"] == 1 and "longer than the data" in state["status"]
    assert state["points_after_error"] == len(eth5)  # the last good figure stays up
    # The tutorial's own outputs: the summary and a figure were shown.
    shown = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("beta_ols" in str(o.get("data", {}).get("text/plain", "")) for o in shown)


LAB_CHECK = """
import json
state = {"names": quantkit.analytics.registry.names(), "comparison": comparison,
         "mine_sum": float(mine.sum()), "mine_count": int(mine.count()),
         "refreshes": chart.refreshes, "live_bars": len(chart.bars),
         "drawing": list(chart.values), "traces": [t.name for t in chart.figure.data],
         "last_error": chart.last_error, "feed": feed.status()["state"],
         "live_rows": feed.store.count(SYMBOL), "origin": feed.store.meta().get("origin")}
chart.stop(); feed.stop(); exchange.stop()
print(json.dumps(state))
"""


def test_indicator_lab_notebook(fixture_db, monkeypatch):
    monkeypatch.setenv("QUANTKIT_DB", str(fixture_db))
    monkeypatch.setenv("QUANTKIT_LIVE", "local")
    _, state = run_notebook("indicator_lab.ipynb", LAB_CHECK)
    with TickStore(fixture_db) as store:
        close = resample_ohlcv(store.ticks("BTCUSDT"), "1s")["close"]
    change = close.diff()  # NaN on the first bar: the first full window starts one bar later
    gain = np.maximum(change, 0.0).rolling(14).mean()
    loss = np.maximum(-change, 0.0).rolling(14).mean()
    cutler = 100 - 100 / (1 + gain / loss)
    assert state["mine_count"] == cutler.count()
    assert state["mine_sum"] == pytest.approx(cutler.sum(), rel=1e-9)
    assert {"cutler_rsi", "rsi", "bollinger"} <= set(state["names"])
    both = pd.concat([cutler, rsi(close, 14)], axis=1).dropna()
    assert state["comparison"]["rows"] == len(both)
    assert state["comparison"]["corr"] == pytest.approx(both.corr().iloc[0, 1], rel=1e-9)
    assert state["comparison"]["corr"] > 0.8  # the two RSIs tell the same story
    # The live chart ran against the local exchange, with the new indicator on it.
    assert state["feed"] == "live" and state["origin"] == "simulated"
    assert state["live_rows"] > 0 and state["refreshes"] >= 2 and state["live_bars"] >= 1
    assert state["last_error"] is None
    assert "cutler_rsi" in state["drawing"] and "cutler_rsi" in state["traces"]


def test_live_chart_follows_the_store_and_stays_bounded(tmp_path, binance_data):
    from quantkit.research import LiveChart
    from quantkit.storage import TickWriter
    from quantkit.wire import Trade
    from research_data import recorded

    trades = [Trade("BTCUSDT", d["t"], d["T"], float(d["p"]), float(d["q"]), d["t"], d["t"],
                    d["m"], None) for d in recorded("BTCUSDT", binance_data)]
    db = tmp_path / "live.db"
    with TickWriter(db) as writer:
        writer.claim(origin="binance", stream="trade", symbols=["BTCUSDT"])
        writer.insert(trades[:5000])
        chart = LiveChart(db, "BTCUSDT", indicators=["bollinger"], freq="1s", max_bars=60)
        assert chart.refresh() and not chart.refresh()  # nothing new the second time
        first_bars = len(chart.bars)
        writer.insert(trades[5000:])
        assert chart.refresh()
    with TickStore(db) as store:
        full = resample_ohlcv(store.ticks("BTCUSDT"), "1s")
    assert first_bars <= 60 and len(chart.bars) == 60
    pd.testing.assert_frame_equal(chart.bars, full.tail(60))
    upper = chart.values["bollinger upper"]
    assert upper.count() == 60 - 19
    assert [t.name for t in chart.figure.data][:2] == ["BTCUSDT close", "bollinger middle"]
    np.testing.assert_array_equal(chart.figure.data[0].y, full["close"].tail(60).to_numpy())


def test_rolling_cointegration_matches_statsmodels_on_its_windows(fixture_db):
    from quantkit.research import load_pair, rolling_cointegration

    pair = load_pair(fixture_db, "ETHUSDT", "BTCUSDT", freq="1s")
    y, x = pair.y_bars["close"], pair.x_bars["close"]
    p = rolling_cointegration(y, x, 60)
    tested = np.flatnonzero(p.notna().to_numpy())
    assert tested[-1] == len(y) - 1 and np.all(np.diff(tested) == 12)  # every window // 5 bars
    for end in tested[[0, len(tested) // 2, -1]]:
        window = slice(end - 59, end + 1)
        want = coint(y.iloc[window], x.iloc[window], trend="c", autolag="aic")[1]
        assert p.iloc[end] == pytest.approx(want, rel=1e-12)


def test_compare_indicators_and_live_chart_guards(fixture_db):
    from quantkit.errors import DataError, QuantkitError
    from quantkit.research import LiveChart, compare_indicators

    idx = pd.date_range("2024-08-08", periods=5, freq="1s", tz="UTC")
    a = pd.Series([np.nan, 80.0, 50.0, 20.0, 60.0], index=idx)
    b = pd.Series([10.0, 75.0, 65.0, 40.0, 60.0], index=idx)
    got = compare_indicators(a, b)
    assert got["rows"] == 4 and got["max_abs_diff"] == 20.0
    assert got["mean_abs_diff"] == pytest.approx((5 + 15 + 20 + 0) / 4)
    assert got["zone_agreement"] == 0.75  # 80/75 over, 50/65 between, 20/40 differ, 60/60
    with pytest.raises(DataError, match="fewer than 2 rows"):
        compare_indicators(a.iloc[:2], b.iloc[:2])
    with pytest.raises(DataError, match="unknown indicator 'nope'"):
        LiveChart("unused.db", "BTCUSDT", indicators=["nope"])
    chart = LiveChart(fixture_db, "BTCUSDT", indicators=["rsi"])
    with pytest.raises(QuantkitError, match="needs a running event loop"):
        chart.start()  # outside a kernel there is no loop to run on
