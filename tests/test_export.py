"""Export of ticks and bars to CSV/Parquet, from a store of real imported Binance trades."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import quantkit
from quantkit.analytics import resample_ohlcv
from quantkit.archive import import_archives
from quantkit.cli import main
from quantkit.errors import DataError
from quantkit.export import export_bars, export_ticks, read_metadata
from quantkit.storage import TickStore
from research_data import build_archives


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    files = build_archives(folder / "archives")
    path = folder / "store.db"
    import_archives([files["btc_trades_zip"], files["eth_trades_csv"]], path, progress=False)
    return path


def test_ticks_to_parquet_round_trip_with_metadata(db, tmp_path):
    result = export_ticks(db, "btcusdt", tmp_path / "btc.parquet")
    back = pd.read_parquet(tmp_path / "btc.parquet")
    with TickStore(db) as store:
        expected = store.ticks("BTCUSDT")
    pd.testing.assert_frame_equal(back, expected)
    assert result.rows == 21_313
    meta = read_metadata(tmp_path / "btc.parquet")
    assert meta == result.metadata
    assert meta["kind"] == "ticks" and meta["symbol"] == "BTCUSDT" and meta["freq"] is None
    assert (meta["start"], meta["end"]) == (None, None)
    assert meta["first"] == "2024-08-08T23:54:16.322000+00:00"
    assert meta["last"] == "2024-08-08T23:59:59.643000+00:00"
    assert (meta["origin"], meta["stream"]) == ("binance", "trade")
    assert meta["source_db"] == str(db.resolve())
    assert meta["quantkit_version"] == quantkit.__version__
    assert pd.Timestamp(meta["created"]).tzinfo is not None


def test_ticks_of_a_range_to_csv_with_sidecar(db, tmp_path):
    out = tmp_path / "eth.csv"
    result = export_ticks(db, "ETHUSDT", out, start="2024-08-08 23:56", end="2024-08-08 23:57")
    with TickStore(db) as store:
        expected = store.ticks("ETHUSDT", "2024-08-08 23:56", "2024-08-08 23:57")
    back = pd.read_csv(out, index_col="time")
    back.index = pd.to_datetime(back.index, utc=True).as_unit("ms")
    assert result.rows == len(expected) == len(back) > 1000
    pd.testing.assert_frame_equal(back, expected, check_index_type=False)
    meta = json.loads((tmp_path / "eth.csv.json").read_text())
    assert meta == read_metadata(out) == result.metadata
    assert meta["start"] == "2024-08-08T23:56:00+00:00"
    assert meta["end"] == "2024-08-08T23:57:00+00:00"
    assert meta["columns"] == ["time", "price", "qty", "is_buyer_maker", "id", "first_id",
                               "last_id"]


def test_bars_match_resample_and_binance_klines(db, tmp_path, binance_data):
    result = export_bars(db, "BTCUSDT", tmp_path / "bars.parquet", freq="1min",
                         start="2024-08-08 23:55", end="2024-08-09 00:00")
    bars = pd.read_parquet(tmp_path / "bars.parquet")
    with TickStore(db) as store:
        expected = resample_ohlcv(store.ticks("BTCUSDT", "2024-08-08 23:55",
                                              "2024-08-09 00:00"), "1min")
    pd.testing.assert_frame_equal(bars, expected)
    assert result.rows == 5 and result.metadata["freq"] == "1min"
    klines = pd.read_csv(binance_data / "BTCUSDT-um-1m-klines-2024-08-08T2330_2024-08-09T0030.csv")
    klines = klines[klines["open_time"].between(1723161300000, 1723161540000)]
    assert bars["close"].tolist() == klines["close"].tolist()
    assert bars["trades"].tolist() == klines["count"].tolist()


def test_errors_say_what_to_do(db, tmp_path):
    with pytest.raises(DataError, match=r"must end in \.csv or \.parquet"):
        export_ticks(db, "BTCUSDT", tmp_path / "x.xlsx")
    with pytest.raises(DataError, match="holds 2024-08-08 23:54:16.322"):
        export_ticks(db, "BTCUSDT", tmp_path / "x.csv", start="2025-01-01")
    with pytest.raises(DataError, match="freq: unknown bar length '1m'"):
        export_bars(db, "BTCUSDT", tmp_path / "x.csv", freq="1m")
    assert not list(tmp_path.iterdir())


def test_cli_export(db, tmp_path, capsys):
    out = tmp_path / "bars.csv"
    code = main(["export", "BTCUSDT", "--db", str(db), "--out", str(out), "--freq", "1min",
                 "--start", "2024-08-08 23:55", "--end", "2024-08-09"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "wrote 5 1min bars of BTCUSDT (2024-08-08T23:55:00+00:00 .. " in printed
    assert len(pd.read_csv(out)) == 5 and read_metadata(out)["freq"] == "1min"
    code = main(["export", "BTCUSDT", "--db", str(db), "--out", str(tmp_path / "t.parquet")])
    assert code == 0 and "wrote 21,313 trades of BTCUSDT" in capsys.readouterr().out
    assert main(["export", "BTCUSD", "--db", str(db), "--out", str(tmp_path / "n.csv")]) == 2
    assert "Did you mean 'BTCUSDT'" in capsys.readouterr().err
