"""Import of data.binance.vision archives, on archives built from real recorded Binance trades."""
from __future__ import annotations

import io
import random
import sys
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantkit.archive import import_archives, parse_archive_name, read_archive
from quantkit.cli import main
from quantkit.errors import DataError, StorageError
from quantkit.storage import TickStore, TickWriter
from research_data import (
    AGG_HEADER,
    TRADES_HEADER,
    agg_lines,
    build_archives,
    recorded,
    trades_lines,
    write_csv,
    write_zip,
)

BTC_TRADES = 21_313  # lines of the BTCUSDT @trade recording (SOURCES.md)
ETH_TRADES = 14_076


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    return build_archives(tmp_path_factory.mktemp("archives"))


def dump(db: Path) -> list[str]:
    """The whole content of a store as SQL text: equal dumps mean an unchanged store."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_file_name_gives_symbol_kind_and_period():
    daily = parse_archive_name("/x/BTCUSDT-aggTrades-2024-08-08.zip")
    monthly = parse_archive_name("ETHUSDT-trades-2024-08.csv")
    assert (daily.symbol, daily.kind, daily.period, daily.stream) == (
        "BTCUSDT", "aggTrades", "2024-08-08", "aggTrade")
    assert (monthly.symbol, monthly.kind, monthly.period, monthly.stream) == (
        "ETHUSDT", "trades", "2024-08", "trade")
    with pytest.raises(DataError, match="BTCUSDT-aggTrades-2024-08-08.zip"):
        parse_archive_name("btc-trades.zip")


def test_trades_zip_with_header_and_checksum(archives, tmp_path, binance_data):
    db = tmp_path / "t.db"
    report = import_archives([archives["btc_trades_zip"]], db, progress=False)
    assert (report.rows_read, report.rows_new) == (BTC_TRADES, BTC_TRADES)
    assert report.files[0].symbol == "BTCUSDT" and report.files[0].stream == "trade"
    with TickStore(db) as store:
        ticks = store.ticks("BTCUSDT")
        assert store.meta()["origin"] == "binance"
        assert store.meta()["stream:BTCUSDT"] == "trade"
        events = store.events()
    payloads = recorded("BTCUSDT", binance_data)
    assert len(ticks) == BTC_TRADES
    assert ticks["id"].tolist() == [d["t"] for d in payloads]
    assert (ticks["first_id"] == ticks["id"]).all() and (ticks["last_id"] == ticks["id"]).all()
    assert ticks["price"].tolist() == [float(d["p"]) for d in payloads]
    assert ticks["qty"].tolist() == [float(d["q"]) for d in payloads]
    assert ticks["is_buyer_maker"].tolist() == [d["m"] for d in payloads]
    assert ticks.index.as_unit("ms").asi8.tolist() == [d["T"] for d in payloads]
    assert events["kind"].tolist() == ["import"]
    assert f"{BTC_TRADES} rows read, {BTC_TRADES} new" in events["detail"].iloc[0]


def test_bare_csv_without_header_both_kinds(archives, tmp_path, binance_data):
    eth = recorded("ETHUSDT", binance_data)
    report = import_archives([archives["eth_trades_csv"]], tmp_path / "t.db", progress=False)
    assert (report.rows_read, report.rows_new) == (ETH_TRADES, ETH_TRADES)
    report = import_archives([archives["eth_agg_csv"]], tmp_path / "a.db", progress=False)
    n_agg = len(agg_lines(eth))
    assert (report.rows_read, report.rows_new) == (n_agg, n_agg)
    with TickStore(tmp_path / "a.db") as store:
        ticks = store.ticks("ETHUSDT")
    # Every individual trade is covered exactly once by an aggregate's [first, last] range.
    assert int((ticks["last_id"] - ticks["first_id"] + 1).sum()) == ETH_TRADES
    assert ticks["first_id"].iloc[0] == eth[0]["t"] and ticks["last_id"].iloc[-1] == eth[-1]["t"]
    assert round(float(ticks["qty"].sum()), 3) == round(sum(float(d["q"]) for d in eth), 3)


def test_agg_zip_with_header(archives, tmp_path):
    report = import_archives([archives["btc_agg_zip"]], tmp_path / "a.db", progress=False)
    n_agg = len(agg_lines(recorded("BTCUSDT")))
    assert n_agg < BTC_TRADES
    assert (report.rows_read, report.rows_new) == (n_agg, n_agg)
    with TickStore(tmp_path / "a.db") as store:
        ticks = store.ticks("BTCUSDT")
        assert store.meta()["stream:BTCUSDT"] == "aggTrade"
    assert ticks["id"].tolist() == list(range(2_300_000_000, 2_300_000_000 + n_agg))
    assert int((ticks["last_id"] - ticks["first_id"] + 1).sum()) == BTC_TRADES


def _klines(binance_data: Path) -> pd.DataFrame:
    k = pd.read_csv(binance_data / "BTCUSDT-um-1m-klines-2024-08-08T2330_2024-08-09T0030.csv")
    k.index = pd.to_datetime(k["open_time"], unit="ms", utc=True)
    return k.loc["2024-08-08 23:55":"2024-08-08 23:59"]


@pytest.mark.parametrize("variant", ["btc_trades_zip", "btc_agg_zip"])
def test_one_minute_bars_reproduce_binance_klines(archives, tmp_path, binance_data, variant):
    from quantkit.analytics import resample_ohlcv

    import_archives([archives[variant]], tmp_path / "k.db", progress=False)
    with TickStore(tmp_path / "k.db") as store:
        bars = resample_ohlcv(store.ticks("BTCUSDT"), "1min")
    klines = _klines(binance_data)
    assert len(klines) == 5
    got = bars.loc[klines.index]
    for ours, theirs in [("open", "open"), ("high", "high"), ("low", "low"), ("close", "close")]:
        assert got[ours].tolist() == klines[theirs].tolist(), ours
    np.testing.assert_allclose(got["volume"], klines["volume"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["quote_volume"], klines["quote_volume"], rtol=1e-12)
    np.testing.assert_allclose(got["taker_buy_volume"], klines["taker_buy_volume"], atol=1e-9)
    assert got["trades"].astype(int).tolist() == klines["count"].tolist()


def test_reimport_is_a_no_op(archives, tmp_path):
    db = tmp_path / "t.db"
    files = [archives["btc_trades_zip"], archives["eth_trades_csv"]]
    first = import_archives(files, db, progress=False)
    with TickStore(db) as store:
        count, cursor = store.count(), store.last_cursor()
        before = store.ticks("ETHUSDT")
    again = import_archives(files, db, progress=False)
    assert first.rows_new == BTC_TRADES + ETH_TRADES
    assert (again.rows_read, again.rows_new) == (BTC_TRADES + ETH_TRADES, 0)
    assert [f.rows_new for f in again.files] == [0, 0]
    with TickStore(db) as store:
        assert (store.count(), store.last_cursor()) == (count, cursor)
        pd.testing.assert_frame_equal(store.ticks("ETHUSDT"), before)


def test_unsorted_file_is_stored_in_id_order(tmp_path, binance_data):
    lines = trades_lines(recorded("ETHUSDT", binance_data))
    random.Random(5).shuffle(lines)
    path = write_csv(tmp_path / "ETHUSDT-trades-2024-08.csv", lines, header=TRADES_HEADER)
    import_archives([path], tmp_path / "t.db", progress=False)
    with TickStore(tmp_path / "t.db") as store:
        batch = store.read_new(0)  # insertion (rowid) order
    assert batch.frame["id"].is_monotonic_increasing and len(batch.frame) == ETH_TRADES


@pytest.fixture
def store_with_btc(archives, tmp_path) -> Path:
    db = tmp_path / "s.db"
    import_archives([archives["btc_trades_zip"]], db, progress=False)
    return db


def test_truncated_zip_is_rejected_and_store_unchanged(archives, store_with_btc, tmp_path):
    bad = tmp_path / "bad" / "ETHUSDT-trades-2024-08-08.zip"
    bad.parent.mkdir()
    good = write_zip(tmp_path / "ETHUSDT-trades-2024-08-08.zip",
                     trades_lines(recorded("ETHUSDT")), header=TRADES_HEADER, checksum=False)
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before = dump(store_with_btc)
    with pytest.raises(DataError, match="truncated or damaged, download it again"):
        import_archives([bad], store_with_btc, progress=False)
    assert dump(store_with_btc) == before
    with TickStore(store_with_btc) as store:
        assert store.count() == BTC_TRADES and store.symbols() == ["BTCUSDT"]


def test_corrupt_zip_member_is_rejected_and_store_unchanged(store_with_btc, tmp_path,
                                                            monkeypatch):
    import quantkit.archive as archive_mod

    # Small batches: most rows are inserted before the CRC check at the member's end fails.
    monkeypatch.setattr(archive_mod, "_BLOCK_BYTES", 32 << 10)
    path = write_zip(tmp_path / "ETHUSDT-trades-2024-08-08.zip",
                     trades_lines(recorded("ETHUSDT")), header=TRADES_HEADER, checksum=False)
    data = bytearray(path.read_bytes())
    # Flip bytes in the middle of the deflated data: either inflate or the CRC check fails,
    # and only once most rows have been read.
    mid = len(data) // 2
    data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
    path.write_bytes(bytes(data))
    before = dump(store_with_btc)
    with pytest.raises(DataError, match="ETHUSDT-trades-2024-08-08.zip: not a readable zip "
                       r"archive \(.*\); the file is truncated or damaged"):
        import_archives([path], store_with_btc, progress=False)
    assert dump(store_with_btc) == before


def test_checksum_mismatch_is_rejected_and_store_unchanged(store_with_btc, tmp_path):
    path = write_zip(tmp_path / "ETHUSDT-trades-2024-08-08.zip",
                     trades_lines(recorded("ETHUSDT")), header=TRADES_HEADER, checksum=True)
    checksum = path.with_name(path.name + ".CHECKSUM")
    checksum.write_text("0" * 64 + f"  {path.name}\n")
    before = dump(store_with_btc)
    with pytest.raises(DataError, match="does not match .*CHECKSUM.*fetch it again"):
        import_archives([path], store_with_btc, progress=False)
    assert dump(store_with_btc) == before


def test_wrong_columns_are_rejected(tmp_path):
    # An aggTrades body under a trades name: seven columns where six are expected.
    path = write_csv(tmp_path / "ETHUSDT-trades-2024-08-08.csv",
                     agg_lines(recorded("ETHUSDT"))[:50], header=None)
    with pytest.raises(DataError, match="not a valid 6-column Binance trade CSV"):
        read_archive(path)
    # The same with Binance's header row: the header names say what is wrong.
    path = write_csv(tmp_path / "BTCUSDT-trades-2024-08-08.csv",
                     agg_lines(recorded("ETHUSDT"))[:50], header=AGG_HEADER)
    with pytest.raises(DataError, match="header 'agg_trade_id,price,.*' is not the expected "
                       "'id,price,qty,quote_qty,time,is_buyer_maker'"):
        read_archive(path)


def test_refuses_simulated_store_and_mixed_stream_kinds(archives, tmp_path):
    sim = tmp_path / "sim.db"
    with TickWriter(sim) as writer:
        writer.claim(origin="simulated", stream="aggTrade", symbols=["BTCUSDT"])
    with pytest.raises(StorageError, match="simulated"):
        import_archives([archives["btc_agg_zip"]], sim, progress=False)
    db = tmp_path / "t.db"
    import_archives([archives["btc_trades_zip"]], db, progress=False)
    with pytest.raises(StorageError, match="trade ids for BTCUSDT"):
        import_archives([archives["btc_agg_zip"]], db, progress=False)


def test_cli_import(archives, tmp_path, capsys):
    db = tmp_path / "cli.db"
    code = main(["import", str(archives["btc_agg_zip"]), str(archives["eth_agg_csv"]),
                 "--db", str(db), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "BTCUSDT-aggTrades-2024-08-08.zip: 10,447 rows read, 10,447 new" in out
    assert "total: 16,656 rows read, 16,656 new in 2 file(s)" in out
    bad = tmp_path / "BTCUSDT-trades-2024-08-08.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    assert main(["import", str(bad), "--db", str(db), "--no-progress"]) == 2
    assert "truncated or damaged" in capsys.readouterr().err


def test_failure_while_writing_rolls_the_whole_file_back(store_with_btc, archives, monkeypatch):
    import quantkit.archive as archive_mod

    flat = archive_mod._flat

    def failing(batches):
        for k, rows in enumerate(flat(batches)):
            if k == 2:  # two batches are already inserted in the open transaction
                raise OSError("disk went away")
            yield rows

    monkeypatch.setattr(archive_mod, "_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(archive_mod, "_flat", failing)
    before = dump(store_with_btc)
    with pytest.raises(OSError, match="disk went away"):
        import_archives([archives["eth_trades_csv"]], store_with_btc, progress=False)
    assert dump(store_with_btc) == before


def test_small_batches_store_the_same_rows(archives, tmp_path, monkeypatch):
    import quantkit.archive as archive_mod

    monkeypatch.setattr(archive_mod, "_BLOCK_BYTES", 32 << 10)  # ~25 batches for BTCUSDT
    report = import_archives([archives["btc_trades_zip"]], tmp_path / "b.db", progress=False)
    assert (report.rows_read, report.rows_new) == (BTC_TRADES, BTC_TRADES)
    with TickStore(tmp_path / "b.db") as store:
        ids = store.read_new(0).frame["id"]
    assert ids.is_monotonic_increasing and ids.is_unique and len(ids) == BTC_TRADES


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_when_asked(archives, tmp_path, monkeypatch):
    for progress, stream, shown in [(True, io.StringIO(), False), (True, _Terminal(), True),
                                    (False, _Terminal(), False)]:
        monkeypatch.setattr(sys, "stderr", stream)
        import_archives([archives["eth_agg_csv"]], tmp_path / "p.db", progress=progress)
        assert ("ETHUSDT-aggTrades-2024-08-08.csv" in stream.getvalue()) is shown
        assert ("6.21k/" in stream.getvalue() or "6.21krows" in stream.getvalue()) is shown
