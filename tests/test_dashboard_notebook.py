"""notebooks/dashboard.ipynb runs headless (nbclient) on a store of real recorded trades."""
from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from conftest import ROOT
from nbclient import NotebookClient
from test_dashboard import recorded_rows, write_store

from quantkit.analytics import resample_ohlcv
from quantkit.dashboard.figures import epoch_ms
from quantkit.storage import TickStore

NOTEBOOK = ROOT / "notebooks" / "dashboard.ipynb"

PROBE = """
import asyncio, json
await asyncio.sleep(1.6)  # the live loop runs on this kernel's event loop meanwhile
data = {t.meta: {k: [float(v) for v in getattr(t, k)] for k in ("x", "y", "close")
                 if getattr(t, k, None) is not None}
        for t in app.figure.data}
print(json.dumps({"data": data, "refreshes": app.refreshes, "errors": app.errors,
                  "last_error": app.last_error, "status": app.status_bar.value,
                  "summary": app.summary.value, "rows_read": app.rows_read}))
"""


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[-1].source.strip() == "app.container"  # it only builds and shows the app


@pytest.mark.slow
def test_notebook_runs_headless_with_live_figures(tmp_path, monkeypatch):
    db = write_store(tmp_path / "recorded.db", recorded_rows())
    monkeypatch.setenv("QUANTKIT_DB", str(db))
    monkeypatch.setenv("QUANTKIT_DASHBOARD_READONLY", "1")
    monkeypatch.setenv("QUANTKIT_SYMBOLS", "BTCUSDT,ETHUSDT")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    shown = nb.cells[-2].outputs
    assert shown[0]["output_type"] == "execute_result"
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    out = json.loads(nb.cells[-1].outputs[0]["text"])
    assert out["errors"] == 0, out["last_error"]
    assert out["refreshes"] >= 3  # the asyncio task kept refreshing while the cell slept
    data = out["data"]
    with TickStore(db) as store:
        for leg, sym in (("y", "BTCUSDT"), ("x", "ETHUSDT")):
            bars = resample_ohlcv(store.ticks(sym), "1s").iloc[-600:]
            x = data[f"{leg}-candles"]["x"] + data[f"{leg}-open-candle"]["x"]
            close = data[f"{leg}-candles"]["close"] + data[f"{leg}-open-candle"]["close"]
            np.testing.assert_array_equal(x, epoch_ms(bars.index))
            np.testing.assert_array_equal(close, bars["close"])
            assert f">{bars['close'].iloc[-1]:,.2f}<" in out["summary"]  # last price card
    z = np.array(data["zscore"]["y"])
    assert len(z) >= 330 and np.isfinite(z[-200:]).all() and np.nanmax(np.abs(z)) < 10
    corr = np.array(data["corr"]["y"])
    assert np.nanmin(corr) >= -1 and np.nanmax(corr) <= 1
    assert "last trade 00:00:00.029 UTC" in out["status"]
